#!/usr/bin/env bash
# One silo per GPU on a 2-GPU host (issue 15), measured in one run. On the GPU machine (device tool, kind
# nvidia-h200-x2), after tools/gpu/pack-multi-gpu.sh here, with carry [".device"]:
#   bash tools/gpu/device-multi-gpu.sh
# Without a GPU, the same steps with CPU silos, the tiny model and short runs, from this checkout's Release build
# (--packed: from .device's programs on its runtime, as on the GPU machine):
#   bash tools/gpu/device-multi-gpu.sh --cpu [--packed]
# Every figure is through the cluster (ClusterBench's conversation mode, an Orleans client of the silos' gateways), the
# silos started by the host launcher on one data directory (SQLite conversations, one cluster id):
#  (a) C=128 clients (enough to fill both engines) of single-turn conversations, 512 prompt + 128 output tokens, through 1 silo (CUDA_VISIBLE_DEVICES=0:
#      the launcher sees one GPU), then through 2 (one per GPU): aggregate output tok/s, their ratio, TTFT p50/p99;
#  (b) C_B=64 clients of 4-turn conversations on the 2 silos: the share of follow-up turns that run on the silo holding
#      their prefix (KV affinity), and how much of the history the prefix cache gave back;
#  (c) the same load with silo 1 killed (kill -9) mid-run: every conversation's stored history against what its client
#      saw, the turns after the kill (on silo 0), the longest wait of a client for a reply (retrying a failed turn).
# JSON under $OUT (a-1-silo.json, a-2-silos.json, b-affinity.json, c-kill.json, summary.json; the launchers' status
# files and logs); the table last. About 3.5 minutes on the GPU machine (2026-11-29): two loads of the synthetic 8x7B
# (42 s, then 7 s) and four runs of about 40 s. Settings by environment: CONCURRENCY (clients of (a)),
# CONCURRENCY_B (clients of (b) and (c)),
# DURATION, TURNS, KILL_AT, PROMPT_TOKENS, OUTPUT_TOKENS, OUTPUT_TOKENS_B; SILO_PORT, GATEWAY_PORT, DASHBOARD_PORT.
set -uo pipefail
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
cpu=0; packed=
for a in "$@"; do
  case "$a" in
    --cpu) cpu=1 ;;
    --packed) packed=1 ;;
    *) echo "usage: $0 [--cpu [--packed]]" >&2; exit 2 ;;
  esac
done
packed=${packed:-$((1 - cpu))}

if [ $cpu = 1 ]; then
  # two cores and the tiny model: the same steps, figures of no interest
  model=models/tiny-mixtral; backend=cpu
  : "${CONCURRENCY:=8}" "${DURATION:=10}" "${TURNS:=4}" "${KILL_AT:=5}" "${PROMPT_TOKENS:=64}" "${OUTPUT_TOKENS:=16}" "${OUTPUT_TOKENS_B:=16}"
  : "${SILO_PORT:=41111}" "${GATEWAY_PORT:=42000}" "${DASHBOARD_PORT:=43000}"
  follow_up_words=8; ready_timeout=120
  silo_settings=(--Mixtral:KvCacheMegabytes 32)
  one_silo=(--backend cpu --silos 1); two_silos=(--backend cpu --silos 2)
  : "${OUT:=artifacts/multi-gpu-cpu}"
else
  model=synthetic:mixtral-8x7b; backend=cuda
  : "${CONCURRENCY:=128}" "${CONCURRENCY_B:=64}" "${DURATION:=30}" "${TURNS:=4}" "${KILL_AT:=12}" "${PROMPT_TOKENS:=512}" "${OUTPUT_TOKENS:=128}" "${OUTPUT_TOKENS_B:=64}"
  : "${SILO_PORT:=11111}" "${GATEWAY_PORT:=30000}" "${DASHBOARD_PORT:=5000}"
  follow_up_words=24; ready_timeout=420
  silo_settings=()
  # the launcher starts a silo per GPU it sees: CUDA_VISIBLE_DEVICES=0 makes it one
  one_silo=(--backend cuda); two_silos=(--backend cuda --silos 2)
  : "${OUT:?the device tool sets OUT}"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d /tmp/multi-gpu.XXXXXX)

if [ "$packed" = 1 ]; then
  [ -f .device/apps.tar.xz ] && [ -f .device/dotnet-rt.tar.xz ] || { echo "error: no .device/apps.tar.xz: run tools/gpu/pack-multi-gpu.sh first" >&2; exit 1; }
  mkdir -p "$work/dn" .run && tar -C "$work/dn" -xJf .device/dotnet-rt.tar.xz && rm -rf .run/app && tar -C .run -xJf .device/apps.tar.xz || exit 1
  export DOTNET_ROOT=$work/dn
  dotnet=$work/dn/dotnet
  prog() { echo ".run/app/$1/$1.dll"; }
else
  dotnet=dotnet
  prog() { if [ -d "silos/$1" ]; then echo "silos/$1/bin/Release/net10.0/$1.dll"; else echo "src/$1/bin/Release/net10.0/$1.dll"; fi; }
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1
for p in OrleansMixtral.HostLauncher OrleansMixtral.Silo OrleansMixtral.ClusterBench; do
  [ -f "$(prog $p)" ] || { echo "error: $(prog $p) not found (build in Release, or pack)" >&2; exit 1; }
done

if [ $cpu = 1 ]; then echo "cpu mode: $(nproc) cores, no GPU" > "$OUT/gpu.txt"
else nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt"; fi
git rev-parse --short HEAD >> "$OUT/gpu.txt" 2>/dev/null
cat "$OUT/gpu.txt"

launcher_pid=
# The launcher stops its silos on SIGTERM; whatever happens to this script, it gets one.
cleanup() {
  [ -n "$launcher_pid" ] && kill -0 "$launcher_pid" 2>/dev/null && stop_host
  rm -rf "$work"
}
trap cleanup EXIT

json() { python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

# start_host NAME LAUNCHER-ARGS...: a host of silos on $work/data; waits for its status file (written when all are ready)
start_host() {
  local name=$1; shift
  status=$OUT/$name-status.json
  rm -f "$status"
  $dotnet "$(prog OrleansMixtral.HostLauncher)" "$@" --model "$model" --data-directory "$work/data" --no-api \
    --silo-port "$SILO_PORT" --gateway-port "$GATEWAY_PORT" --dashboard-port "$DASHBOARD_PORT" \
    --ready-timeout "$ready_timeout" --status-file "$status" -- "${silo_settings[@]}" > "$OUT/$name.log" 2>&1 &
  launcher_pid=$!
  local started=$SECONDS
  until [ -f "$status" ]; do
    if ! kill -0 $launcher_pid 2>/dev/null; then
      echo "error: the launcher ($name) exited before its silos were ready:"; grep -v '^\[silo' "$OUT/$name.log" | tail -20
      launcher_pid=; return 1
    fi
    sleep 1
  done
  sleep 0.5 # the status file is written whole before the ready line; give the line time to follow
  gateways=$(json "$status" "d['clientGateways']"); cluster_id=$(json "$status" "d['clusterId']")
  echo "== $name ready in $((SECONDS - started)) s: $(json "$status" "'; '.join(f\"silo {s['index']} pid {s['processId']} on {s['device']}\" for s in d['silos'])")"
}

stop_host() {
  kill -TERM "$launcher_pid" 2>/dev/null
  for _ in $(seq 1 90); do kill -0 "$launcher_pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$launcher_pid" 2>/dev/null && { echo "warning: the launcher did not stop in 90 s; killing it"; kill -KILL "$launcher_pid"; }
  wait "$launcher_pid" 2>/dev/null
  [ -n "${1:-}" ] && tail -1 "$OUT/$1.log"
  launcher_pid=
}

# bench FILE LABEL ARGS...: ClusterBench's conversation mode against the running host
bench() {
  local file=$1 label=$2; shift 2
  echo "== $label"
  timeout $((DURATION + 240)) $dotnet "$(prog OrleansMixtral.ClusterBench)" --cluster "$gateways" --cluster-id "$cluster_id" --model "$model" \
    --concurrency "${BENCH_CONCURRENCY:-$CONCURRENCY}" --duration "$DURATION" --prompt-tokens "$PROMPT_TOKENS" --follow-up-words "$follow_up_words" \
    --json "$OUT/$file" --label "$label" "$@" > "$OUT/${file%.json}.txt" 2>&1
  echo "   exit $?"
  grep -E '^\| [0-9]|^per silo|^kill|^history broken|^  [0-9]+×' "$OUT/${file%.json}.txt" | cut -c1-400
}

# (a) one silo
if [ $cpu = 1 ]; then start_host host-1-silo "${one_silo[@]}" || exit 1
else CUDA_VISIBLE_DEVICES=0 start_host host-1-silo "${one_silo[@]}" || exit 1; fi
bench a-1-silo.json "a: 1 silo" --turns 1 --output-tokens "$OUTPUT_TOKENS"
stop_host host-1-silo

# (a) two silos, then (b) and (c) on them
start_host host-2-silos "${two_silos[@]}" || exit 1
silo1_pid=$(json "$status" "d['silos'][1]['processId']")
bench a-2-silos.json "a: 2 silos" --turns 1 --output-tokens "$OUTPUT_TOKENS"
BENCH_CONCURRENCY=${CONCURRENCY_B:-$CONCURRENCY} bench b-affinity.json "b: $TURNS-turn conversations, 2 silos" --turns "$TURNS" --output-tokens "$OUTPUT_TOKENS_B" --warmup 0
BENCH_CONCURRENCY=${CONCURRENCY_B:-$CONCURRENCY} bench c-kill.json "c: kill -9 of silo 1 at ${KILL_AT} s" --turns "$TURNS" --output-tokens "$OUTPUT_TOKENS_B" --warmup 0 \
  --kill-pid "$silo1_pid" --kill-at "$KILL_AT"
grep -E "^silo 1 .*exited" "$OUT/host-2-silos.log"
stop_host host-2-silos

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None
runs = {n: load(n) for n in ["a-1-silo.json", "a-2-silos.json", "b-affinity.json", "c-kill.json"]}
def f(v, d=1): return "–" if v is None else f"{v:.{d}f}"
rows = []
for name, r in runs.items():
    if r is None:
        rows.append(f"| {name} | missing | | | | | | | | |"); continue
    s, a, h = r["summary"], r.get("affinity"), r["histories"]
    ttft = s["ttftMs"] or {}
    same = "%d/%d (%.1f %%)" % (a["sameSilo"], a["followUps"], a["sameSiloRate"] * 100) if a else "–"
    cached = "%.1f %%" % (a["cachedShare"] * 100) if a else "–"
    rows.append(f"| {r['label']} | {len(r['enginesBefore'])} | {s['answered']} | {s['failedAttempts']} | {f(s['outputTokensPerSecond'])} "
                f"| {f(ttft.get('p50'))} | {f(ttft.get('p99'))} | {same} | {cached} | {h['intact']}/{h['conversations']} |")
one, two, b, c = (runs[n] for n in runs)
ratio = two["summary"]["outputTokensPerSecond"] / one["summary"]["outputTokensPerSecond"] if one and two and one["summary"]["outputTokensPerSecond"] else None
fault = c.get("fault") if c else None
summary = {
    "gpu": open(os.path.join(out, "gpu.txt")).read().strip(),
    "throughputRatio2to1": round(ratio, 4) if ratio else None,
    "ttftMs": {n: (r["summary"]["ttftMs"] if r else None) for n, r in runs.items()},
    "affinity": b.get("affinity") if b else None,
    "fault": fault,
    "histories": {n: (r["histories"] if r else None) for n, r in runs.items()},
}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print()
print("| run | silos | turns | failed | out tok/s | TTFT p50 ms | TTFT p99 ms | follow-ups on their silo | prefix cached | histories intact |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
print("\n".join(rows))
print()
print(f"throughput, 2 silos / 1 silo: {f(ratio, 3)}x (issue 15's goal: >= 1.9)")
if b and b.get("affinity"):
    print(f"KV affinity (b): {b['affinity']['sameSiloRate'] * 100:.1f} % of follow-up turns on the silo of their prefix (goal: >= 95 %)")
if fault:
    print(f"kill -9 (c) at {fault['atSeconds']} s of silo {', '.join(fault['silosGone']) or '?'}: {fault['failedAttempts']} failed attempts, "
          f"{fault['unanswered']} of {fault['affectedMessages']} affected messages unanswered, longest client wait for a reply "
          f"{f(fault['longestReplyWaitMs'], 0)} ms, longest failure {f(fault['longestErrorMs'], 0)} ms; turns sent after it ran on "
          + ", ".join(f"{k} ({v})" for k, v in fault["turnsAfterKill"].items()))
    print(f"histories after the kill: {c['histories']['intact']} of {c['histories']['conversations']} intact")
PY
