#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/pack.sh: Nsight Compute's kernel times over a few decode steps of 64 sequences
# (synthetic 8x7B int8, 16-token prompts), kernel by kernel, against the step time the bench measures in the same run.
# Prints the per-step budget by kernel; the raw CSV goes to $OUT.
set -uo pipefail
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
cli="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
m="--model synthetic:mixtral-8x7b --backend cuda"
C=${CONCURRENCY:-64}
echo "== bench: $C sequences, 16/128 (the step time without the profiler)"
timeout 90 $cli bench $m --prompt-tokens 16 --output-tokens 128 --concurrency $C --json $OUT/profile-bench.json 2>&1 | grep "│ 16 " | tail -1
echo "== ncu: ${COUNT:-1500} kernels after the first ${SKIP:-40000}"
timeout 300 ncu --graph-profiling node --clock-control none --cache-control none --metrics gpu__time_duration.sum \
  --launch-skip ${SKIP:-40000} --launch-count ${COUNT:-1500} --csv --log-file $OUT/ncu-decode.csv \
  $cli bench $m --prompt-tokens 16 --output-tokens 512 --concurrency $C >/dev/null 2>&1
python3 - "$OUT/ncu-decode.csv" ${LAYERS:-32} <<'PY'
import csv, sys, collections, re
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]; data = rows[head + 1:]
ki, vi, ui = cols.index("Kernel Name"), cols.index("Metric Value"), cols.index("Metric Unit")
to_us = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
times = collections.defaultdict(float); count = collections.Counter()
for r in data:
    name = re.sub(r"\(.*", "", r[ki])
    times[name] += float(r[vi].replace(",", "")) * to_us[r[ui]]; count[name] += 1
# rmsnorm_router runs once a layer on every path: it counts the layers the window saw
steps = count["rmsnorm_router"] / int(sys.argv[2])
print(f"{len(data)} kernels = {steps:.2f} steps of {sys.argv[2]} layers; kernel time per step:")
for name, t in sorted(times.items(), key=lambda kv: -kv[1]):
    print(f"  {name:28} {t / steps / 1000:8.3f} ms  {t / count[name]:8.1f} us each, {count[name] / steps:5.1f} a step")
print(f"  {'all kernels':28} {sum(times.values()) / steps / 1000:8.3f} ms a step")
PY
