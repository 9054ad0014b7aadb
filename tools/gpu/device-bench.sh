#!/usr/bin/env bash
# On the GPU machine, after pack-dotnet.sh (see device-check.sh): int8 vs bf16 at the full Mixtral 8x7B shape,
# a concurrency sweep with its plot, and a short Nsight Compute profile of the decode kernels. Results in $OUT.
set -uo pipefail
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
mixtral="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
# no system fonts there: borrow matplotlib's DejaVu Sans for the plot's text, when matplotlib is installed
export MIXTRAL_PLOT_FONT=$(python3 -c "import matplotlib, os; print(os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data/fonts/ttf/DejaVuSans.ttf'))" 2>/dev/null)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "== int8, concurrency sweep"
timeout 300 $mixtral bench --model synthetic:mixtral-8x7b --backend cuda --prompt-tokens 512 --output-tokens 128 \
  --concurrency "${LEVELS:-1,2,4,8,16}" --json $OUT/bench-int8.json --plot $OUT/bench-int8.png 2>&1 | grep -v "^concurrency\|warming"
echo "== bf16 (no quantization), one request"
timeout 200 $mixtral bench --model synthetic:mixtral-8x7b-bf16 --backend cuda --prompt-tokens 512 --output-tokens 128 \
  --concurrency 1 --json $OUT/bench-bf16.json 2>&1 | grep -v "^concurrency\|warming"
if [ "${PROFILE:-1}" = 1 ] && command -v ncu >/dev/null; then
  echo "== decode kernels under Nsight Compute (one request, 64/24)"
  timeout 240 ncu --kernel-name regex:"moe_gate_up_i8|moe_down_i8|gemv_i8_1|attention_paged|rmsnorm|router_topk|rope_store_kv|gemv_bf16_1" \
    --launch-skip 3000 --launch-count 60 --csv \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active \
    $mixtral bench --model synthetic:mixtral-8x7b --backend cuda --prompt-tokens 64 --output-tokens 24 --concurrency 1 > $OUT/ncu.csv 2> $OUT/ncu.err
  python3 - <<'PY'
import csv, collections, os
rows = list(csv.DictReader(l for l in open(os.environ["OUT"] + "/ncu.csv") if l.startswith('"')))
agg = collections.defaultdict(lambda: collections.defaultdict(list))
for r in rows:
    agg[r["Kernel Name"].split("(")[0]][r["Metric Name"]].append(float(r["Metric Value"].replace(",", "")))
for k, m in sorted(agg.items()):
    print(k, {n: round(sum(v) / len(v), 2) for n, v in m.items()}, "n =", len(next(iter(m.values()))))
PY
fi
