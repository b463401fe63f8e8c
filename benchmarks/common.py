"""What the benchmarks share: random pruned models (`build_model`), thresholds calibrated to a target activity
(`calibrate` on the PyTorch model, `calibrate_runner` on a TVM step runner), the RNN stack without its decoder
(`strip_decoder`), PTB vocabularies and random checkpoints, and the interleaved timer (`rotations`, `interleaved`,
`interleaved_steps`, `median_times`): every round runs each contender once, starting one further along the list
each round, so load from other processes falls on all of them alike."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import prune

from egru_compile.ir import Graph

# benchmarks time real compiles and run apart from the user's TVM compile cache (EGRU_COMPILE_CACHE=DIR to use one)
os.environ.setdefault("EGRU_COMPILE_CACHE", "off")
from egru_compile.model import EGRUConfig, EGRULanguageModel
from egru_compile.passes.utils import remove_dead_nodes


# ----------------------------------------------------------------------------------------------- models
def build_model(vocab, emb, hidden, sparsity, seed=0) -> EGRULanguageModel:
    torch.manual_seed(seed)
    m = EGRULanguageModel(EGRUConfig(vocab, emb, list(hidden)))
    with torch.no_grad():
        for layer in m.rnns:
            layer.bias.normal_(0, 0.1)
            layer.recurrent_bias.normal_(0, 0.1)
    for layer in m.rnns:
        for name in ("kernel", "recurrent_kernel"):
            prune.l1_unstructured(layer, name, amount=sparsity)
            prune.remove(layer, name)
    return m.eval()


@torch.no_grad()
def layer_activity(model, tokens) -> np.ndarray:
    state = model.init_state(1)
    act = np.zeros(len(model.rnns))
    for t in tokens:
        _, state = model.step(torch.tensor([int(t)]), state)
        act += [float((y != 0).float().mean()) for _, y in state]
    return act / len(tokens)


@torch.no_grad()
def calibrate(model, target: float, tokens, iters: int = 14) -> list[float]:
    """Per-layer scalar threshold (layer by layer, bisection) giving mean activity ~= target."""
    thrs = []
    for l, layer in enumerate(model.rnns):
        lo, hi = 0.0, 1.0
        for _ in range(iters):
            mid = (lo + hi) / 2
            layer.thr.fill_(mid)
            a = layer_activity(model, tokens)[l]
            lo, hi = (mid, hi) if a > target else (lo, mid)
        layer.thr.fill_((lo + hi) / 2)
        thrs.append((lo + hi) / 2)
    return thrs


def strip_decoder(graph: Graph) -> Graph:
    """The step without its decoder: 'logits' := the last layer's events (RNN stack only)."""
    g = graph.clone()
    ys = [v for v in g.outputs if v.meta.get("role") == "state_out" and v.meta.get("kind") == "y"]
    last = max(ys, key=lambda v: v.meta["layer"])
    zero = g.const(np.zeros((), np.float32), name="zero")
    out = g.op("add", last, zero, name="rnn_out")
    out.meta["role"] = "logits"
    g.outputs[0] = out
    remove_dead_nodes(g)
    return g


def calibrate_runner(runner, target, toks, steps=40, iters=12):
    """One scalar threshold per layer (in layer order) so that the mean activity is ~target."""
    thr = []
    for l, h in enumerate(runner.spec.hidden_sizes):
        lo, hi = 0.0, 2.0
        for _ in range(iters):
            mid = (lo + hi) / 2
            runner.views[f"thr{l}"][:] = mid
            runner.reset()
            acts = []
            for i in range(steps):
                runner.step(int(toks[i]), copy=False)
                if i >= 10:
                    acts.append(runner.activity()[l])
            lo, hi = (mid, hi) if np.mean(acts) > target else (lo, mid)
        thr.append(mid)
    return thr


def ptb_vocab(ptb: Path):
    from egru_compile.data import Vocabulary
    return Vocabulary.from_train_file(ptb / "ptb.train.txt")


def random_checkpoint(path: Path, vocab, emb: int, hidden: list[int], activity: float) -> Path:
    from egru_compile.frontend import save_checkpoint
    model = build_model(len(vocab), emb, hidden, 0.85)
    calibrate(model, activity, np.random.default_rng(0).integers(0, len(vocab), 60))
    save_checkpoint(path, model, vocab)
    return path


# ----------------------------------------------------------------------------------------------- timing
def rotations(names, rounds: int):
    """The order of each round: `names` rotated by one more place every round."""
    names = list(names)
    for r in range(rounds):
        k = r % len(names) if names else 0
        yield names[k:] + names[:k]


def interleaved(fns: dict, rounds: int, clock=time.perf_counter) -> dict:
    """name -> fn(): seconds of each call, `rounds` rounds in rotated order ({name: [seconds, ...]})."""
    res: dict = {n: [] for n in fns}
    for order in rotations(fns, rounds):
        for n in order:
            t0 = clock()
            fns[n]()
            res[n].append(clock() - t0)
    return res


def median_times(fns: dict, rounds: int) -> dict:
    """{name: median seconds of fn()} over `rounds` interleaved rounds."""
    return {n: float(np.median(v)) for n, v in interleaved(fns, rounds).items()}


def interleaved_steps(fns: dict, n_tokens: int, rounds: int, burn: int = 10, clock=time.perf_counter) -> dict:
    """name -> (reset(), step(i)): per-step seconds of steps burn .. burn + n_tokens - 1 after a reset, every
    round in rotated order ({name: [seconds, ...]}, all rounds)."""
    res: dict = {n: [] for n in fns}
    for order in rotations(fns, rounds):
        for n in order:
            reset, step = fns[n]
            reset()
            for i in range(burn):
                step(i)
            ts = res[n]
            for i in range(burn, burn + n_tokens):
                t0 = clock()
                step(i)
                ts.append(clock() - t0)
    return res


# ----------------------------------------------------------------------------------------------- quiet moments
def busy_cores(dt: float = 0.3) -> float:
    """Cores busy (all processes, from /proc/stat) over the next `dt` seconds, while this one sleeps."""
    def read():
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(v), v[3] + v[4]
    (t0, i0), _, (t1, i1) = read(), time.sleep(dt), read()
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


#: a quiet moment: the other processes keep fewer cores than this busy (over `busy_cores`' 0.3 s)
QUIET_CORES = 0.15


def wait_idle(limit: float, seconds: float) -> bool:
    """Wait up to `seconds` for a moment when the other processes keep less than `limit` cores busy."""
    end = time.time() + seconds
    while time.time() < end:
        if busy_cores() < limit:
            return True
    return False


# ------------------------------------------------------------------------------------------ shared CLI options
def add_model_args(ap) -> None:
    """The random PTB-size model's options (embedding, hidden sizes, RNN weight sparsity, target activity)."""
    ap.add_argument("--emb", type=int, default=750)
    ap.add_argument("--hidden", default="1350,1350,750")
    ap.add_argument("--sparsity", type=float, default=0.85)
    ap.add_argument("--activity", type=float, default=0.2)


def add_wait_idle_arg(ap, when: str) -> None:
    """``--wait-idle S``: before `when`, wait up to S seconds for a quiet moment (`QUIET_CORES`)."""
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                    help=f"before {when} wait up to S seconds for a moment when other processes keep under "
                         f"{QUIET_CORES:g} cores busy (a shared machine's quiet moments)")
