#!/usr/bin/env bash
# Weight-decay sweep (short runs: 1 epoch on the first 400k PTB training tokens, 30k validation tokens),
# each followed by one-shot 85 % global magnitude pruning (no fine-tuning) to read activity and MACs.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/ptb}
OUT=examples/ptb-egru-small/sweep
for spec in "0.01 0" "0.1 0" "1.0 0" "0.1 1.0"; do
  set -- $spec; wd=$1; ar=$2
  $PY -m egru_compile.train --data-dir "$DATA" --emb 128 --hidden 256,128 --epochs 1 --batch-size 32 --bptt 70 \
      --lr 3e-3 --warmup-steps 50 --weight-decay "$wd" --act-reg "$ar" --bf16-decoder --no-progress \
      --train-tokens 400000 --valid-tokens 30000 --prune-schedule 0.85 --finetune-epochs 0 \
      --ckpt-dir "$OUT/wd${wd}_ar${ar}" -o "$OUT/wd${wd}_ar${ar}/final.pt"
done
