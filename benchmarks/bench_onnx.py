"""Per-token latency of the ONNX-compiled (event-gated, sparse) EGRU vs an ORT dense baseline, batch 1.

PTB-size layers by default (embedding 750, hidden 1350,1350,750, vocabulary 10000), random weights with
the RNN matrices magnitude-pruned to 85 %, per-layer thresholds bisected so that every layer fires at
about 10 / 20 / 30 % of its units on a random token stream. Every model runs in onnxruntime with the same
session options (1 intra-op thread, sequential, all graph optimisations) in one process, interleaved:

* ``dense``  — a plain MatMul graph of the same (pruned, zero-filled) weights: the traced frontend graph
  lowered with event gating, embedding folding and sparse storage switched off. ORT runs it twice — with its
  default optimisers (MatMul + bias Add fused into Gemm) and with ``MatMulAddFusion`` disabled (MatMul + Add,
  faster at batch 1 on this machine) — and the faster of the two is the baseline;
* ``onnx``   — `compile_onnx` output after the default pass pipeline (f32, exact), in a session like
  `open_artifact`'s (the same options, ``MatMulAddFusion`` off);
* ``onnx-f16`` — the same with ``weight_dtype="f16"`` (event-gated rows stored as float16);
* ``onnx-int8`` — default pipeline + ``quantize-int8`` (``--onnx-weight-dtype int8``: int8 rows, per-row
  scale applied after the sum). Its baseline is ``dense-q``: the same dense MatMul graph holding the
  dequantized int8 weights (int8 x scale as f32), i.e. the very weights the int8 program computes with.

"RNN stack" times the graphs without the decoder (token -> embedding -> layers); "token" the full step.

    python -m benchmarks.bench_onnx                      # PTB size, ~5 min on 2 cores
    python -m benchmarks.bench_onnx --small              # quick smoke run
    python -m benchmarks.bench_onnx --json out.json --threads 1 --tokens 200 --rounds 7
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import build_model, calibrate, interleaved, strip_decoder  # noqa: E402
from egru_compile.frontend import trace_model  # noqa: E402
from egru_compile.passes import PassManager  # noqa: E402
from egru_compile.targets.onnx.runner import DISABLED_OPTIMIZERS, create_session  # noqa: E402
from egru_compile.targets.onnx import lower_graph, serialize  # noqa: E402


def make_session(model_proto, threads, disabled_optimizers=()):
    return create_session(serialize(model_proto), threads, disabled_optimizers=disabled_optimizers)


#: sessions timed for each baseline: ORT's defaults, and without the MatMul + Add -> Gemm fusion (which the
#: compiled models' runner switches off too)
UNFUSED = DISABLED_OPTIMIZERS
DENSE_OPTIONS = {"event_gating": False, "fold_embedding": False, "sparse_storage": False, "extras": False}
#: the passes that give the dense baseline the int8 program's weights (no event gating)
DENSE_Q_PASSES = ["const-fold", "fold-masks", "fuse-gates", "fuse-cell", "dce", "quantize-int8"]


def time_sessions(sessions: dict, tokens, rounds: int) -> dict:
    """Interleaved rounds (`benchmarks.common.interleaved`); each round streams `tokens` from the zero state
    through every session. Returns per-token µs lists."""
    def stream(s):
        ins = [i for i in s.get_inputs()]
        names = [o.name for o in s.get_outputs()]
        state = {i.name: np.zeros(i.shape, np.float32) for i in ins if i.name != "tokens"}
        outmap = [(names.index(n + "_out"), n) for n in state]
        tok = np.zeros(1, np.int64)
        for t in tokens:
            tok[0] = t
            state["tokens"] = tok
            outs = s.run(None, state)
            for j, n in outmap:
                state[n] = outs[j]

    secs = interleaved({k: (lambda s=s: stream(s)) for k, s in sessions.items()}, rounds)
    return {k: [t / len(tokens) * 1e6 for t in v] for k, v in secs.items()}


def measured_activity(session, tokens, sizes) -> list[float]:
    names = [o.name for o in session.get_outputs()]
    state = {i.name: np.zeros(i.shape, np.float32) for i in session.get_inputs() if i.name != "tokens"}
    ev = np.zeros(len(sizes))
    macs = 0
    for t in tokens:
        outs = dict(zip(names, session.run(None, {"tokens": np.array([t], np.int64), **state})))
        for n in state:
            state[n] = outs[n + "_out"]
        ev += [int(outs[f"events{l}"][0]) for l in range(len(sizes))]
        macs += int(outs["macs"][0])
    return list(ev / len(tokens) / np.asarray(sizes)), macs / len(tokens)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--emb", type=int, default=750)
    ap.add_argument("--hidden", default="1350,1350,750")
    ap.add_argument("--sparsity", type=float, default=0.85)
    ap.add_argument("--activity", default="0.1,0.2,0.3")
    ap.add_argument("--tokens", type=int, default=100, help="tokens per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="onnx,onnx-f16,onnx-int8",
                    help="compiled variants to time against dense: onnx (f32, exact), onnx-f16, onnx-int8 "
                         "(default pipeline + quantize-int8)")
    ap.add_argument("--small", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.small:
        a.vocab, a.emb, a.hidden, a.tokens, a.rounds = 200, 32, "48,32", 30, 2
    hidden = [int(h) for h in a.hidden.split(",")]
    acts = [float(x) for x in a.activity.split(",")]
    rng = np.random.default_rng(0)
    calib = rng.integers(0, a.vocab, 60)
    stream = rng.integers(0, a.vocab, a.tokens)
    model = build_model(a.vocab, a.emb, hidden, a.sparsity)
    print(f"# EGRU vocab {a.vocab}, emb {a.emb}, hidden {hidden}, RNN sparsity {a.sparsity:.0%}, "
          f"{a.threads} thread(s), {a.tokens} tokens x {a.rounds} rounds (interleaved), per-token µs (median)",
          flush=True)
    variants = [v for v in a.variants.split(",") if v and not v.startswith("dense")]
    dense_keys = ["dense"] + (["dense-q"] if "onnx-int8" in variants else [])
    baseline_of = {v: ("dense-q" if v == "onnx-int8" else "dense") for v in variants}
    rows = []
    for target in acts:
        thrs = calibrate(model, target, calib)
        raw = trace_model(model)
        opt = PassManager(None).run(raw)
        q8 = PassManager(["quantize-int8"]).run(opt) if "onnx-int8" in variants else None
        rawq = PassManager(DENSE_Q_PASSES).run(raw) if "onnx-int8" in variants else None
        graphs = {"token": (raw, opt, q8, rawq),
                  "rnn": tuple(strip_decoder(x) if x is not None else None for x in (raw, opt, q8, rawq))}
        row = {"target_activity": target, "thresholds": thrs}
        for scope, (graw, gopt, gq8, grawq) in graphs.items():
            protos = {"dense": lower_graph(graw, DENSE_OPTIONS).model}
            if grawq is not None:
                protos["dense-q"] = lower_graph(grawq, DENSE_OPTIONS).model
            for k in variants:
                if k == "onnx":
                    protos[k] = lower_graph(gopt).model
                elif k == "onnx-f16":
                    protos[k] = lower_graph(gopt, {"weight_dtype": "f16"}).model
                elif k == "onnx-int8":
                    protos[k] = lower_graph(gq8, {"weight_dtype": "int8"}).model
                else:
                    raise SystemExit(f"unknown variant {k}")
            t0 = time.perf_counter()
            sessions = {k: make_session(p, a.threads, () if k.startswith("dense") else UNFUSED)
                        for k, p in protos.items()}
            for k in dense_keys:
                sessions[f"{k}-unfused"] = make_session(protos[k], a.threads, UNFUSED)
            row[f"{scope}_session_s"] = round(time.perf_counter() - t0, 2)
            if scope == "token":              # file size of each whole-step model.onnx
                row["model_mb"] = {k: round(len(serialize(p)) / 1e6, 1) for k, p in protos.items()}
            if scope == "token":
                row["activity"], row["macs_per_token"] = measured_activity(sessions["onnx" if "onnx" in sessions
                                                                                    else variants[0]], stream, hidden)
            res = time_sessions(sessions, stream, a.rounds)
            for k, v in res.items():
                row[f"{scope}_{k}_us"] = float(np.median(v))
                row[f"{scope}_{k}_us_min"] = float(np.min(v))
            for k in dense_keys:          # the baseline: the faster of ORT's two ways to run the dense graph
                row[f"{scope}_{k}_best_us"] = min(row[f"{scope}_{k}_us"], row[f"{scope}_{k}-unfused_us"])
            del sessions, protos
            gc.collect()
        rows.append(row)
        act = "/".join(f"{x:.2f}" for x in row["activity"])
        print(f"activity {target:.2f} (measured {act}): " + "  ".join(
            f"{scope} " + " ".join(f"{k}={row[f'{scope}_{k}_us']:.0f}"
                                   for k in [d for dk in dense_keys for d in (dk, f"{dk}-unfused")] + variants)
            for scope in ("rnn", "token")), flush=True)
    print("model.onnx size (whole step, MB): " + ", ".join(f"{k} {v}" for k, v in rows[0]["model_mb"].items()))
    print()
    for scope, title in (("rnn", "RNN stack (embedding + layers)"), ("token", "whole token (+ decoder)")):
        print(f"{title}: per-token µs, median of {a.rounds} interleaved rounds (speed-up vs the dense graph of the "
              f"same weights; dense = faster of ORT default / MatMulAddFusion off)")
        cols = ["ORT dense (default / unfused)"] + (["ORT dense-q"] if "dense-q" in dense_keys else []) + variants
        print("| activity target / measured | " + " | ".join(cols) + " |")
        print("|" + "---|" * (len(cols) + 1))
        for r in rows:
            cells = [f"{r['target_activity']:.0%} / " + "/".join(f"{x:.0%}" for x in r["activity"])]
            for k in dense_keys:
                cells.append(f"{r[f'{scope}_{k}_best_us']:,.0f} ({r[f'{scope}_{k}_us']:,.0f} / "
                             f"{r[f'{scope}_{k}-unfused_us']:,.0f})")
            for k in variants:
                us, base = r[f"{scope}_{k}_us"], r[f"{scope}_{baseline_of[k]}_best_us"]
                cells.append(f"{us:,.0f} ({base / us:.2f}x)")
            print("| " + " | ".join(cells) + " |")
        print()
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
