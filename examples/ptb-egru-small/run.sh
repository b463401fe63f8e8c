#!/usr/bin/env bash
# Exact commands that produced examples/ptb-egru-small (one CPU core: --threads 1 is the default).
# Run from the repository root. DATA = Mikolov PTB split (ptb.{train,valid,test}.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/ptb}
EX=examples/ptb-egru-small
COMMON="--data-dir $DATA --emb 128 --hidden 256,128 --batch-size 32 --bptt 70 --lr 3e-3 --warmup-steps 100
        --weight-decay 0.1 --input-wd-mult 5 --dropout 0.1 --dropout-emb 0.1 --dropconnect 0.1
        --bf16-decoder --seed 1111 --test --no-progress --ckpt-dir $EX/run/ckpts"

# 0) optional: weight-decay sweep (short runs, 400k tokens each), table via summarize_sweep.py
# $EX/sweep_wd.sh && $PY $EX/summarize_sweep.py

# 1) dense EGRU, 6 epochs  -> run/ckpts/dense.pt (the dense twin), run/dense.pt
$PY -m egru_compile.train $COMMON --epochs 6 -o $EX/run/dense.pt --force

# 2) iterative global magnitude pruning 50 -> 75 -> 85 %, fine-tuning 1, 1, 2 epochs with the activity
#    regulariser on  -> run/ckpts/sparsity_{50,75,85}.pt, model.pt
$PY -m egru_compile.train $COMMON --resume $EX/run/ckpts/dense.pt --epochs 0 \
    --prune-schedule 0.5,0.75,0.85 --finetune-epochs 1,1,2 --act-reg 0.2 -o $EX/model.pt --force

# ship: dense twin next to the pruned model, log
cp $EX/run/ckpts/dense.pt $EX/dense.pt
cp $EX/run/ckpts/train_log.csv $EX/train_log.csv

# 3) dense GRU baseline, same size, same budget (6 epochs, same optimiser/regularisation; no pruning)
$PY -m egru_compile.train --data-dir $DATA --model gru --emb 128 --hidden 256,128 --epochs 6 --batch-size 32 --bptt 70 \
    --lr 3e-3 --warmup-steps 100 --weight-decay 0.1 --dropout 0.1 --dropout-emb 0.1 --dropconnect 0.1 \
    --bf16-decoder --seed 1111 --test --no-progress --ckpt-dir $EX/run/gru_ckpts -o $EX/run/gru.pt

# 4) weight-decay response at 85 % (from the dense twin: prune one-shot to 85 %, fine-tune on 300k tokens)
$EX/sweep_wd85.sh && $PY $EX/summarize_sweep.py $EX/sweep85

# 5) perplexity vs MACs across pruning levels (PTB test, batch 1)
$PY benchmarks/ppl_vs_macs.py --data $DATA \
    --egru $EX/run/ckpts/dense.pt $EX/run/ckpts/sparsity_50.pt $EX/run/ckpts/sparsity_75.pt $EX/run/ckpts/sparsity_85.pt \
    --baseline $EX/run/gru.pt --png $EX/ppl_vs_macs.png --json $EX/ppl_vs_macs.json
