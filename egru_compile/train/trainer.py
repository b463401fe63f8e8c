"""Word-level LM training for EGRU (and dense GRU/LSTM baselines): AdamW, surrogate gradients, dropouts,
DropConnect, activity regularisation, truncated BPTT, iterative global magnitude pruning with fine-tuning,
project-format checkpoints, resume, CSV log, DDP (gloo/CPU) under torchrun.

Plan of a run = stages: stage 0 trains the dense model for ``epochs`` epochs; stage k >= 1 prunes to
``prune_schedule[k-1]`` (global magnitude over all RNN kernels) then fine-tunes ``finetune_epochs`` epochs.
Each stage restarts warmup + cosine LR decay. After every epoch ``<ckpt_dir>/last.pt`` (+ ``last.state.pt``:
optimizer) is written, after every stage ``<ckpt_dir>/dense.pt`` or ``<ckpt_dir>/sparsity_XX.pt``, at the end
``output``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..data import DataError
from ..fsio import atomic_write
from ..model import EGRUConfig, EGRULanguageModel
from .baselines import DenseRNNConfig, DenseRNNLanguageModel, dense_forward
from .data import iter_bptt, load_corpus, num_bptt_steps, shard_streams
from .forward import Regularisation, detach_state, egru_forward
from .evaluation import _all_sum, _dist_setup, evaluate, evaluate_test  # noqa: F401 (evaluate_test: API)
from .log import CsvLog, make_dirs, resume_point, stage_name
from .checkpoints import load_any, save_any
from .optim import lr_at, make_optimizer
from .prune import global_sparsity, masked_fraction, prune_to


@dataclass
class TrainConfig:
    data: str
    output: str
    model: str = "egru"                 # egru | gru | lstm
    emb: int = 128
    projection: bool = False            # EvNN's projection decoder E · a(P · y_last + p) + b
    projection_activation: str = "identity"   # a: identity (EvNN >= 0.2.0) or relu (EvNN's 2023 code)
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    epochs: int = 10
    batch_size: int = 32                # per process
    bptt: int = 70
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.1           # AdamW (decoupled); matrices only, not biases / thresholds
    input_wd_mult: float = 1.0          # x weight decay on layer 0's input kernel (always-on MACs)
    act_reg: float = 0.0                # x MAC-weighted mean event rate (surrogate gradient)
    clip: float = 0.5
    dropout: float = 0.1
    dropout_emb: float = 0.1
    dropout_words: float = 0.0
    dropconnect: float = 0.1
    dampening: float = 0.7
    support: float = 1.0
    thr_init: tuple[float, float] = (0.0, 0.5)
    prune_schedule: list[float] = field(default_factory=list)
    finetune_epochs: int | list[int] = 1  # per pruning step (one value for all, or one per step)
    finetune_lr: float | None = None    # default: lr / 2
    seed: int = 1111
    resume: str | None = None
    log: str | None = None              # CSV; default <ckpt_dir>/train_log.csv
    ckpt_dir: str | None = None         # default <output stem>_ckpts next to output
    train_tokens: int | None = None
    valid_tokens: int | None = None
    max_steps: int | None = None        # cap on steps per epoch (smoke tests)
    eval_batch_size: int = 10
    threads: int = 1
    progress: bool = True
    test: bool = False                  # evaluate the final model on the test split (rank 0, batch 1)
    log_interval: int = 100             # CSV "train" rows every N steps (0: epoch rows only)
    bf16_decoder: bool = False          # decoder matmul in bfloat16 during training (~25 % faster on AVX512-BF16)

    def resolved_ckpt_dir(self) -> Path:
        if self.ckpt_dir:
            return Path(self.ckpt_dir)
        out = Path(self.output)
        return out.with_name(out.stem + "_ckpts")

    def resolved_log(self) -> Path:
        return Path(self.log) if self.log else self.resolved_ckpt_dir() / "train_log.csv"


class _Step(nn.Module):
    """What DDP wraps: one training window -> (cross-entropy, activity term, new state, activity)."""

    def __init__(self, model, reg: Regularisation, act_weights: list[float] | None, bf16_decoder: bool = False):
        super().__init__()
        self.model = model
        self.bf16_decoder = bf16_decoder
        self.reg = reg
        self.act_weights = act_weights

    def forward(self, inp, tgt, state):
        if isinstance(self.model, EGRULanguageModel):
            out = egru_forward(self.model, inp, state, self.reg, training=self.training,
                               bf16_decoder=self.bf16_decoder)
        else:
            out = dense_forward(self.model, inp, state, self.reg, training=self.training,
                                bf16_decoder=self.bf16_decoder)
        ce = F.cross_entropy(out.logits.view(-1, out.logits.size(-1)), tgt.reshape(-1))
        if out.spikes and self.act_weights:
            act_term = sum(w * s for w, s in zip(self.act_weights, out.spikes))
        else:
            act_term = ce.new_zeros(())
        return ce, act_term, out.state, out.active


# ------------------------------------------------------------------------------------------- helpers
def build_model(cfg: TrainConfig, vocab_size: int):
    if cfg.model == "egru":
        model = EGRULanguageModel(EGRUConfig(vocab_size, cfg.emb, list(cfg.hidden), cfg.dampening, cfg.support,
                                             projection=cfg.projection,
                                             projection_activation=cfg.projection_activation))
        lo, hi = cfg.thr_init
        with torch.no_grad():
            for layer in model.rnns:
                layer.thr.uniform_(lo, hi)
        return model
    return DenseRNNLanguageModel(DenseRNNConfig(vocab_size, cfg.emb, list(cfg.hidden), cfg.model))


def activity_weights(model) -> list[float]:
    """Per-layer weight of the mean event rate in the MAC-weighted activity term: a unit's fan-out is its
    recurrent row (3h) plus its row of the next layer's kernel; the weights sum to 1."""
    hs = model.config.hidden_sizes
    costs = [h * (3 * h + (3 * hs[i + 1] if i + 1 < len(hs) else 0)) for i, h in enumerate(hs)]
    return [c / sum(costs) for c in costs]


# ------------------------------------------------------------------------------------------- main
def run_training(cfg: TrainConfig, echo=print, *, replace_log: bool = False):
    """Run the whole plan; returns the trained model (identical on every DDP rank).

    An existing log is appended to (it must be a train log of the same layer count), or replaced with
    `replace_log`. The checkpoint folder's config.json is written with the run's first checkpoint; a run that
    fails or is interrupted before its first checkpoint removes the folders and the log it created, so it
    leaves nothing behind (the checks that an existing folder or log may be used are `train`'s)."""
    rank, world = _dist_setup()
    torch.set_num_threads(max(1, cfg.threads))
    is_main = rank == 0
    say = echo if is_main else (lambda *a, **k: None)
    ckpt_dir = cfg.resolved_ckpt_dir()
    # every refusal before anything is written (the checkpoint folder, its config.json, the CSV log)
    ft = cfg.finetune_epochs if isinstance(cfg.finetune_epochs, (list, tuple)) else [cfg.finetune_epochs]
    if len(ft) == 1:
        ft = list(ft) * len(cfg.prune_schedule)
    if len(ft) != len(cfg.prune_schedule):
        raise ValueError(f"--finetune-epochs gives {len(ft)} values for {len(cfg.prune_schedule)} pruning steps")

    progress = {"stage": 0, "epochs_done": 0}
    vocab = None
    model = None
    resume_state = None
    if cfg.resume:
        model, vocab, meta = load_any(cfg.resume)
        kind = "egru" if isinstance(model, EGRULanguageModel) else model.config.cell
        if kind != cfg.model:
            raise ValueError(f"--resume {cfg.resume} is a {kind} model, not {cfg.model}")
        model.train()
        progress = dict(meta.get("progress") or {"stage": 0, "epochs_done": 0})
        st_path = Path(cfg.resume).with_suffix(".state.pt")
        if st_path.exists():
            resume_state = torch.load(st_path, map_location="cpu", weights_only=True)
        say(f"resumed {cfg.resume}: stage {progress['stage']}, {progress['epochs_done']} epoch(s) done, "
            f"sparsity {masked_fraction(model) if isinstance(model, EGRULanguageModel) else 0.0:.3f}")
    corpus = load_corpus(cfg.data, vocab, cfg.train_tokens, cfg.valid_tokens)
    vocab = corpus.vocab
    for what, toks, n, flags in (("training", corpus.train, cfg.batch_size, "--train-tokens / --batch-size"),
                                 ("validation", corpus.valid, cfg.eval_batch_size,
                                  "--valid-tokens / --eval-batch-size")):
        if toks.numel() // max(n, 1) < 2:          # what batchify needs: two tokens per stream
            raise DataError(f"the {what} text has {toks.numel()} tokens, too few for {n} streams of at least 2 "
                            f"({flags})")
    if model is None:
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, len(vocab))
    if cfg.prune_schedule and not isinstance(model, EGRULanguageModel):
        raise ValueError("pruning is implemented for EGRU models only")
    if cfg.input_wd_mult != 1.0 and not isinstance(model, EGRULanguageModel):
        raise ValueError("--input-wd-mult applies to EGRU models only (the baselines have no rnns.0.kernel)")
    if world > 1:  # identical start on every rank (DDP also broadcasts, but masks/thr are set up before)
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t, 0)

    n_layers = len(model.config.hidden_sizes)
    created: list[Path] = []            # what this run created: removed again if it ends before a checkpoint
    try:
        if is_main:
            created += make_dirs(ckpt_dir)
        log = CsvLog(cfg.resolved_log(), n_layers, is_main, replace=replace_log)
        created += log.created
        config_json = json.dumps(
            {"train": asdict(cfg), "model": model.config.to_dict(), "model_type": cfg.model, "world_size": world,
             "torch": torch.__version__, "train_tokens": int(corpus.train.numel()),
             "valid_tokens": int(corpus.valid.numel())}, indent=2, default=str)
        return _run_stages(cfg, model, vocab, corpus, ft, progress, resume_state, log, config_json, created,
                           rank, world, say)
    except BaseException:
        _remove_created(created)        # empty once the run's first checkpoint is written
        raise


def _remove_created(paths: list[Path]) -> None:
    """Remove the files and (now empty) folders of `paths` that this run created, innermost first."""
    for p in reversed(paths):
        try:
            if p.is_dir() and not p.is_symlink():
                p.rmdir()
            else:
                p.unlink()
        except OSError:
            pass


def _run_stages(cfg, model, vocab, corpus, ft, progress, resume_state, log, config_json, created, rank, world,
                say):
    is_main = rank == 0
    ckpt_dir = cfg.resolved_ckpt_dir()
    train_src = shard_streams(corpus.train, cfg.batch_size, rank, world)
    steps_per_epoch = num_bptt_steps(train_src, cfg.bptt)
    if cfg.max_steps:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    first_save = [True]

    def save_ckpt(path: Path, meta: dict, state: dict | None = None) -> None:
        """A checkpoint in the checkpoint folder; the run's first also writes config.json (and from then on the
        run's files stay when it fails: they are resumable)."""
        if first_save[0]:
            if not (ckpt_dir / "config.json").exists():
                created.append(ckpt_dir / "config.json")
            atomic_write(ckpt_dir / "config.json", config_json)
        save_any(path, model, vocab, meta)
        if state is not None:
            atomic_write(ckpt_dir / "last.state.pt", lambda tmp: torch.save(state, tmp))
        created.clear()                 # the run's first checkpoint is written: nothing is removed any more
        first_save[0] = False

    reg = Regularisation(cfg.dropout, cfg.dropout_emb, cfg.dropout_words, cfg.dropconnect)
    act_w = activity_weights(model) if (isinstance(model, EGRULanguageModel) and cfg.act_reg > 0) else None
    if act_w:
        act_w = [cfg.act_reg * w for w in act_w]
    stages = [(0.0, cfg.epochs, cfg.lr)] + [(float(s), int(k), cfg.finetune_lr or cfg.lr / 2)
                                            for s, k in zip(cfg.prune_schedule, ft)]
    t_start = time.time()
    tokens_seen = 0
    last_valid = None

    def meta_for(si, epochs_done, valid):
        return {"model_type": cfg.model, "train_config": asdict(cfg), "world_size": world,
                "progress": {"stage": si, "epochs_done": epochs_done},
                "target_sparsity": stages[si][0] if si < len(stages) else None,
                "sparsity": masked_fraction(model) if isinstance(model, EGRULanguageModel) else 0.0,
                "valid_ppl": valid["ppl"] if valid else None,
                "activity": valid["activity"] if valid else None,
                "dynamic_macs_per_token": valid["dynamic_macs_per_token"] if valid else None,
                "elapsed_s": time.time() - t_start}

    si0, e0 = resume_point(progress, [n for _, n, _ in stages])
    for si in range(si0, len(stages)):
        target, n_epochs, base_lr = stages[si]
        start_epoch = e0 if si == si0 else 0
        if si > 0 and start_epoch == 0:
            info = prune_to(model, target)
            say(f"pruned to global sparsity {info['sparsity']:.4f} (target {target}): "
                + ", ".join(f"{k} {v:.3f}" for k, v in info["per_tensor"].items()))
            v = evaluate(model, corpus.valid, cfg.eval_batch_size)
            say(f"  after pruning, before fine-tuning: valid ppl {v['ppl']:.2f}")
            log.write(kind="pruned", stage=stage_name(target), target_sparsity=target,
                      sparsity=global_sparsity(model), epoch=0, valid_loss=v["loss"], valid_ppl=v["ppl"],
                      dynamic_macs_per_token=v["dynamic_macs_per_token"],
                      macs_reduction=v["static_dense_macs"] / v["dynamic_macs_per_token"],
                      elapsed_s=time.time() - t_start, **{f"activity_{i}": a for i, a in enumerate(v["activity"])})
            last_valid = v
        opt = make_optimizer(model, base_lr, cfg.weight_decay, cfg.input_wd_mult)
        if resume_state is not None and si == si0 and start_epoch > 0:
            try:
                opt.load_state_dict(resume_state["optimizer"])
            except (ValueError, KeyError) as e:
                say(f"note: optimizer state not restored ({e}); continuing with a fresh optimizer")
        resume_state = None
        step_mod = _Step(model, reg, act_w, cfg.bf16_decoder)
        runner = step_mod
        if world > 1:
            runner = nn.parallel.DistributedDataParallel(step_mod)
        runner.train()
        total_steps = max(1, n_epochs * steps_per_epoch)
        params = [p for p in model.parameters() if p.requires_grad]
        for epoch in range(start_epoch, n_epochs):
            torch.manual_seed(cfg.seed + 100003 * rank + 1009 * si + epoch + 1)
            state = model.init_state(cfg.batch_size)
            t0 = time.time()
            loss_sum, act_sum, n_steps, n_tok = 0.0, 0.0, 0, 0
            iv_loss, iv_n = 0.0, 0
            bar = None
            if is_main and cfg.progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=steps_per_epoch, desc=f"{stage_name(target)} ep {epoch + 1}/{n_epochs}",
                           unit="step", file=sys.stderr, dynamic_ncols=True, leave=False,
                           mininterval=0.5 if sys.stderr.isatty() else 60)
            for i, (inp, tgt) in enumerate(iter_bptt(train_src, cfg.bptt)):
                if i >= steps_per_epoch:
                    break
                lr = lr_at(epoch * steps_per_epoch + i, total_steps, base_lr, cfg.warmup_steps, cfg.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = lr
                ce, act_term, state, active = runner(inp, tgt, state)
                loss = ce + act_term
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                if isinstance(model, EGRULanguageModel):  # keep thresholds in EvNN's [0, 1] (projected step)
                    with torch.no_grad():
                        for layer in model.rnns:
                            layer.thr.clamp_(0.0, 1.0)
                state = detach_state(state)
                ce_val = float(ce.detach())
                if not math.isfinite(ce_val):
                    raise FloatingPointError(f"loss became {ce_val} at stage {si} epoch {epoch} step {i}")
                loss_sum += ce_val
                act_sum += sum(active) / len(active)
                n_steps += 1
                n_tok += inp.numel() * world
                iv_loss += ce_val
                iv_n += 1
                if cfg.log_interval and (i + 1) % cfg.log_interval == 0:
                    log.write(kind="train", stage=stage_name(target), target_sparsity=target, epoch=epoch + 1,
                              step=epoch * steps_per_epoch + i + 1, lr=lr, train_loss=iv_loss / iv_n,
                              train_ppl=math.exp(iv_loss / iv_n), act_term=act_sum / n_steps,
                              tokens_per_s=n_tok / (time.time() - t0), elapsed_s=time.time() - t_start)
                    iv_loss, iv_n = 0.0, 0
                if bar is not None:
                    bar.update(1)
                    if i % 10 == 0:
                        bar.set_postfix(loss=f"{loss_sum / n_steps:.3f}", act=f"{act_sum / n_steps:.3f}",
                                        lr=f"{lr:.2e}", refresh=False)
            if bar is not None:
                bar.close()
            train_loss = _all_sum([loss_sum / max(1, n_steps)])[0] / world
            dt = time.time() - t0
            tokens_seen += n_tok
            valid = evaluate(model, corpus.valid, cfg.eval_batch_size)
            last_valid = valid
            macs_red = valid["static_dense_macs"] / valid["dynamic_macs_per_token"]
            say(f"[{stage_name(target)}] epoch {epoch + 1}/{n_epochs}: train loss {train_loss:.3f} "
                f"(ppl {math.exp(train_loss):.1f}), valid ppl {valid['ppl']:.2f}, activity "
                + "/".join(f"{a:.3f}" for a in valid["activity"])
                + f", MACs/token {valid['dynamic_macs_per_token']:.0f} ({macs_red:.1f}x below dense), "
                  f"{n_tok / dt:.0f} tok/s, {dt / 60:.1f} min")
            log.write(kind="epoch", stage=stage_name(target), target_sparsity=target,
                      sparsity=global_sparsity(model) if isinstance(model, EGRULanguageModel) else 0.0,
                      epoch=epoch + 1, step=(epoch + 1) * steps_per_epoch, lr=lr, train_loss=train_loss,
                      train_ppl=math.exp(train_loss), act_term=act_sum / max(1, n_steps),
                      valid_loss=valid["loss"], valid_ppl=valid["ppl"],
                      dynamic_macs_per_token=valid["dynamic_macs_per_token"], macs_reduction=macs_red,
                      tokens_per_s=n_tok / dt, elapsed_s=time.time() - t_start,
                      **{f"activity_{i}": a for i, a in enumerate(valid["activity"])})
            if is_main:
                save_ckpt(ckpt_dir / "last.pt", meta_for(si, epoch + 1, valid),
                          {"optimizer": opt.state_dict(), "progress": {"stage": si, "epochs_done": epoch + 1}})
        if is_main:
            if last_valid is None:
                last_valid = evaluate(model, corpus.valid, cfg.eval_batch_size)
            save_ckpt(ckpt_dir / f"{stage_name(target)}.pt", meta_for(si, n_epochs, last_valid))
        elif last_valid is None:
            last_valid = evaluate(model, corpus.valid, cfg.eval_batch_size)
        if world > 1:
            dist.barrier()
    final_si = len(stages) - 1
    if is_main:
        meta = meta_for(final_si, stages[final_si][1], last_valid)
        meta["tokens_seen"] = tokens_seen
        if cfg.test:
            test = evaluate_test(model, cfg.data, vocab)
            meta["test_ppl"] = test["ppl"]
            say(f"test ppl {test['ppl']:.2f} (batch 1, {test['tokens']} tokens)")
        make_dirs(Path(cfg.output).absolute().parent)
        save_any(Path(cfg.output), model, vocab, meta)
        say(f"wrote {cfg.output}")
    if world > 1:
        dist.barrier()
    return model
