#!/usr/bin/env bash
# Exact commands that produced examples/ptb-egru-small (one CPU core: --threads 1 is the default).
# Run from anywhere (it works from the repository root). DATA = Mikolov PTB split (ptb.{train,valid,test}.txt).
#
# SMOKE=1 runs every step below cut short — 2 training steps an epoch on the first 50,000 training tokens,
# 2,000 validation tokens, no PTB-test perplexity at the end of training, 2,000-token evaluations in step 5 — into
# OUT (default smoke-run/), never over the shipped example: a check that the whole recipe runs (minutes; CI runs
# it). Without SMOKE the real run (hours) rewrites the example's model.pt, dense.pt, train_log.csv, ppl_vs_macs.*.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/ptb}
EX=examples/ptb-egru-small
if [ "${SMOKE:-0}" = 1 ]; then
  OUT=${OUT:-smoke-run}
  LIMIT="--max-steps 2 --train-tokens 50000 --valid-tokens 2000 --no-test"
  EVAL_LIMIT="--max-tokens 2000"
else
  OUT=${OUT:-$EX}
  LIMIT=""
  EVAL_LIMIT=""
fi
mkdir -p "$OUT"
COMMON="--data-dir $DATA --emb 128 --hidden 256,128 --batch-size 32 --bptt 70 --lr 3e-3 --warmup-steps 100
        --weight-decay 0.1 --input-wd-mult 5 --dropout 0.1 --dropout-emb 0.1 --dropconnect 0.1
        --bf16-decoder --seed 1111 --test --no-progress --ckpt-dir $OUT/run/ckpts"

# 0) optional: weight-decay sweep (short runs, 400k tokens each), table via summarize_sweep.py
# $EX/sweep_wd.sh && $PY $EX/summarize_sweep.py

# 1) dense EGRU, 6 epochs  -> run/ckpts/dense.pt (the dense twin), run/dense.pt
$PY -m egru_compile.train $COMMON --epochs 6 $LIMIT -o $OUT/run/dense.pt --force

# 2) iterative global magnitude pruning 50 -> 75 -> 85 %, fine-tuning 1, 1, 2 epochs with the activity
#    regulariser on  -> run/ckpts/sparsity_{50,75,85}.pt, model.pt
$PY -m egru_compile.train $COMMON --resume $OUT/run/ckpts/dense.pt --epochs 0 \
    --prune-schedule 0.5,0.75,0.85 --finetune-epochs 1,1,2 --act-reg 0.2 $LIMIT -o $OUT/model.pt --force

# ship: dense twin next to the pruned model, log
cp $OUT/run/ckpts/dense.pt $OUT/dense.pt
cp $OUT/run/ckpts/train_log.csv $OUT/train_log.csv

# 3) dense GRU baseline, same size, same budget (6 epochs, same optimiser/regularisation; no pruning)
$PY -m egru_compile.train --data-dir $DATA --model gru --emb 128 --hidden 256,128 --epochs 6 --batch-size 32 --bptt 70 \
    --lr 3e-3 --warmup-steps 100 --weight-decay 0.1 --dropout 0.1 --dropout-emb 0.1 --dropconnect 0.1 \
    --bf16-decoder --seed 1111 --test --no-progress --ckpt-dir $OUT/run/gru_ckpts $LIMIT -o $OUT/run/gru.pt --force

# 4) weight-decay response at 85 % (from the dense twin: prune one-shot to 85 %, fine-tune on 300k tokens)
DENSE=$OUT/run/ckpts/dense.pt SWEEP=$OUT/sweep85 LIMIT="$LIMIT" $EX/sweep_wd85.sh
$PY $EX/summarize_sweep.py $OUT/sweep85

# 5) perplexity vs MACs across pruning levels (PTB test, batch 1)
$PY benchmarks/ppl_vs_macs.py --data $DATA $EVAL_LIMIT \
    --egru $OUT/run/ckpts/dense.pt $OUT/run/ckpts/sparsity_50.pt $OUT/run/ckpts/sparsity_75.pt \
    $OUT/run/ckpts/sparsity_85.pt --baseline $OUT/run/gru.pt --png $OUT/ppl_vs_macs.png --json $OUT/ppl_vs_macs.json
