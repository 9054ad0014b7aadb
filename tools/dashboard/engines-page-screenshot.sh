#!/usr/bin/env bash
# The engines page as an admin sees it: builds and starts the README's silo (the bundled tiny model, CPU) on free ports
# with a throw-away data directory, puts four streaming requests on its engine, takes a screenshot of
# http://127.0.0.1:PORT/engines with headless Chromium while they run, and stops the silo.
#   tools/dashboard/engines-page-screenshot.sh [OUT.png]      (default: engines-page.png)
# Needs Debian's chromium (apt-get install chromium) and curl. The test that checks the page's rendered content is
# ServingStackTests.The_engines_page_shows_each_engine_as_a_browser_renders_it.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-engines-page.png}")
chromium=$(command -v chromium || command -v chromium-browser) \
  || { echo "error: chromium is not installed (apt-get install chromium)" >&2; exit 2; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http=$(free_port); silo=$(free_port); gateway=$(free_port)
data=$(mktemp -d)
dotnet build silos/OrleansMixtral.Silo -c Release -v q -nologo >/dev/null
dotnet silos/OrleansMixtral.Silo/bin/Release/net10.0/OrleansMixtral.Silo.dll --DataDirectory "$data" \
  --SiloPort "$silo" --PrimarySiloPort "$silo" --GatewayPort "$gateway" --urls "http://127.0.0.1:$http" >"$data/silo.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 240); do
  grep -q ' ready:' "$data/silo.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/silo.log" >&2; exit 1; }
  sleep 0.5
done
grep -q ' ready:' "$data/silo.log" || { echo "error: the silo was not ready within 2 minutes" >&2; exit 1; }
page=$(grep -o 'engines: http[^ ]*' "$data/silo.log" | head -1 | cut -d' ' -f2)
api=${page%/engines}
# a first request gives the TTFT columns a value; four long ones are running when the screenshot is taken
curl -sf "$api/v1/completions" -H 'Content-Type: application/json' -d '{"model": "tiny-mixtral", "prompt": "The old city", "max_tokens": 8}' >/dev/null
for i in 1 2 3 4; do
  curl -sf "$api/v1/completions" -H 'Content-Type: application/json' \
    -d "{\"model\": \"tiny-mixtral\", \"prompt\": \"Request $i: the history of the city\", \"max_tokens\": 400, \"ignore_eos\": true}" >/dev/null &
done
sleep 1.5
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,300 --screenshot="$out" "$page" 2>/dev/null
echo "$out ($page)"
