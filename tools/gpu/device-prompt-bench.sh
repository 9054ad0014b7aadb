#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/pack.sh (and optionally an older build's own assemblies in .device/old-cli.tar.xz,
# the same dependencies): the GPU tests, then prompt speed of the synthetic 8x7B by prompt length (TTFT), one
# request and 64, beside the older build in the same run. Results under $OUT.
set -uo pipefail
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
export MIXTRAL_PLOT_FONT=$(python3 -c "import matplotlib, os; print(os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data/fonts/ttf/DejaVuSans.ttf'))" 2>/dev/null)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
new="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
m="--model synthetic:mixtral-8x7b --backend cuda"
if [ "${GPU_TESTS:-1}" = 1 ]; then
  echo "== GPU tests"
  timeout "${TESTS_TIMEOUT:-240}" dotnet .run/app/OrleansMixtral.Cuda.Tests/OrleansMixtral.Cuda.Tests.dll 2>&1 | tee $OUT/cuda-tests.txt | grep -E "FAIL|\[FAIL\]|Total|Assert|rror" | head -40
fi
echo "== this build: TTFT by prompt length, one request"
timeout 200 $new bench $m --prompt-tokens "${LENGTHS:-512,2048,8192,32000}" --output-tokens 16 --concurrency 1 --json $OUT/prompts.json --plot $OUT/prompts.png 2>&1 | grep -v "^concurrency\|warming" | tail -12
echo "== this build: 512/128, 1 and 64 requests"
timeout 120 $new bench $m --prompt-tokens 512 --output-tokens 128 --concurrency 1,64 --json $OUT/bench-512.json 2>&1 | grep -v "^concurrency\|warming" | tail -8
if [ -f .device/old-cli.tar.xz ]; then
  # the older build: its own assemblies (kernels embedded) over this build's dependencies
  cp -r .run/app/OrleansMixtral.Cli .run/app/old && tar -C .run/app/old -xJf .device/old-cli.tar.xz
  for n in ${OLD_LENGTHS:-512 2048 8192}; do
    echo "== older build: $n-token prompt, one request"
    timeout 90 dotnet .run/app/old/mixtral.dll bench $m --prompt-tokens $n --output-tokens 16 --concurrency 1 --json $OUT/old-$n.json 2>&1 | grep -v "^concurrency\|warming" | tail -4
  done
fi
