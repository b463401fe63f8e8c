"""TVM whole-token eval path on the PTB-size random model: value dtypes (f32 / f16 / int8 rows), fused NLL
scoring and batched streams, ms per token of what `egru-compile eval` runs.

Model: `bench_onnx.build_model` (embedding 750, hidden 1350/1350/750, vocabulary 10,000, tied decoder, RNN
matrices magnitude-pruned to --sparsity), one scalar threshold per layer bisected (`bench_onnx.calibrate`) for
--activity. Every variant is compiled with the tvm target (`get_target("tvm")`, the CLI's compile + seal) from
the same optimised graph (int8: + quantize-int8, the onnx int8 weights) and opened with `open_artifact`; one
thread (TVM_NUM_THREADS=1).

Timed (per variant, median of --rounds rounds, every mode once per round in rotated order): ``score`` — `runner.score` over the stream in chunks of --chunk tokens
(the eval path: the fused ``egru_score``, NLL per token); ``run + numpy NLL`` — `runner.run` + `NllScorer` (the
eval path before ``egru_score``); ``logits`` — `runner.run` only (logits [K, V] handed back, no NLL); ``B=...``
— `score_streams` (B streams per call, ms per token counts all B streams' tokens).

    .venv/bin/python -m benchmarks.bench_tvm_eval                       # ~4 min on an idle core
    .venv/bin/python -m benchmarks.bench_tvm_eval --variants f32,int8 --tokens 1000
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent

from benchmarks.common import add_model_args, build_model, calibrate, median_times  # noqa: E402

from egru_compile.frontend import trace_model  # noqa: E402
from egru_compile.passes import PassManager  # noqa: E402
from egru_compile.runtime import open_artifact  # noqa: E402
from egru_compile.runner import NllScorer  # noqa: E402
from egru_compile.targets import get_target  # noqa: E402

#: variant -> (tvm options, quantize-int8 first)
VARIANTS = {
    "f32": ({"weight_dtype": "f32"}, False),
    "f16": ({"weight_dtype": "f16"}, False),
    "int8": ({"weight_dtype": "int8", "decoder_dtype": "f32"}, True),
    "int8+dec8": ({"weight_dtype": "int8", "decoder_dtype": "int8"}, True),
}


def timed(fns: dict, rounds: int) -> dict:
    """{name: median seconds of fn()} over `rounds` interleaved rounds (`benchmarks.common.median_times`)."""
    return median_times(fns, rounds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=10000)
    add_model_args(ap)
    ap.add_argument("--variants", default="f32,int8,int8+dec8")
    ap.add_argument("--tokens", type=int, default=2000, help="timed tokens per round")
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", default="1,4,16,64", help="stream counts for score_streams")
    ap.add_argument("--thresholds", help="per-layer thresholds (comma-separated) instead of calibrating them")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    hidden = [int(h) for h in a.hidden.split(",")]
    model = build_model(a.vocab, a.emb, hidden, a.sparsity)
    rng = np.random.default_rng(0)
    stream = rng.integers(0, a.vocab, a.tokens + 1)
    t0 = time.perf_counter()
    calib = rng.integers(0, a.vocab, 40)
    thr = ([float(x) for x in a.thresholds.split(",")] if a.thresholds
           else calibrate(model, a.activity, calib, iters=10))
    with torch.no_grad():
        for layer, t in zip(model.rnns, thr):
            layer.thr.fill_(min(max(float(t), 0.0), 1.0))
    opt = PassManager(None).run(trace_model(model))
    print(f"# vocab {a.vocab}, emb {a.emb}, hidden {hidden}, sparsity {a.sparsity}, target activity "
          f"{a.activity} (thresholds {[round(float(t), 4) for t in thr]}, {time.perf_counter() - t0:.0f} s); "
          f"{a.tokens} tokens x {a.rounds} rounds, chunk {a.chunk}, 1 thread", flush=True)
    compile_tvm = get_target("tvm")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.variants.split(","):
            opts, q8 = VARIANTS[name]
            g = PassManager(["quantize-int8"]).run(opt) if q8 else opt
            d = Path(tmp) / name.replace("+", "_")
            d.mkdir()
            t0 = time.perf_counter()
            compile_tvm(g, None, d, dict(opts))
            cs = time.perf_counter() - t0
            r = open_artifact(d)
            toks, tg = stream[:-1], stream[1:]

            def score(r=r):
                r.reset()
                return np.concatenate([r.score(toks[i:i + a.chunk], tg[i:i + a.chunk])
                                       for i in range(0, len(toks), a.chunk)])

            scorer = NllScorer()

            def unfused(r=r):
                r.reset()
                for i in range(0, len(toks), a.chunk):
                    scorer(r.run(toks[i:i + a.chunk]), tg[i:i + a.chunk])

            def logits(r=r):
                r.reset()
                for i in range(0, len(toks), a.chunk):
                    r.run(toks[i:i + a.chunk])

            nll = score()
            row = {"variant": name, "compile_s": cs, "ppl": float(np.exp(nll.mean())),
                   "activity": [float(x) for x in r.last_run.events.mean(0) / np.asarray(hidden)]}
            fns = {"score_ms": (score, len(toks)), "unfused_ms": (unfused, len(toks)),
                   "logits_ms": (logits, len(toks))}
            if hasattr(r, "score_streams"):
                for B in [int(b) for b in a.batch.split(",")]:
                    T = len(toks) // B
                    st = stream[:T * B + 1]
                    tok_tb = np.stack([st[b * T:(b + 1) * T] for b in range(B)], 1)
                    tg_tb = np.stack([st[b * T + 1:(b + 1) * T + 1] for b in range(B)], 1)

                    def streams(r=r, B=B, tok_tb=tok_tb, tg_tb=tg_tb):
                        r.reset_streams(B)
                        for i in range(0, len(tok_tb), a.chunk):
                            r.score_streams(tok_tb[i:i + a.chunk], tg_tb[i:i + a.chunk])

                    fns[f"B{B}_ms"] = (streams, T * B)
            res = timed({k: f for k, (f, _) in fns.items()}, a.rounds)
            row.update({k: res[k] / n * 1e3 for k, (_, n) in fns.items()})
            rows.append(row)
            print(f"{name:10s} ppl {row['ppl']:10.3f}  activity {[round(x, 3) for x in row['activity']]}  "
                  f"compile {cs:5.1f} s  eval (score) {row['score_ms']:.4f} ms/token  "
                  f"run + numpy NLL {row['unfused_ms']:.4f} ms/token  run (logits only) {row['logits_ms']:.4f} ms/token"
                  + "".join(f"  B={k[1:-3]} {v:.4f} ms/token" for k, v in row.items() if k.startswith("B")),
                  flush=True)
            del r
    return rows


if __name__ == "__main__":
    main()
