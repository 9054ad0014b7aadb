#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repo root, with .work/ carried:
#   .work/corpus/{train,valid,heldout}.{bin,txt}  (node tools/tiny-model/prepare_corpus.mjs .work/corpus)
#   .work/parity.jsonl                            (node tools/tokenizer/parity-lines.mjs ... > .work/parity.jsonl)
# Checks tokenizer parity, trains the tiny model, writes fixtures. Results go to $OUT.
#   bash tools/tiny-model/device-run.sh STEPS MAX_SECONDS
set -euo pipefail
steps=${1:-1500}
maxsec=${2:-360}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, tokenizers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'tokenizers', tokenizers.__version__)"

python3 tools/tokenizer/check_parity.py --model-dir models/tiny-mixtral --lines .work/parity.jsonl \
  --corpus .work/corpus --report "$OUT/parity.json"

model=/tmp/tiny-mixtral
python3 tools/tiny-model/train.py --corpus .work/corpus --out $model --steps "$steps" --max-seconds "$maxsec" \
  --log "$OUT/train_log.json"
cp models/tiny-mixtral/tokenizer.json models/tiny-mixtral/tokenizer_config.json $model/
python3 tools/tiny-model/make_fixtures.py --model $model --heldout .work/corpus/heldout.txt --out /tmp/fixtures

cp $model/model.safetensors $model/config.json $model/generation_config.json "$OUT/"
tar -C /tmp -czf "$OUT/fixtures.tar.gz" fixtures
ls -la "$OUT"
