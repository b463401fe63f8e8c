"""`egru-compile train`: train / prune / fine-tune an EGRU language model (import-cheap: click only)."""
from __future__ import annotations

import json
import math
import os

import click


class _Range(click.FloatRange):
    """click.FloatRange that also refuses NaN and infinities (which compare false against every bound)."""

    def convert(self, value, param, ctx):
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return v


#: most parameters `train` builds (float32: 8 GiB of weights before gradients and optimizer state)
MAX_PARAMETERS = 2 ** 31


def _epochs(ctx, param, value):
    try:
        vals = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {value!r}") from None
    if any(v < 0 for v in vals):
        raise click.BadParameter(f"epochs cannot be negative: {value!r}")
    return vals


def _floats(ctx, param, value):
    if value is None or value == "":
        return []
    try:
        return [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _ints(ctx, param, value):
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) <= 0:
        raise click.BadParameter("expected positive sizes, e.g. 256,128")
    return out


def _check_train_paths(cfg, force: bool = False) -> None:
    """No file train writes (-o, the log, the checkpoint folder's files) is an input: a file of --data, the
    --resume checkpoint (only the checkpoint folder's own last.pt may be resumed from and rewritten); an
    existing -o file is replaced only with --force (the checkpoint folder is the run's own, resumable state)."""
    from pathlib import Path

    from ..fsio import FileError, check_new_files, check_outputs
    from .trainer import stage_name
    data = Path(cfg.data)
    inputs = [("--data file", p) for p in sorted(data.iterdir())[:10_000] if p.is_file()] if data.is_dir() else []
    if cfg.resume:
        inputs += [("--resume", cfg.resume), ("--resume state", Path(cfg.resume).with_suffix(".state.pt"))]
    ck = cfg.resolved_ckpt_dir()
    outputs = [("-o", cfg.output), ("--log", cfg.resolved_log()), ("checkpoint", ck / "config.json")]
    stages = [0.0, *cfg.prune_schedule]                 # a resumed run rewrites no checkpoint of a stage it skips
    outputs += [("checkpoint", ck / f"{stage_name(t)}.pt") for t in stages[_first_stage(cfg, len(stages)):]]
    try:
        check_outputs(outputs, inputs)
        check_new_files([("-o", cfg.output)], force)
        resumable = {(ck / n).resolve() for n in ("last.pt", "last.state.pt")}
        check_outputs([(lbl, p) for lbl, p in [("checkpoint", ck / "last.pt"), ("checkpoint", ck / "last.state.pt")]],
                      [(lbl, p) for lbl, p in inputs if Path(p).resolve() not in resumable])
    except FileError as e:
        raise click.ClickException(str(e)) from None


def _first_stage(cfg, n_stages: int) -> int:
    """The first stage the run trains: 0, or after a --resume checkpoint's completed stage (`resume_point`, as
    the trainer continues: ``run.sh``'s pruning step resumes from ``<ckpt-dir>/dense.pt`` with --epochs 0)."""
    import torch

    from .log import resume_point
    if not cfg.resume:
        return 0
    try:
        meta = torch.load(cfg.resume, map_location="cpu", weights_only=True).get("meta") or {}
    except Exception:  # noqa: BLE001 - an unreadable checkpoint fails later with its own one-line reason
        return 0
    ft = cfg.finetune_epochs if isinstance(cfg.finetune_epochs, (list, tuple)) else [cfg.finetune_epochs]
    ft = list(ft) * (n_stages - 1) if len(ft) == 1 else list(ft)
    return min(resume_point(meta.get("progress") or {}, [cfg.epochs, *ft])[0], n_stages)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--data-dir", "data", type=click.Path(exists=True, file_okay=False),
              help="Directory with ptb.{train,valid,test}.txt (or train/valid/test.txt). Vocabulary = first "
                   "appearance in train, <eos> per line.")
@click.option("--data", "data_old", type=click.Path(exists=True, file_okay=False), hidden=True,
              help="Deprecated spelling of --data-dir (elsewhere --data is a file).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Final checkpoint (project format).")
@click.option("--force", is_flag=True, help="Replace an existing -o file (checked before training starts).")
@click.option("--model", "model_type", type=click.Choice(["egru", "gru", "lstm"]), default="egru",
              help="egru, or a dense GRU/LSTM baseline of the same shape.")
@click.option("--emb", default=128, type=click.IntRange(min=1),
              help="Embedding size (= last hidden size: tied decoder; any last size with --projection).")
@click.option("--projection/--no-projection", default=False,
              help="EvNN's projection decoder: logits = E · a(P · y_last + p) + b (every layer any size).")
@click.option("--projection-activation", "projection_activation", type=click.Choice(["identity", "relu"]),
              default="identity", show_default=True,
              help="a of --projection: identity (EvNN >= 0.2.0) or relu (EvNN's 2023 code).")
@click.option("--hidden", default="256,128", callback=_ints, help="Hidden sizes per layer, comma-separated.")
@click.option("--epochs", default=10, type=click.IntRange(min=0), help="Epochs of dense training (0: only prune/fine-tune a --resume'd model).")
@click.option("--batch-size", default=32, type=click.IntRange(min=1), help="Streams per process.")
@click.option("--bptt", default=70, type=click.IntRange(min=1), help="Truncated BPTT window (states carried, detached).")
@click.option("--lr", default=3e-3, type=_Range(min=0, min_open=True), help="AdamW peak learning rate (warmup, then cosine decay per stage).")
@click.option("--min-lr-ratio", default=0.05, type=_Range(0, 1), help="Final LR as a fraction of the peak.")
@click.option("--warmup-steps", default=100, type=click.IntRange(min=0))
@click.option("--weight-decay", "--wd", "weight_decay", default=0.1, type=_Range(min=0),
              help="AdamW decoupled weight decay on weight matrices (not biases/thresholds).")
@click.option("--input-wd-mult", default=1.0, type=_Range(min=0),
              help="Multiplier of the weight decay on layer 0's input kernel (its non-zeros cost MACs every token).")
@click.option("--act-reg", default=0.0, type=_Range(min=0),
              help="Activity regulariser: coefficient of the MAC-weighted mean event rate (surrogate gradient).")
@click.option("--clip", default=0.5, type=_Range(min=0), help="Gradient-norm clipping (0: off).")
@click.option("--dropout", default=0.1, type=_Range(0, 1, max_open=True), help="Locked dropout between layers and before the decoder.")
@click.option("--dropout-emb", default=0.1, type=_Range(0, 1, max_open=True), help="Locked dropout on the embedding output.")
@click.option("--dropout-words", default=0.0, type=_Range(0, 1, max_open=True), help="Word dropout: drop whole word types.")
@click.option("--dropconnect", default=0.1, type=_Range(0, 1, max_open=True), help="DropConnect on recurrent weights.")
@click.option("--dampening", default=0.7, type=_Range(min=0), help="Surrogate-gradient dampening.")
@click.option("--support", default=1.0, type=_Range(min=0, min_open=True), help="Surrogate-gradient support (1/width).")
@click.option("--thr-init", default="0.0,0.5", callback=_floats, help="Thresholds initialised uniform in LO,HI.")
@click.option("--prune-schedule", default="", callback=_floats,
              help="Global magnitude pruning targets, e.g. 0.5,0.75,0.85 (each followed by fine-tuning).")
@click.option("--finetune-epochs", default="1", callback=_epochs,
              help="Fine-tuning epochs after each pruning step: one value for all, or one per step (1,1,2).")
@click.option("--finetune-lr", default=None, type=_Range(min=0, min_open=True), help="Peak LR of fine-tuning [default: lr/2].")
@click.option("--seed", default=1111, type=click.IntRange(0, 2 ** 32 - 1))
@click.option("--resume", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Continue from a checkpoint (e.g. <ckpt-dir>/last.pt; its .state.pt sibling restores the optimizer).")
@click.option("--ckpt-dir", default=None, type=click.Path(file_okay=False),
              help="Per-epoch/per-stage checkpoints, config.json, log [default: <output stem>_ckpts].")
@click.option("--log", "log", default=None, type=click.Path(dir_okay=False), help="CSV log [default: <ckpt-dir>/train_log.csv].")
@click.option("--train-tokens", default=None, type=click.IntRange(min=2), help="Use only the first N training tokens.")
@click.option("--valid-tokens", default=None, type=click.IntRange(min=2), help="Use only the first N validation tokens.")
@click.option("--max-steps", default=None, type=click.IntRange(min=1), help="At most N steps per epoch (smoke tests).")
@click.option("--log-interval", default=100, type=click.IntRange(min=0), help="Also log mean train loss every N steps (0: off).")
@click.option("--eval-batch-size", default=10, type=click.IntRange(min=1))
@click.option("--threads", default=1, type=click.IntRange(min=1), help="torch threads per process.")
@click.option("--test/--no-test", "run_test", default=False, help="Report test perplexity of the final model (batch 1).")
@click.option("--bf16-decoder/--fp32-decoder", default=False,
              help="Run the decoder matmul in bfloat16 while training (faster on CPUs with AVX512-BF16).")
@click.option("--progress/--no-progress", default=True, help="tqdm progress bar (rank 0).")
@click.option("--json", "as_json", is_flag=True,
              help="At the end, print one JSON object: the output checkpoint and its final figures (meta).")
@click.option("-v", "--verbose", is_flag=True, help="Also print the resolved training configuration.")
@click.option("--quiet", "-q", is_flag=True, help="Nothing on stderr but errors (no progress bar, no log lines).")
def train(data, data_old, as_json, verbose, quiet, output, force, model_type, emb, projection, projection_activation, hidden, epochs, batch_size, bptt, lr, min_lr_ratio, warmup_steps,
          weight_decay, input_wd_mult, act_reg, clip, dropout, dropout_emb, dropout_words, dropconnect, dampening, support,
          thr_init, prune_schedule, finetune_epochs, finetune_lr, seed, resume, ckpt_dir, log, train_tokens,
          valid_tokens, max_steps, log_interval, eval_batch_size, threads, run_test, bf16_decoder, progress):
    """Train an EGRU language model (truncated BPTT, AdamW, surrogate gradients), then prune it iteratively
    (global magnitude over all RNN weights) with fine-tuning. Works under
    `torchrun --nproc_per_node N -m egru_compile.train ...` (DDP, gloo)."""
    if data_old is not None:
        if data is not None:
            raise click.UsageError("give --data-dir only (--data is its deprecated spelling)")
        if not quiet:
            click.echo("warning: `train --data DIR` is deprecated: use --data-dir DIR (--data names a file in "
                       "the other commands)", err=True)
        data = data_old
    if data is None:
        raise click.UsageError("Missing option '--data-dir'.")
    if quiet:
        progress = False
    if len(thr_init) != 2 or not 0.0 <= thr_init[0] <= thr_init[1] <= 1.0:
        raise click.BadParameter("--thr-init needs LO,HI with 0 <= LO <= HI <= 1")
    if any(not 0.0 < s < 1.0 for s in prune_schedule) or prune_schedule != sorted(prune_schedule):
        raise click.BadParameter("--prune-schedule needs increasing fractions in (0, 1)")
    if hidden[-1] != emb and not projection:
        raise click.BadParameter(f"last hidden size {hidden[-1]} must equal --emb {emb} (tied decoder; or pass "
                                 "--projection)")
    sizes = [emb] + list(hidden)
    params = sum(n_in * 3 * h + 3 * h * h for n_in, h in zip(sizes, hidden)) + (emb * hidden[-1] if projection else 0)
    if params > MAX_PARAMETERS:
        raise click.BadParameter(f"--emb {emb} --hidden {','.join(map(str, hidden))} make {params:,} recurrent "
                                 f"weights (at most {MAX_PARAMETERS:,})")
    if projection and model_type != "egru":
        raise click.BadParameter("--projection is implemented for --model egru only")
    if prune_schedule and model_type != "egru":
        raise click.BadParameter("--prune-schedule is implemented for --model egru only")
    from ..data import DataError
    from ..frontend.checkpoint import CheckpointError
    from .trainer import TrainConfig, run_training
    cfg = TrainConfig(data=data, output=output, model=model_type, emb=emb, projection=projection,
                      projection_activation=projection_activation, hidden=hidden, epochs=epochs,
                      batch_size=batch_size, bptt=bptt, lr=lr, min_lr_ratio=min_lr_ratio, warmup_steps=warmup_steps,
                      weight_decay=weight_decay, input_wd_mult=input_wd_mult, act_reg=act_reg, clip=clip, dropout=dropout, dropout_emb=dropout_emb,
                      dropout_words=dropout_words, dropconnect=dropconnect, dampening=dampening, support=support,
                      thr_init=tuple(thr_init), prune_schedule=prune_schedule, finetune_epochs=finetune_epochs,
                      finetune_lr=finetune_lr, seed=seed, resume=resume, log=log, ckpt_dir=ckpt_dir,
                      train_tokens=train_tokens, valid_tokens=valid_tokens, max_steps=max_steps, log_interval=log_interval,
                      eval_batch_size=eval_batch_size, threads=threads, progress=progress, test=run_test,
                      bf16_decoder=bf16_decoder)
    _check_train_paths(cfg, force)
    try:
        if verbose and not quiet:
            from dataclasses import asdict
            click.echo("config: " + json.dumps(asdict(cfg), sort_keys=True, default=str), err=True)
        run_training(cfg, echo=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)))
        if as_json and os.environ.get("RANK", "0") == "0":          # (torchrun: rank 0 prints)
            click.echo(json.dumps(_final_json(output), sort_keys=True, default=str))
    except (DataError, CheckpointError, ValueError, FloatingPointError) as e:
        raise click.ClickException(str(e)) from None
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def _final_json(output) -> dict:
    """{"output", "format", "config", and the checkpoint's meta (valid_ppl, test_ppl with --test, sparsity,
    activity, dynamic_macs_per_token, elapsed_s, tokens_seen ...) minus the training config}."""
    import torch
    obj = torch.load(output, map_location="cpu", weights_only=True)
    meta = {k: v for k, v in dict(obj.get("meta") or {}).items() if k != "train_config"}
    return {"output": str(output), "format": obj.get("format"), "config": obj.get("config")} | meta
