"""Batched streams: tokens/s of `egru-compile eval --batch-size B` scoring for B = 1, 4, 16, 64.

PTB-size EGRU (embedding 750, hidden 1350/1350/750, vocabulary = the PTB training vocabulary, 10,000), random
weights magnitude-pruned to 85 % (`bench_onnx.build_model`, the builder `bench_batch1.py` and `bench_chip.py`
use), per-layer thresholds bisected for ~20 % activity on a random token stream (`bench_onnx.calibrate`);
evaluated on the first N tokens of the PTB test text. One thread everywhere (ORT intra-op 1,
TVM_NUM_THREADS=1). Each cell is `evaluate(runner, ids, batch_size=B)["tokens_per_second"]` — the whole
eval path: the B contiguous streams (`split_streams`), the runner's ``score_streams`` (token ids in, NLL
out, logits and log-softmax included), per-stream events/MACs bookkeeping.

Variants (same weights):

* ``onnx f32``  — default passes + the onnx target; B > 1 runs the batched model (`targets.onnx.batch`:
  symbolic B, per-stream gating, bit-exact per stream) in one ORT call per step;
* ``onnx int8`` — the same after ``quantize-int8``, ``weight_dtype=int8`` (int8 rows, per-row scale after the
  sum; its weights are the int8 ones);
* ``tvm``       — default passes + the tvm target; B > 1 runs the shared-read kernels (`targets/tvm/shared.py`:
  per step each active column's non-zeros read once for all the streams that need it, bit-identical to
  batch 1), 1 thread;
* ``tvm 2 threads`` — the same runner with ``eval --threads 2`` (the step's scatter, update and decoder split
  over two threads of TVM's pool; same results; `bench_threads.py` shows per phase and thread where its time
  goes and which CPUs the threads ran on);
* ``tvm per-stream`` — the same artifact with the previous batched kernels (`targets/tvm/streams.py`: each
  stream's batch-1 code in turn, layer-major; what a spec with ``interleave`` 8 runs), 1 thread (``--no-old``
  leaves it out);
* ``ort dense`` — the traced step lowered as a plain MatMul graph (`bench_batch1.DENSE_ORT`: no gating, no
  folding, dense initializers), batched the same way (B rows per MatMul: dense GEMMs).

Each (variant, B) cell is the best of ``--rounds`` runs (rounds interleaved over the variants; other
processes on a shared machine only slow a run down). The goal lines (issue 26): TVM at B = 16 >= 4x dense ORT
at B = 16 (1 thread each); TVM with 2 threads >= 1.7x TVM with 1 thread at B = 16.

    nice .venv/bin/python -m benchmarks.bench_batch [--tokens 4096] [--rounds 2] [--batches 1,4,16,64]

Writes benchmarks/results/batch.md (``--out``).
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from benchmarks.common import (QUIET_CORES, add_model_args, add_wait_idle_arg, build_model, calibrate,  # noqa: E402
                               wait_idle)

from egru_compile.data import Vocabulary  # noqa: E402
from egru_compile.frontend import trace_model  # noqa: E402
from egru_compile.passes import PassManager  # noqa: E402
from egru_compile.runtime import evaluate, open_artifact  # noqa: E402
from egru_compile.targets import get_target  # noqa: E402

PTB = ROOT / "data" / "ptb"        # shipped with the repository

#: the dense ORT peer's compile options (`bench_batch1.DENSE_ORT`, repeated so this script does not need TVM to import)
DENSE_ORT = {"event_gating": False, "event_decoder": False, "fold_embedding": False, "sparse_storage": False,
             "extras": False}


def build(tmp: Path, a) -> dict:
    vocab = Vocabulary.from_train_file(PTB / "ptb.train.txt")
    hidden = [int(h) for h in a.hidden.split(",")]
    model = build_model(len(vocab), a.emb, hidden, a.sparsity)
    thr = calibrate(model, a.activity, np.random.default_rng(0).integers(0, len(vocab), 60))
    raw = trace_model(model)
    opt = PassManager(None).run(raw)
    onnx_t = get_target("onnx")
    arts = {}
    t0 = time.perf_counter()
    onnx_t(opt, None, tmp / "onnx", {})
    arts["onnx f32"] = tmp / "onnx"
    q8 = PassManager(["quantize-int8"]).run(opt)
    onnx_t(q8, None, tmp / "onnx8", {"weight_dtype": "int8"})
    arts["onnx int8"] = tmp / "onnx8"
    if not a.no_tvm:
        (tmp / "tvm").mkdir()
        get_target("tvm")(opt, None, tmp / "tvm", {})
        arts["tvm"] = tmp / "tvm"
    onnx_t(raw, None, tmp / "dense", DENSE_ORT)
    arts["ort dense"] = tmp / "dense"
    print(f"# compiled {', '.join(arts)} in {time.perf_counter() - t0:.1f} s; thresholds "
          f"{', '.join(f'{t:.3f}' for t in thr)}", flush=True)
    del raw, opt, q8, model
    gc.collect()
    return {"vocab": vocab, "hidden": hidden, "arts": arts}


def batch1_overhead(runner, ids, n: int = 400, rounds: int = 5) -> tuple[float, float]:
    """Median µs per step of the batch-1 model (`step`) and of the batched model at B = 1 (`step_streams`),
    interleaved over `rounds` rounds of `n` tokens: what giving ``model.onnx`` itself the batch dimension
    would cost a batch-1 stream."""
    one, bat = [], []
    toks = [int(t) for t in ids[:n]]
    for _ in range(rounds):
        runner.reset()
        for t in toks:
            t0 = time.perf_counter()
            runner.step(t)
            one.append(time.perf_counter() - t0)
        runner.reset_streams(1)
        for t in toks:
            t0 = time.perf_counter()
            runner.step_streams([t])
            bat.append(time.perf_counter() - t0)
    return float(np.median(one) * 1e6), float(np.median(bat) * 1e6)


def goal_lines(res: dict, threads: int) -> list[str]:
    """The issue-26 goal lines at B = 16 from {(variant, B): tokens/s}: met / not met with the ratio."""
    out = []
    tvm, dense = res[("tvm", 16)], res[("ort dense", 16)]
    r = tvm / dense
    out.append(f"Goal: TVM at B=16 ≥ 4× dense ORT at B=16 (1 thread each): {'met' if r >= 4 else 'not met'} "
               f"({r:.2f}×; TVM {tvm:.0f} vs dense ORT {dense:.0f} tokens/s).")
    if threads > 1 and (f"tvm {threads} threads", 16) in res:
        t2 = res[(f"tvm {threads} threads", 16)]
        r = t2 / tvm
        out.append(f"Goal: TVM with {threads} threads ≥ 1.7× 1 thread at B=16: {'met' if r >= 1.7 else 'not met'} "
                   f"({r:.2f}×; {t2:.0f} vs {tvm:.0f} tokens/s; {t2 / dense:.2f}× dense ORT at 1 thread).")
    if ("tvm per-stream", 16) in res:
        old = res[("tvm per-stream", 16)]
        out.append(f"Shared reads vs each stream's batch-1 code in turn (the previous batched kernels) at B=16: "
                   f"{tvm / old:.2f}× ({tvm:.0f} vs {old:.0f} tokens/s; the per-stream kernels {old / dense:.2f}× "
                   "dense ORT).")
    return out


def batch16_goals(tmp: Path, emb: int, hidden: str, sparsity: float, activity: float, tokens: int = 2048,
                  rounds: int = 2, threads: int = 2) -> tuple[dict, list[str]]:
    """Only what the issue-26 goal lines at B = 16 need (`bench_batch1` prints them with its own): the tvm
    artifact at 1 and `threads` threads and the dense ORT peer, `evaluate(..., batch_size=16)` on the first
    `tokens` PTB test tokens, best of `rounds` interleaved runs. Returns ({(variant, 16): tokens/s}, lines)."""
    vocab = Vocabulary.from_train_file(PTB / "ptb.train.txt")
    model = build_model(len(vocab), emb, [int(h) for h in hidden.split(",")], sparsity)
    calibrate(model, activity, np.random.default_rng(0).integers(0, len(vocab), 60))
    raw = trace_model(model)
    (tmp / "tvm").mkdir()
    get_target("tvm")(PassManager(None).run(raw), None, tmp / "tvm", {})
    get_target("onnx")(raw, None, tmp / "dense", DENSE_ORT)
    ids = vocab.encode_file(PTB / "ptb.test.txt", max_tokens=tokens, unk="<unk>")
    tvm, dense = open_artifact(tmp / "tvm", threads=1), open_artifact(tmp / "dense", threads=1)
    cells = [("tvm", tvm, 1), ("ort dense", dense, 1)] + ([(f"tvm {threads} threads", tvm, threads)]
                                                            if threads > 1 else [])
    res: dict = {}
    for rnd in range(rounds):
        for name, r, t in cells[rnd % len(cells):] + cells[:rnd % len(cells)]:
            tps = evaluate(r, ids, quiet=True, batch_size=16, threads=t)["tokens_per_second"]
            res[(name, 16)] = max(res.get((name, 16), 0.0), tps)
    return res, goal_lines(res, threads)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--tokens", type=int, default=4096, help="eval tokens per (variant, B)")
    ap.add_argument("--batches", default="1,4,16,64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-tvm", action="store_true")
    ap.add_argument("--no-old", action="store_true", help="leave out the per-stream TVM kernels")
    ap.add_argument("--threads", type=int, default=2, help="threads of the 'tvm N threads' variant (0: none)")
    add_wait_idle_arg(ap, "each cell's run")
    ap.add_argument("--out", default=str(HERE / "results" / "batch.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    Bs = [int(b) for b in a.batches.split(",")]
    import onnxruntime
    load0 = os.getloadavg()
    print(f"# onnxruntime {onnxruntime.__version__}, 1 thread; load average at start {load0[0]:.2f} "
          f"(1 min) on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as td:
        b = build(Path(td), a)
        ids = b["vocab"].encode_file(PTB / "ptb.test.txt", max_tokens=a.tokens, unk="<unk>")
        runners = {k: open_artifact(p, threads=1) for k, p in b["arts"].items()}
        threads = {k: 1 for k in runners}
        if "tvm" in runners:
            if a.threads > 1:
                name = f"tvm {a.threads} threads"
                runners[name], threads[name] = runners["tvm"], a.threads
            if not a.no_old:
                old = open_artifact(b["arts"]["tvm"], threads=1)
                old.rt.spec = replace(old.rt.spec, interleave=8)     # -> the per-stream kernels (streams.py)
                runners["tvm per-stream"], threads["tvm per-stream"] = old, 1
        native = {k: bool(getattr(r, "native_streams", False)) for k, r in runners.items()}
        res: dict = {}
        info: dict = {}
        n_quiet = n_runs = 0
        for rnd in range(a.rounds):
            for B in Bs:
                names = list(runners)
                names = names[rnd % len(names):] + names[:rnd % len(names)]      # rotate the order per round
                for name in names:
                    r = runners[name]
                    if B == 1 and (threads[name] > 1 or name == "tvm per-stream"):
                        continue                        # batch 1: one thread, the artifact's own step kernels
                    if a.wait_idle > 0:
                        n_quiet += wait_idle(QUIET_CORES, a.wait_idle)
                    out = evaluate(r, ids, quiet=True, batch_size=B, threads=threads[name])
                    tps = out["tokens_per_second"]
                    n_runs += 1
                    res[(name, B)] = max(res.get((name, B), 0.0), tps)
                    info[(name, B)] = out
                    print(f"round {rnd + 1} B={B:<3} {name:<10} {tps:9.1f} tokens/s  ({out['tokens']} tokens, "
                          f"ppl {out['perplexity']:.2f}, activity "
                          f"{'/'.join(f'{x:.3f}' for x in out['activity'])})", flush=True)
        over = {n: batch1_overhead(runners[n], ids) for n in ("onnx f32", "onnx int8")}
        load1 = os.getloadavg()
    names = list(runners)
    head = "| variant | native streams | " + " | ".join(f"B={B} tokens/s" for B in Bs) + " | B=16 / B=1 |"
    lines = [f"PTB-size EGRU {a.emb}/{a.hidden.replace(',', '/')}, vocab {len(b['vocab'])}, random weights pruned "
             f"to {a.sparsity:.0%}, thresholds for ~{a.activity:.0%} activity; `evaluate(..., batch_size=B)` on the "
             f"first {a.tokens} PTB test tokens (B contiguous streams), 1 thread, best of {a.rounds} interleaved "
             f"rounds; load average {load0[0]:.2f} at start, {load1[0]:.2f} at end (shared machine, "
             f"{os.cpu_count()} cores)" + (f"; {n_quiet} of {n_runs} runs started at a quiet moment (other processes "
                                          f"< {QUIET_CORES:g} cores busy; waited up to {a.wait_idle:g} s)."
                                          if a.wait_idle > 0 else "."), "",
             "Command: `nice .venv/bin/python -m benchmarks.bench_batch " + " ".join(argv or sys.argv[1:]) + "`", "",
             head, "|" + "---|" * (3 + len(Bs))]
    for n in names:
        cells = [f"{res[(n, B)]:.0f}" if (n, B) in res else "-" for B in Bs]
        ratio = (f"{res[(n, 16)] / res[(n, 1)]:.2f}x" if (n, 16) in res and (n, 1) in res else "-")
        lines.append(f"| {n} | {'yes' if native[n] else 'no (per-stream state)'} | " + " | ".join(cells)
                     + f" | {ratio} |")
    acts = info[(names[0], Bs[0])]["activity"]
    lines += ["", f"Measured activity (onnx f32, B={Bs[0]}): {'/'.join(f'{x:.3f}' for x in acts)}."]
    if "tvm" in runners and 16 in Bs:
        lines += goal_lines(res, a.threads)
    if 16 in Bs:
        for n in ("onnx f32", "onnx int8"):
            r = res[(n, 16)] / res[("ort dense", 16)]
            lines.append(f"{n} at B=16 vs dense ORT at B=16: {r:.2f}×.")
    lines += ["", "Batch-1 step, µs median (400 tokens x 5 interleaved rounds): the batch-1 model.onnx vs the batched "
              "model run at B = 1 — " + "; ".join(f"{n}: {o:.0f} vs {b:.0f} ({b / o - 1:+.1%})" for n, (o, b) in over.items())
              + "."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
