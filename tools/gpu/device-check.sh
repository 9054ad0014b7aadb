#!/usr/bin/env bash
# On the GPU machine (device tool), after ../shared/device/pack-dotnet.sh src/OrleansMixtral.Cli/OrleansMixtral.Cli.csproj
# tests/OrleansMixtral.Cuda.Tests/OrleansMixtral.Cuda.Tests.csproj, with .device carried:
#   bash tools/gpu/device-check.sh [LEVELS]
# Runs the GPU correctness tests, then the benchmarks; results under $OUT.
set -uo pipefail
levels=${1:-1,2,4,8,16,32,64}
# the programs go under the repo so that tests find OrleansMixtral.sln (and the fixtures) above themselves
mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1 MIXTRAL_KERNELS_DIR=$PWD/kernels
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee $OUT/gpu.txt
git rev-parse --short HEAD 2>/dev/null | tee -a $OUT/gpu.txt
echo "== GPU correctness tests"
timeout 300 dotnet .run/app/OrleansMixtral.Cuda.Tests/OrleansMixtral.Cuda.Tests.dll 2>&1 | tee $OUT/cuda-tests.txt | tail -40
mixtral="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
[ "${GPU_BENCH:-1}" = 1 ] || exit 0
echo "== tiny model on the GPU, 512/128, one request"
timeout 120 $mixtral bench --model models/tiny-mixtral --backend cuda --int8 --prompt-tokens 512 --output-tokens 128 --concurrency 1,8 --json $OUT/bench-tiny.json 2>&1 | tail -12
echo "== synthetic Mixtral 8x7B int8, 512/128"
timeout 400 $mixtral bench --model synthetic:mixtral-8x7b --backend cuda --prompt-tokens 512 --output-tokens 128 --concurrency "$levels" --json $OUT/bench-8x7b.json 2>&1 | tail -20
