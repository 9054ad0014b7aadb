#!/usr/bin/env bash
# On the GPU machine, after tools/gpu/pack.sh: the load benchmark (512/128, Poisson arrivals at RATES for DURATION seconds
# each) once per prompt budget while decoding (BUDGETS: the engine's --prompt-budget; 2048 = a whole chunk, the default),
# so inter-token latency and time to first token under load can be weighed. JSON and PNG per budget under $OUT.
set -uo pipefail
[ -d .run/app ] || { mkdir -p /tmp/dn .run && tar -C /tmp/dn -xJf .device/dotnet-rt.tar.xz && tar -C .run -xJf .device/apps.tar.xz; }
export DOTNET_ROOT=/tmp/dn PATH=/tmp/dn:$PATH DOTNET_CLI_TELEMETRY_OPTOUT=1
export MIXTRAL_PLOT_FONT=$(python3 -c "import matplotlib, os; print(os.path.join(os.path.dirname(matplotlib.__file__), 'mpl-data/fonts/ttf/DejaVuSans.ttf'))" 2>/dev/null)
cli="dotnet .run/app/OrleansMixtral.Cli/mixtral.dll"
for b in ${BUDGETS:-2048 512}; do
  echo "== prompt budget $b: rates ${RATES:-8,12}, ${DURATION:-25} s each"
  timeout "${TIMEOUT:-150}" $cli bench --model synthetic:mixtral-8x7b --backend cuda --prompt-tokens 512 --output-tokens 128 \
    --rate "${RATES:-8,12}" --duration "${DURATION:-25}" --prompt-budget "$b" --json "$OUT/load-budget-$b.json" --plot "$OUT/load-budget-$b.png" 2>&1 | grep "^│" | tail -4
done
