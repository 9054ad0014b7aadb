#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/pack.sh (and optionally older builds' own assemblies in .device/NAME-cli.tar.xz,
# over the same dependencies): the GPU tests, then prompt speed of the synthetic 8x7B by prompt length (TTFT), one
# request and 64, decode-only throughput, and each older build's TTFT in the same run. Results under $OUT.
#   GPU_TESTS=0 skips the tests; NEW=0 skips this build's benches; LENGTHS, OLD_LENGTHS, DECODE_LEVELS (16-token prompts,
#   256 out; empty skips) pick the sweeps; TTFT_RUNS=3 measures every prompt length 3 times (one request each).
set -uo pipefail
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
export MIXTRAL_PLOT_FONT=$(python3 -c "import matplotlib, os; print(os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data/fonts/ttf/DejaVuSans.ttf'))" 2>/dev/null)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
new="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
ones=$(python3 -c "print(','.join(['1'] * ${TTFT_RUNS:-1}))")
m="--model synthetic:mixtral-8x7b --backend cuda"
if [ "${GPU_TESTS:-1}" = 1 ]; then
  echo "== GPU tests"
  timeout "${TESTS_TIMEOUT:-240}" dotnet .run/app/OrleansMixtral.Cuda.Tests/OrleansMixtral.Cuda.Tests.dll 2>&1 | tee $OUT/cuda-tests.txt | grep -E "FAIL|\[FAIL\]|Total|Assert|rror" | head -40
fi
if [ "${NEW:-1}" = 1 ]; then
  echo "== this build: TTFT by prompt length, one request"
  timeout 200 $new bench $m --prompt-tokens "${LENGTHS:-512,2048,8192,32000}" --output-tokens 16 --concurrency $ones --json $OUT/prompts.json --plot $OUT/prompts.png 2>&1 | grep -v "^concurrency\|warming" | tail -20
  echo "== this build: 512/128, 1 and 64 requests"
  timeout 120 $new bench $m --prompt-tokens 512 --output-tokens 128 --concurrency 1,64 --json $OUT/bench-512.json 2>&1 | grep -v "^concurrency\|warming" | tail -8
  if [ -n "${DECODE_LEVELS-64,128}" ]; then
    echo "== this build: decode-only 16/256 at ${DECODE_LEVELS-64,128}"
    timeout 120 $new bench $m --prompt-tokens 16 --output-tokens 256 --concurrency "${DECODE_LEVELS-64,128}" --json $OUT/decode.json 2>&1 | grep -v "^concurrency\|warming" | tail -8
  fi
fi
for tarball in .device/*-cli.tar.xz; do
  [ -f "$tarball" ] || continue
  name=$(basename "$tarball" -cli.tar.xz)
  # an older build: its own assemblies (kernels embedded) over this build's dependencies
  rm -rf .run/app/$name && cp -r .run/app/OrleansMixtral.Cli .run/app/$name && tar -C .run/app/$name -xJf "$tarball"
  for n in ${OLD_LENGTHS:-512 2048 8192}; do
    echo "== $name build: $n-token prompt, one request"
    timeout 90 dotnet .run/app/$name/mixtral.dll bench $m --prompt-tokens $n --output-tokens 16 --concurrency $ones --json $OUT/$name-$n.json 2>&1 | grep -v "^concurrency\|warming" | grep "^│" | tail -${TTFT_RUNS:-1}
  done
done
