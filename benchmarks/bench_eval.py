"""Whole-token cost of `egru-compile eval`: what the compiled call costs, and what scoring adds on top.

For each artifact (default: the bundled trained example `examples/ptb-egru-small/model.pt` compiled here to
tvm, onnx f32 and onnx int8 rows, plus the PyTorch source), on the first N tokens of the PTB test text, one
thread, rounds interleaved over the variants, median of the rounds:

* ``run``       — the runner's K-token call alone (`runner.run`, chunks of 256; logits materialised);
* ``old eval``  — what `evaluate` did before: `runner.run` + log-softmax of the [K, V] logits in float64;
* ``eval``      — `evaluate` now (`Runner.score`: tvm scores from the library's buffer, no logits copy;
  `scoring.NllScorer`: float32 exp in L2-sized row blocks, float64 sums);
* ``eval B=4 / B=16`` — `evaluate(..., batch_size=B)`: B contiguous streams, each with its own state
  (runtime-level batching: every runner supports it, no batched kernel yet, so no speed-up is expected).

    .venv/bin/python -m benchmarks.bench_eval [--tokens 5000] [--rounds 3] [ARTIFACT ...]

Writes benchmarks/results/eval.md (``--out``).
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]

from egru_compile.runtime import evaluate, load_eval_tokens, open_artifact  # noqa: E402
from egru_compile.runner import nll_reference  # noqa: E402

PTB_TEST = ROOT / "data" / "ptb" / "ptb.test.txt"        # shipped with the repository
EXAMPLE = ROOT / "examples" / "ptb-egru-small" / "model.pt"


def compile_example(tmp: Path) -> list[tuple[str, Path]]:
    arts = [("torch (source)", EXAMPLE)]
    for name, target, extra in (("tvm", "tvm", []), ("onnx f32", "onnx", []),
                                ("onnx int8", "onnx", ["--onnx-weight-dtype", "int8"])):
        out = tmp / name.replace(" ", "-")
        subprocess.run([sys.executable, "-m", "egru_compile.cli", str(EXAMPLE), "--target", target, "-o", str(out),
                        *extra], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        arts.append((name, out))
    return arts


def time_run(runner, ids, chunk=256) -> float:
    runner.reset()
    t0 = time.perf_counter()
    for s in range(0, len(ids) - 1, chunk):
        runner.run(ids[s:min(s + chunk, len(ids) - 1)])
    return time.perf_counter() - t0


def time_old_eval(runner, ids, chunk=256) -> float:
    runner.reset()
    t0 = time.perf_counter()
    nll = 0.0
    for s in range(0, len(ids) - 1, chunk):
        e = min(s + chunk, len(ids) - 1)
        nll += float(nll_reference(runner.run(ids[s:e]), ids[s + 1:e + 1]).sum())
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="*", help="artifact dirs / checkpoints (default: compile the example)")
    ap.add_argument("--tokens", type=int, default=5000)
    ap.add_argument("--data", default=str(PTB_TEST), help="evaluation text (default: PTB test)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval.md"))
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        arts = [(str(p), Path(p)) for p in a.artifacts] if a.artifacts else compile_example(Path(tmp))
        runners = [(name, open_artifact(p, threads=1) if Path(p).is_dir() and "onnx" in name else open_artifact(p))
                   for name, p in arts]
        ids = load_eval_tokens(a.data, runners[0][1].vocab, a.tokens)
        T = len(ids) - 1
        cols = ["run", "old eval", "eval", "eval B=4", "eval B=16"]
        times = {name: {c: [] for c in cols} for name, _ in runners}
        ppl = {}
        for r in range(a.rounds):
            order = runners[r % len(runners):] + runners[:r % len(runners)]
            for name, runner in order:
                times[name]["run"].append(time_run(runner, ids) / T)
                times[name]["old eval"].append(time_old_eval(runner, ids) / T)
                res = evaluate(runner, ids, quiet=True)
                times[name]["eval"].append(res["seconds"] / res["tokens"])
                ppl[name] = res["perplexity"]
                for B in (4, 16):
                    res = evaluate(runner, ids, quiet=True, batch_size=B)
                    times[name][f"eval B={B}"].append(res["seconds"] / res["tokens"])
    med = {n: {c: statistics.median(v) * 1e6 for c, v in d.items()} for n, d in times.items()}
    lines = [f"`python -m benchmarks.bench_eval --tokens {a.tokens} --rounds {a.rounds}` — "
             f"{T} predictions of {Path(a.data).name}, 1 thread, µs per token "
             f"(median of {a.rounds} interleaved rounds); "
             "`eval` tokens/s in brackets", "",
             "| artifact | perplexity | " + " | ".join(cols) + " | scoring now / before |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for name, m in med.items():
        cells = [f"{m[c]:,.1f}" if c == "run" else f"{m[c]:,.1f} ({1e6 / m[c]:,.0f}/s)" for c in cols]
        before, now = m["old eval"] - m["run"], m["eval"] - m["run"]
        lines.append(f"| {name} | {ppl[name]:.3f} | " + " | ".join(cells) + f" | {now:,.1f} / {before:,.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
