#!/usr/bin/env bash
#   tools/gpu/pack.sh [PROJECT.csproj ...]   (default: the CLI and the GPU tests)
# Publishes the CLI and the GPU tests for the GPU machine (../shared/device/pack-dotnet.sh), then drops the native
# libraries of other platforms (SkiaSharp/HarfBuzz ship a dozen) so the carried .device stays under the limit.
set -uo pipefail
cd "$(git rev-parse --show-toplevel)"
projects=("$@")
[ ${#projects[@]} -gt 0 ] || projects=(src/OrleansMixtral.Cli/OrleansMixtral.Cli.csproj tests/OrleansMixtral.Cuda.Tests/OrleansMixtral.Cuda.Tests.csproj)
../shared/device/pack-dotnet.sh "${projects[@]}" >/tmp/pack.log 2>&1
[ -f .device/apps.tar.xz ] || { tail -20 /tmp/pack.log; exit 1; }
rm -rf .device/app && tar -C .device -xJf .device/apps.tar.xz
find .device/app -path '*/runtimes/*' -maxdepth 3 -type d -name '*' | grep -E '/runtimes/[^/]+$' | grep -v '/runtimes/linux-x64$' | xargs -r rm -rf
# symbol/doc files stay behind; so does Roslyn (pulled in by Orleans) unless KEEP_ROSLYN=1 (a silo on the GPU machine)
find .device/app \( -name '*.pdb' -o -name '*.xml' \) -delete
[ "${KEEP_ROSLYN:-0}" = 1 ] || find .device/app -name 'Microsoft.CodeAnalysis*.dll' -delete
# the test platform's code coverage and instrumentation engines (every OS, ≈ 20 MB): the GPU machine runs tests without them
find .device/app -maxdepth 2 -type d \( -name CodeCoverage -o -name InstrumentationEngine -o -name arm64 -o -name alpine -o -name macos -o -name ubuntu \) -prune -exec rm -rf {} +
tar -C .device -cJf .device/apps.tar.xz app && rm -rf .device/app
du -sh .device/apps.tar.xz
