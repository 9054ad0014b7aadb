#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/pack.sh: Nsight Compute's kernel times of one prompt's prefill (synthetic 8x7B
# int8, one request, each length in LENGTHS), kernel by kernel, per layer, against the TTFT the bench measures without
# the profiler in the same run. The raw CSVs go to $OUT.
set -uo pipefail
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
cli="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
m="--model synthetic:mixtral-8x7b --backend cuda"
for n in ${LENGTHS:-512 2048}; do
  echo "== $n-token prompt: TTFT without the profiler"
  timeout 90 $cli bench $m --prompt-tokens $n --output-tokens 1 --concurrency 1,1,1 2>&1 | grep -E "^│ $n " | tail -3
  echo "== ncu: every kernel of the warm-up and the measured prefill (the last step is the one counted)"
  timeout 240 ncu --graph-profiling node --clock-control none --cache-control none --metrics gpu__time_duration.sum \
    --csv --log-file $OUT/ncu-prefill-$n.csv $cli bench $m --prompt-tokens $n --output-tokens 1 --concurrency 1 >/dev/null 2>&1
  python3 - "$OUT/ncu-prefill-$n.csv" ${LAYERS:-32} <<'PY'
import csv, sys, collections, re
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
cols = rows[head]; data = rows[head + 1:]
ki, vi, ui = cols.index("Kernel Name"), cols.index("Metric Value"), cols.index("Metric Unit")
names = [re.sub(r"\(.*", "", r[ki]) for r in data]
last = max(i for i, n in enumerate(names) if n == "embed_bf16")  # the measured request's step starts here
to_us = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
times = collections.defaultdict(float); count = collections.Counter()
for r, name in zip(data[last:], names[last:]):
    times[name] += float(r[vi].replace(",", "")) * to_us[r[ui]]; count[name] += 1
L = int(sys.argv[2]); total = sum(times.values())
print(f"{len(data) - last} kernels in the measured prefill, {total / 1000:.2f} ms of kernel time; per layer ({L}):")
for name, t in sorted(times.items(), key=lambda kv: -kv[1]):
    print(f"  {name:28} {t / L:8.1f} us a layer  {t / count[name]:8.1f} us each, {count[name]:4} launches  {100 * t / total:5.1f} %")
PY
done
