#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/pack.sh (and optionally an older build's own assemblies in .device/old-cli.tar.xz):
# the decode kernels by token tile (harness), the GPU tests, then decode-only throughput (16-token prompts, 256 out) at
# 1-128 sequences and 512/128 at 1 and 64, beside the older build in the same run; with nsys present, a kernel time
# summary of a 64-sequence decode run. Results under $OUT.
set -uo pipefail
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
if [ "${HARNESS:-1}" = 1 ]; then
  echo "== harness: decode products by kernel and token tile"
  timeout 150 python3 kernels/harness/prompt_gemm.py --decode --no-timings 2>&1 | grep -E "^decode|passed|FAIL|rror"
fi
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
if [ "${GPU_TESTS:-1}" = 1 ]; then
  echo "== GPU tests"
  timeout 300 dotnet .run/app/OrleansMixtral.Cuda.Tests/OrleansMixtral.Cuda.Tests.dll 2>&1 | tee $OUT/cuda-tests.txt | grep -E "FAIL|\[FAIL\]|Total|Assert|rror" | head -40
fi
new="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
m="--model synthetic:mixtral-8x7b --backend cuda"
echo "== this build: decode-only 16/256 at 1,16,64,128"
timeout 150 $new bench $m --prompt-tokens 16 --output-tokens 256 --concurrency 1,16,64,128 --json $OUT/decode.json 2>&1 | grep -v "^concurrency\|warming" | tail -8
if [ -f .device/old-cli.tar.xz ] && [ "${OLD:-1}" = 1 ]; then
  cp -r .run/app/OrleansMixtral.Cli .run/app/old && tar -C .run/app/old -xJf .device/old-cli.tar.xz
  echo "== older build: decode-only 16/256 at ${OLD_LEVELS:-16,64}"
  timeout 100 dotnet .run/app/old/mixtral.dll bench $m --prompt-tokens 16 --output-tokens 256 --concurrency ${OLD_LEVELS:-16,64} --json $OUT/old-decode.json 2>&1 | grep -v "^concurrency\|warming" | tail -6
fi
if [ -n "${LENGTHS:-}" ]; then
  echo "== this build: TTFT by prompt length ($LENGTHS), one request"
  timeout 200 $new bench $m --prompt-tokens "$LENGTHS" --output-tokens 16 --concurrency 1 --json $OUT/prompts.json 2>&1 | grep "│ [0-9]" | tail -6
fi
echo "== this build: 512/128 at 1,64"
timeout 120 $new bench $m --prompt-tokens 512 --output-tokens 128 --concurrency 1,64 --json $OUT/bench-512.json 2>&1 | grep -v "^concurrency\|warming" | tail -6
if command -v nsys >/dev/null && [ "${PROFILE:-1}" = 1 ]; then
  echo "== nsys: 64 sequences, 16/128"
  timeout 150 nsys profile -o $OUT/decode64 --force-overwrite true --cuda-graph-trace=node $new bench $m --prompt-tokens 16 --output-tokens 128 --concurrency 64 >/dev/null 2>&1
  nsys stats --report cuda_gpu_kern_sum --format csv -o $OUT/decode64 $OUT/decode64.nsys-rep >/dev/null 2>&1
  python3 - "$OUT" <<'PY'
import csv, glob, sys
f = sorted(glob.glob(sys.argv[1] + "/decode64*kern_sum*.csv"))
rows = list(csv.DictReader(open(f[0]))) if f else []
total = sum(float(r["Total Time (ns)"]) for r in rows)
for r in rows[:14]:
    print(f"{float(r['Total Time (ns)']) / 1e6:9.1f} ms {float(r['Time (%)']):5.1f} % {int(r['Instances']):7} x {float(r['Avg (ns)']) / 1e3:8.1f} us  {r['Name'][:60]}")
print(f"kernel time in all: {total / 1e6:.1f} ms")
PY
  rm -f $OUT/decode64.nsys-rep $OUT/decode64.sqlite
fi
