#!/usr/bin/env bash
#   tools/gpu/pack-multi-gpu.sh
# Packs what tools/gpu/device-multi-gpu.sh runs on the GPU machine into .device/ (carry [".device"]): the host launcher,
# the silo and ClusterBench, on a runtime with ASP.NET Core (the silo is a web host). Published apart, three programs
# of mostly the same assemblies do not fit the device tool's 64 MiB (runtime with ASP.NET Core ≈ 34 MiB, tracked files
# ≈ 21 MiB): identical files are hard links in the archive, Roslyn stays behind (pack.sh; a silo runs without it), and
# so do ClusterBench's native plotting libraries (its conversation mode draws nothing). Prints the carried total.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
tools/gpu/pack.sh --aspnet silos/OrleansMixtral.HostLauncher/OrleansMixtral.HostLauncher.csproj \
  silos/OrleansMixtral.Silo/OrleansMixtral.Silo.csproj src/OrleansMixtral.ClusterBench/OrleansMixtral.ClusterBench.csproj
# the runtime without its debugger support (libmscordaccore, libmscordbi, createdump: ≈ 1.1 MiB packed), which a run
# never loads: with the tracked files of late 2026-11 the carried total was 0.5 MiB over otherwise
if [ ! -f .device/dotnet-rt.trimmed ] || [ .device/dotnet-rt.tar.xz -nt .device/dotnet-rt.trimmed ]; then
  rt=$(mktemp -d) && tar -C "$rt" -xJf .device/dotnet-rt.tar.xz
  find "$rt" \( -name libmscordaccore.so -o -name libmscordbi.so -o -name createdump \) -delete
  (cd "$rt" && tar -cJf "$OLDPWD/.device/dotnet-rt.tar.xz" *) && rm -rf "$rt" && touch .device/dotnet-rt.trimmed
fi
rm -rf .device/app && tar -C .device -xJf .device/apps.tar.xz
rm -f .device/app/OrleansMixtral.ClusterBench/runtimes/linux-x64/native/libSkiaSharp.so \
      .device/app/OrleansMixtral.ClusterBench/runtimes/linux-x64/native/libHarfBuzzSharp.so
python3 - <<'PY'
# the same file (path inside its program's folder, bytes) in several programs: one copy, the others hard links to it
import hashlib, os
root, first, linked = ".device/app", {}, 0
for app in sorted(os.listdir(root)):
    for dirpath, _, files in os.walk(os.path.join(root, app)):
        for name in files:
            path = os.path.join(dirpath, name)
            key = (os.path.relpath(path, os.path.join(root, app)), hashlib.sha256(open(path, "rb").read()).hexdigest())
            if key in first:
                os.remove(path); os.link(first[key], path); linked += 1
            else:
                first[key] = path
print(f"{linked} files shared between programs")
PY
tar -C .device -cJf .device/apps.tar.xz app && rm -rf .device/app
apps=$(stat -c %s .device/apps.tar.xz); rt=$(stat -c %s .device/dotnet-rt.tar.xz)
tracked=$(git ls-files -z | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
total=$((apps + rt + tracked))
echo "carried: programs $((apps >> 20)) MiB + runtime $((rt >> 20)) MiB + tracked files $((tracked >> 20)) MiB = $((total >> 20)) MiB of 64"
[ $total -lt $((64 << 20)) ] || { echo "error: over the device tool's 64 MiB" >&2; exit 1; }
