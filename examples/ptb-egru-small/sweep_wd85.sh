#!/usr/bin/env bash
# Weight-decay response at 85 % sparsity: from the dense twin (DENSE, default run/ckpts/dense.pt), prune one-shot
# to 85 % and fine-tune on the first 300k PTB training tokens (~130 steps) with weight decay 0.01 / 0.1 / 1.0
# (activity regulariser off, everything else as in run.sh); valid on the first 30k tokens. Runs go to SWEEP
# (default sweep85/); LIMIT (run.sh's SMOKE=1 sets it) adds options that cut each run short.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/ptb}
EX=examples/ptb-egru-small
DENSE=${DENSE:-$EX/run/ckpts/dense.pt}
SWEEP=${SWEEP:-$EX/sweep85}
LIMIT=${LIMIT:-}
for wd in 0.01 0.1 1.0; do
  $PY -m egru_compile.train --data-dir "$DATA" --emb 128 --hidden 256,128 --resume "$DENSE" --epochs 0 \
      --prune-schedule 0.85 --finetune-epochs 1 --finetune-lr 3e-3 --weight-decay "$wd" --input-wd-mult 5 --act-reg 0 \
      --batch-size 32 --bptt 70 --warmup-steps 20 --dropout 0.1 --dropout-emb 0.1 --dropconnect 0.1 --bf16-decoder \
      --train-tokens 300000 --valid-tokens 30000 --no-progress --log-interval 0 $LIMIT \
      --ckpt-dir "$SWEEP/wd${wd}_ar0" -o "$SWEEP/wd${wd}_ar0/final.pt" --force
done
