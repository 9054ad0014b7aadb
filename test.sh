#!/usr/bin/env bash
# The whole test suite: builds in Release and runs every test project, then prints one summary line
# "N passed, N failed, N skipped". Needs the .NET 10 SDK and Node.js/npm (the tokenizer parity tests run the
# reference JS tokenizer, installed here with npm ci). Exit status is non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")"

if command -v npm >/dev/null && [ ! -d tools/tokenizer/node_modules ]; then
  (cd tools/tokenizer && npm ci --no-audit --no-fund --loglevel=error) || echo "warning: npm ci failed; JS parity tests will be skipped" >&2
fi

# The multi-process cluster test runs Debian's redis-server (it starts its own on a free loopback port): install it.
if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -q redis-server || { apt-get update -q && apt-get install -y -q redis-server; }; } >/dev/null 2>&1 \
    || echo "warning: could not install redis-server; the multi-process cluster test will be skipped" >&2
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
if [ $status -ne 0 ] && [ $failed -eq 0 ]; then failed=1; fi # a build or runner failure counts as a failure
echo "$passed passed, $failed failed, $skipped skipped"
exit $status
