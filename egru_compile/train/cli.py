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


def _items(value) -> list[str]:
    """The comma-separated items of an option value; an empty item (``32,,16``, ``0.5,``) is refused."""
    items = [v.strip() for v in str(value).split(",")]
    if any(not v for v in items):
        raise click.BadParameter(f"empty item in {value!r}" if str(value).strip() else "empty value")
    return items


def _epochs(ctx, param, value):
    items = _items(value)
    try:
        vals = [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {value!r}") from None
    if any(v < 0 for v in vals):
        raise click.BadParameter(f"epochs cannot be negative: {value!r}")
    return vals


def _floats(ctx, param, value):
    if value is None or value == "":
        return []
    items = _items(value)
    try:
        return [float(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


def _ints(ctx, param, value):
    items = _items(value)
    try:
        out = [int(v) for v in items]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) <= 0:
        raise click.BadParameter("expected positive sizes, e.g. 256,128")
    return out


class _Refused(click.ClickException):
    """A refusal found after parsing: one ``error:`` line, exit `exit_code` (2: a usage error)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _usage(message: str) -> _Refused:
    return _Refused(message, 2)


def _resume_header(path) -> dict | None:
    """The --resume checkpoint's {"kind": egru|gru|lstm, "config", "meta"} (weights_only load, nothing
    built), or None when unreadable (the run then fails before writing anything, with its own reason)."""
    import torch

    from .baselines import BASELINE_FORMAT
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint fails later with its own one-line reason
        return None
    if not isinstance(obj, dict):
        return None
    config = obj.get("config") if isinstance(obj.get("config"), dict) else {}
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    kind = config.get("cell") if obj.get("format") == BASELINE_FORMAT else "egru"
    return {"kind": kind, "config": config, "meta": meta}


#: the options whose contradictions `train` refuses (see `_given_options`)
_CHECKED_OPTIONS = ("model_type", "emb", "hidden", "projection", "projection_activation", "prune_schedule",
                    "finetune_epochs", "finetune_lr", "input_wd_mult", "act_reg", "dampening", "support", "thr_init")


def _given_options(ctx, values: dict) -> set[str]:
    """The options given (command line or environment) with a value other than their default: an option
    given with its default value changes nothing, so it contradicts nothing."""
    from click.core import ParameterSource
    out = set()
    for p in ctx.command.params:
        if p.name not in _CHECKED_OPTIONS or ctx.get_parameter_source(p.name) in (
                None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            continue
        if p.name == "model_type" or values.get(p.name) != p.process_value(ctx, p.get_default(ctx)):
            out.add(p.name)
    return out


def _flag(ctx, name: str) -> str:
    """The long flag of option `name` (``--input-wd-mult``), as --help shows it."""
    p = next(p for p in ctx.command.params if p.name == name)
    return max(p.opts, key=len)


def _check_resumed_sizes(resume, config: dict, given: set[str], emb, hidden, projection) -> None:
    """A resumed run keeps its checkpoint's model: a size given that differs from it is refused (exit 2)."""
    have = {"emb": config.get("embedding_size"), "hidden": config.get("hidden_sizes"),
            "projection": bool(config.get("projection", False))}
    for name, flag, value in (("emb", "--emb", emb), ("hidden", "--hidden", hidden),
                              ("projection", "--projection", projection)):
        if name in given and have[name] is not None and value != have[name]:
            show = (lambda v: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
            raise _usage(f"{flag} {show(value)} differs from the --resume {resume} model's {show(have[name])} (a "
                         f"resumed run keeps its model: leave {flag} out)")


def _continuing(cfg) -> bool:
    """Whether the run continues the run of its checkpoint folder: --resume names a checkpoint in it."""
    from pathlib import Path
    return bool(cfg.resume) and Path(cfg.resume).resolve().parent == cfg.resolved_ckpt_dir().resolve()


def _names(entries, at_most: int = 4) -> str:
    shown = ", ".join(entries[:at_most])
    return shown + (f" and {len(entries) - at_most} more" if len(entries) > at_most else "")


def _check_train_paths(cfg, force: bool = False, resumed: dict | None = None) -> bool:
    """Refuse, before anything is written, what would lose the user's files; -> whether an existing log is
    replaced (not appended to).

    No file train writes (-o, the log, the checkpoint folder's files) is an input: a file of --data, the
    --resume checkpoint (only the checkpoint folder's own last.pt may be resumed from and rewritten). An
    existing -o file is replaced only with --force. A checkpoint folder that already holds anything is used only
    when the run continues its run (--resume names a checkpoint in it) or with --force (then the files train
    writes there are replaced; nothing else in it is touched). An existing log is appended to when the run
    continues its checkpoint folder's run and it is a train log (its first line is the log's CSV header);
    otherwise it is refused, or replaced with --force."""
    from pathlib import Path

    from ..fsio import FileError, check_new_files, check_outputs
    from .log import is_train_log
    from .trainer import stage_name
    data = Path(cfg.data)
    inputs = [("--data file", p) for p in sorted(data.iterdir())[:10_000] if p.is_file()] if data.is_dir() else []
    if cfg.resume:
        inputs += [("--resume", cfg.resume), ("--resume state", Path(cfg.resume).with_suffix(".state.pt"))]
    ck = cfg.resolved_ckpt_dir()
    log = cfg.resolved_log()
    outputs = [("-o", cfg.output), ("--log", log), ("checkpoint", ck / "config.json")]
    stages = [0.0, *cfg.prune_schedule]                 # a resumed run rewrites no checkpoint of a stage it skips
    outputs += [("checkpoint", ck / f"{stage_name(t)}.pt") for t in stages[_first_stage(cfg, len(stages), resumed):]]
    continuing = _continuing(cfg)
    try:
        check_outputs(outputs, inputs)
        check_new_files([("-o", cfg.output)], force)
        resumable = {(ck / n).resolve() for n in ("last.pt", "last.state.pt")}
        check_outputs([(lbl, p) for lbl, p in [("checkpoint", ck / "last.pt"), ("checkpoint", ck / "last.state.pt")]],
                      [(lbl, p) for lbl, p in inputs if Path(p).resolve() not in resumable])
    except FileError as e:
        raise _Refused(str(e)) from None
    what = f"--ckpt-dir {ck}" if cfg.ckpt_dir else f"checkpoint folder {ck} (--ckpt-dir's default for -o {cfg.output})"
    if ck.exists() and not ck.is_dir():
        raise _Refused(f"{what} is not a folder")
    held = sorted(e.name + ("/" if e.is_dir() else "") for e in ck.iterdir()) if ck.is_dir() else []
    if held and not continuing and not force:
        resume = f", continue its run with --resume {ck / 'last.pt'}" if (ck / "last.pt").is_file() else ""
        raise _Refused(f"{what} already holds {_names(held)}: refusing to write into it (choose another "
                       f"--ckpt-dir{resume}, or pass --force to replace the files train writes there)")
    if not (log.exists() or log.is_symlink()):
        return False
    if log.is_dir():
        raise _Refused(f"--log {log} is a directory; give a file path")
    n_layers = len((resumed or {}).get("config", {}).get("hidden_sizes") or []) or None
    if continuing and is_train_log(log, n_layers):
        return False                                    # the continued run's own log: appended to
    if force:
        return True
    if continuing:
        raise _Refused(f"--log {log} is not the train log of the continued run (its first line is not the log's "
                       "CSV header): refusing to append to it (choose another --log, or pass --force to replace it)")
    if cfg.log:
        raise _Refused(f"--log {log} already exists: refusing to append to it or overwrite it (choose another "
                       "--log, or pass --force to replace it)")
    raise _Refused(f"log {log} already exists: refusing to overwrite it (choose another --log, or pass --force "
                   "to replace it)")


def _first_stage(cfg, n_stages: int, resumed: dict | None = None) -> int:
    """The first stage the run trains: 0, or after a --resume checkpoint's completed stage (`resume_point`, as
    the trainer continues: ``run.sh``'s pruning step resumes from ``<ckpt-dir>/dense.pt`` with --epochs 0)."""
    from .log import resume_point
    if not cfg.resume:
        return 0
    if resumed is None:
        resumed = _resume_header(cfg.resume)
    if resumed is None:
        return 0
    meta = resumed["meta"]
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
@click.option("--force", is_flag=True,
              help="Replace an existing -o file, --log file, and the files train writes in a --ckpt-dir that "
                   "already holds some (nothing else there is touched). Checked before training starts.")
@click.option("--model", "model_type", type=click.Choice(["egru", "gru", "lstm"]), default="egru",
              help="egru, or a dense GRU/LSTM baseline of the same shape (which refuses EGRU's own options: "
                   "--projection*, --prune-schedule, --input-wd-mult, --act-reg, --dampening, --support, --thr-init).")
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
              help="Continue from a checkpoint (e.g. <ckpt-dir>/last.pt; its .state.pt sibling restores the "
                   "optimizer). The run trains the checkpoint's model: --model, --emb, --hidden contradicting it "
                   "are refused.")
@click.option("--ckpt-dir", default=None, type=click.Path(file_okay=False),
              help="Per-epoch/per-stage checkpoints, config.json, log [default: <output stem>_ckpts]. A folder that "
                   "already holds anything is refused, unless --resume names a checkpoint in it (continuing that "
                   "run) or --force (replaces the files train writes there). A run stopped before its first "
                   "checkpoint removes the folder and log it created.")
@click.option("--log", "log", default=None, type=click.Path(dir_okay=False),
              help="CSV log [default: <ckpt-dir>/train_log.csv]. An existing file is refused unless --force "
                   "(replaced); a run continuing its --ckpt-dir's run (--resume DIR/last.pt) appends to it if it "
                   "is a train log (first line: the log's CSV header).")
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
def train(**options):
    """Train an EGRU language model (truncated BPTT, AdamW, surrogate gradients), then prune it iteratively
    (global magnitude over all RNN weights) with fine-tuning. Works under
    `torchrun --nproc_per_node N -m egru_compile.train ...` (DDP, gloo)."""
    try:
        return _train(**options)
    except KeyboardInterrupt:           # (click would print an empty line for it before its Abort)
        raise click.Abort() from None


def _train(data, data_old, as_json, verbose, quiet, output, force, model_type, emb, projection, projection_activation, hidden, epochs, batch_size, bptt, lr, min_lr_ratio, warmup_steps,
          weight_decay, input_wd_mult, act_reg, clip, dropout, dropout_emb, dropout_words, dropconnect, dampening, support,
          thr_init, prune_schedule, finetune_epochs, finetune_lr, seed, resume, ckpt_dir, log, train_tokens,
          valid_tokens, max_steps, log_interval, eval_batch_size, threads, run_test, bf16_decoder, progress):
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
    for flag, value in (("-o", output), ("--ckpt-dir", ckpt_dir), ("--log", log)):
        if value is not None and not str(value).strip():
            raise _usage(f"{flag} {value!r}: the {'folder' if flag == '--ckpt-dir' else 'file'} name is empty")
    if len(thr_init) != 2 or not 0.0 <= thr_init[0] <= thr_init[1] <= 1.0:
        raise click.BadParameter("--thr-init needs LO,HI with 0 <= LO <= HI <= 1")
    if any(not 0.0 < s < 1.0 for s in prune_schedule) or prune_schedule != sorted(prune_schedule):
        raise click.BadParameter("--prune-schedule needs increasing fractions in (0, 1)")
    ctx = click.get_current_context()
    given = _given_options(ctx, locals())
    resumed = _resume_header(resume) if resume else None
    if resumed is not None and resumed["kind"] in ("egru", "gru", "lstm"):
        if "model_type" in given and model_type != resumed["kind"]:
            raise _usage(f"--model {model_type}, but --resume {resume} is a --model {resumed['kind']} checkpoint (a "
                         f"resumed run keeps its model: give --model {resumed['kind']} or leave --model out)")
        model_type = resumed["kind"]                   # a resumed run trains the checkpoint's model
        _check_resumed_sizes(resume, resumed["config"], given, emb, hidden, projection)
    if hidden[-1] != emb and not projection and resumed is None:
        raise click.BadParameter(f"last hidden size {hidden[-1]} must equal --emb {emb} (tied decoder; or pass "
                                 "--projection)")
    sizes = [emb] + list(hidden)
    params = sum(n_in * 3 * h + 3 * h * h for n_in, h in zip(sizes, hidden)) + (emb * hidden[-1] if projection else 0)
    if params > MAX_PARAMETERS:
        raise click.BadParameter(f"--emb {emb} --hidden {','.join(map(str, hidden))} make {params:,} recurrent "
                                 f"weights (at most {MAX_PARAMETERS:,})")
    if model_type != "egru":
        # options of EGRU's events, thresholds, decoder projection and pruning: a dense baseline has none
        egru_only = [o for o in ("projection", "projection_activation", "prune_schedule", "input_wd_mult", "act_reg",
                                 "dampening", "support", "thr_init") if o in given]
        if egru_only:
            of = f" (--resume {resume} is a --model {model_type} checkpoint)" if resumed is not None else ""
            raise _usage(f"{_flag(ctx, egru_only[0])} applies to --model egru only, not {model_type}{of}")
    if "projection_activation" in given and not projection and resumed is None:
        raise _usage(f"--projection-activation {projection_activation} applies only with --projection")
    if not prune_schedule:
        for o in ("finetune_epochs", "finetune_lr"):
            if o in given:
                raise _usage(f"{_flag(ctx, o)} applies only with --prune-schedule (fine-tuning follows each pruning "
                             "step)")
    elif len(finetune_epochs) not in (1, len(prune_schedule)):
        raise _usage(f"--finetune-epochs gives {len(finetune_epochs)} values for {len(prune_schedule)} pruning steps "
                     "(give one value for all, or one per step)")
    from ..data import DataError
    from ..errors import EgruError
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
    replace_log = _check_train_paths(cfg, force, resumed)
    try:
        if verbose and not quiet:
            from dataclasses import asdict
            click.echo("config: " + json.dumps(asdict(cfg), sort_keys=True, default=str), err=True)
        run_training(cfg, echo=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)),
                     replace_log=replace_log)
        if as_json and os.environ.get("RANK", "0") == "0":          # (torchrun: rank 0 prints)
            click.echo(json.dumps(_final_json(output), sort_keys=True, default=str))
    except EgruError as e:
        raise _Refused(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, e.exit_code) from None
    except (DataError, CheckpointError, ValueError, FloatingPointError) as e:
        raise _Refused(" ".join(str(e).split())) from None
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def _final_json(output) -> dict:
    """{"output", "format", "config", and the checkpoint's meta (valid_ppl, test_ppl with --test, sparsity,
    activity, macs_per_token — the meta's dynamic_macs_per_token, named as eval names it ...) minus the config}."""
    import torch
    obj = torch.load(output, map_location="cpu", weights_only=True)
    meta = {k: v for k, v in dict(obj.get("meta") or {}).items() if k != "train_config"}
    meta |= {"macs_per_token": meta.pop("dynamic_macs_per_token")} if "dynamic_macs_per_token" in meta else {}
    return {"output": str(output), "format": obj.get("format"), "config": obj.get("config")} | meta
