set -uo pipefail
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
echo "== harness: decode experts by tile and weight prefetch depth"
for a in 4 6 8; do timeout 100 python3 kernels/harness/prompt_gemm.py --decode-only --define WGG_AHEAD_SMALL=$a 2>&1 | grep -E "decode experts|FAIL|rror" | sed "s/^/ahead $a: /"; done
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
echo "== GPU tests"
timeout 300 dotnet .run/app/OrleansMixtral.Cuda.Tests/OrleansMixtral.Cuda.Tests.dll 2>&1 | tee $OUT/cuda-tests.txt | grep -E "FAIL|\[FAIL\]|Total|Assert|rror|64-sequence decode step: max" | head -40
new="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
m="--model synthetic:mixtral-8x7b --backend cuda"
echo "== this build: decode-only 16/256 at 1,16,64,128"
timeout 150 $new bench $m --prompt-tokens 16 --output-tokens 256 --concurrency 1,16,64,128 --json $OUT/decode.json 2>&1 | grep -v "^concurrency\|warming" | tail -8
cp -r .run/app/OrleansMixtral.Cli .run/app/old && tar -C .run/app/old -xJf .device/old-cli.tar.xz
echo "== b24d2de build: decode-only 16/256 at 16,64"
timeout 100 dotnet .run/app/old/mixtral.dll bench $m --prompt-tokens 16 --output-tokens 256 --concurrency 16,64 --json $OUT/old-decode.json 2>&1 | grep -v "^concurrency\|warming" | tail -6
echo "== this build: 512/128 at 1,64"
timeout 120 $new bench $m --prompt-tokens 512 --output-tokens 128 --concurrency 1,64 --json $OUT/bench-512.json 2>&1 | grep -v "^concurrency\|warming" | tail -6
