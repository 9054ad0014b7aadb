#!/usr/bin/env bash
# The whole test suite: builds in Release and runs every test project, then prints one summary line
# "N passed, N failed, N skipped". Needs the .NET 10 SDK and Node.js/npm (the tokenizer parity tests run the
# reference JS tokenizer, installed here with npm ci), and installs (as root, with apt-get) Debian's redis-server and
# postgresql for the multi-process cluster tests, which start their own servers on free loopback ports, and chromium
# (the engines page is checked as headless Chromium renders it). The tests
# themselves install nothing: what is missing skips them, or fails them when ORLEANSMIXTRAL_CI=1 (.ci/run sets it; only
# the GPU tests may skip there). Exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")"

if command -v npm >/dev/null && [ ! -f tools/tokenizer/node_modules/mistral-tokenizer-js/mistral-tokenizer.js ]; then
  (cd tools/tokenizer && npm ci --no-audit --no-fund --loglevel=error) || echo "warning: npm ci failed; the JS parity tests cannot run" >&2
fi

# Debian packages the multi-process tests run: redis-server, PostgreSQL's server (initdb, pg_ctl, postgres), chromium.
missing=()
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# headless Chromium: the engines page is checked as a browser renders it
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q "${missing[@]}" || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }; } >/dev/null 2>&1 \
    || echo "warning: could not install ${missing[*]}; the tests that need it cannot run" >&2
fi

results=artifacts/test-results
rm -rf "$results"
dotnet test OrleansMixtral.sln -c Release --logger "trx" --results-directory "$results" "$@"
status=$?

passed=0; failed=0; skipped=0
shopt -s nullglob
for f in "$results"/*.trx; do
  counters=$(grep -o '<Counters [^>]*>' "$f")
  get() { echo "$counters" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]*'; }
  total=$(get total); executed=$(get executed)
  passed=$((passed + $(get passed)))
  failed=$((failed + $(get failed) + $(get error) + $(get timeout) + $(get aborted)))
  skipped=$((skipped + total - executed))
done
# Why tests were skipped (the console logger names them without their reasons): one line per reason, with the classes.
if [ $skipped -gt 0 ]; then
  echo "skipped tests, by reason:"
  for f in "$results"/*.trx; do
    awk 'BEGIN { RS = "</UnitTestResult>" }
         /outcome="NotExecuted"/ {
           name = $0; sub(/.*testName="/, "", name); sub(/".*/, "", name)
           n = split(name, parts, "."); cls = (n >= 2) ? parts[n - 1] : name
           reason = "(no reason given)"
           if (match($0, /<Message>[^<]*<\/Message>/)) reason = substr($0, RSTART + 9, RLENGTH - 19)
           print reason "\t" cls
         }' "$f"
  done | sed -e 's/&lt;/</g' -e 's/&gt;/>/g' -e 's/&quot;/"/g' -e "s/&apos;/'/g" -e 's/&amp;/\&/g' | sort | awk -F'\t' '
    { count[$1]++; if (!seen[$1 FS $2]++) classes[$1] = classes[$1] (classes[$1] == "" ? "" : ", ") $2 }
    END { for (r in count) printf "  %d: %s [%s]\n", count[r], r, classes[r] }' | sort -t: -k1 -rn
fi
if [ $status -ne 0 ] && [ $failed -eq 0 ]; then failed=1; fi # a build or runner failure counts as a failure
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
