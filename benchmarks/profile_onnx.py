"""Where the ONNX int8 artifact's time goes in onnxruntime (issue 26 item 3), and the body of EventMatVecQ before
and after the integer product (`targets.onnx.bodies`), side by side.

PTB-size EGRU (`benchmarks.common.build_model`: embedding 750, hidden 1350/1350/750, vocabulary 10,000, random
weights pruned to --sparsity), thresholds bisected on the PyTorch model to --activity (or --thresholds),
quantize-int8, `compile_onnx(weight_dtype="int8")`. Three sessions of the same weights, 1 thread:

* ``int8``        — the compiled model.onnx (EventMatVecQ = MatMulInteger of value digits x gathered int8 rows);
* ``int8-widen``  — the same file with EventMatVecQ's previous body (`widen_body`: Gather int8 rows, Cast to
  float32, MatMul, Mul scale), i.e. what the lowering emitted before;
* ``int8-dec8``   — the int8 compile with ``decoder_dtype="int8"``: the decoder gathers int8 rows too (one
  scale per vocabulary row; what ``decoder_dtype auto`` picks when the calibration perplexity changes by
  <= 0.1 %);
* ``f32``         — the f32 compile of the same (unquantized) model.

Each is first run with onnxruntime's profiler (``SessionOptions.enable_profiling``) for --tokens tokens: the
per-op-type kernel time per token and its share, and the heaviest nodes. Then all three are timed interleaved
(per-token medians, this thread's CPU time, --rounds rounds rotating the order) on the same token stream, and
the largest logit difference of ``int8`` against ``int8-widen`` is printed. Writes
benchmarks/results/onnx_profile.{md,json}.

    nice .venv/bin/python -m benchmarks.profile_onnx --tokens 300 --rounds 5
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import build_model, calibrate, interleaved_steps  # noqa: E402
from egru_compile.frontend import trace_model  # noqa: E402
from egru_compile.passes import PassManager  # noqa: E402
from egru_compile.targets import get_target  # noqa: E402
from egru_compile.targets.onnx import functions as F  # noqa: E402
from egru_compile.targets.onnx.runner import OnnxRunner  # noqa: E402

HERE = Path(__file__).resolve().parent


def widen_body():
    """EventMatVecQ's previous body (before commit aced3f5): widen the gathered int8 rows to float32, MatMul."""
    from onnx import TensorProto, helper
    n = helper.make_node
    nodes = [helper.make_node("Constant", [], ["ax0"], value_ints=[0]),
             n("Unsqueeze", ["val", "ax0"], ["v2"]), n("Gather", ["WT", "idx"], ["rows"], axis=0),
             n("Cast", ["rows"], ["rows_f"], to=TensorProto.FLOAT), n("MatMul", ["v2", "rows_f"], ["acc"]),
             n("Mul", ["acc", "scale"], ["out"])]
    return helper.make_function(F.DOMAIN, "EventMatVecQ", ["idx", "val", "WT", "scale"], ["out"], nodes,
                                opset_imports=[helper.make_opsetid("", F.OPSET)])


def with_body(model_bytes: bytes, name: str, fn) -> bytes:
    """`model_bytes` with the ai.egru function `name` replaced by `fn()`."""
    import onnx
    m = onnx.load_model_from_string(model_bytes)
    fns = [fn() if (f.domain == F.DOMAIN and f.name == name) else f for f in m.functions]
    del m.functions[:]
    m.functions.extend(fns)
    return m.SerializeToString()


def profile_runner(model: bytes, manifest: dict, toks, prefix: str) -> dict:
    """Per-op-type and per-node kernel µs per token from onnxruntime's profiler over `toks`."""
    r = OnnxRunner(model, manifest, threads=1, profile_prefix=prefix)
    r.reset()
    for t in toks:
        r.step(int(t))
    path = r.sess.end_profiling()
    events = json.loads(Path(path).read_text())
    Path(path).unlink()
    by_op, by_node, runs, run_us = defaultdict(float), defaultdict(float), 0, 0.0
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[(e["name"][: -len("_kernel_time")], e["args"]["op_name"])] += e["dur"]
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            runs += 1
            run_us += e["dur"]
    total = sum(by_op.values())
    return {"runs": runs, "run_us": run_us / runs, "kernel_us": total / runs,
            "ops": [{"op": k, "us": v / runs, "share": v / total} for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])],
            "nodes": [{"node": k[0], "op": k[1], "us": v / runs, "share": v / total}
                      for k, v in sorted(by_node.items(), key=lambda kv: -kv[1])[:12]]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sparsity", type=float, default=0.85)
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--thresholds", help="per-layer thresholds (comma-separated) instead of bisecting them")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "onnx_profile"))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    V, E, hidden = 10000, 750, [1350, 1350, 750]
    model = build_model(V, E, hidden, a.sparsity)
    rng = np.random.default_rng(0)
    toks = rng.integers(0, V, a.tokens + 10)
    thr = ([float(x) for x in a.thresholds.split(",")] if a.thresholds
           else calibrate(model, a.activity, rng.integers(0, V, 40), iters=10))
    with torch.no_grad():
        for layer, t in zip(model.rnns, thr):
            layer.thr.fill_(min(max(float(t), 0.0), 1.0))
    compile_onnx = get_target("onnx")
    opt = PassManager(None).run(trace_model(model))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        compile_onnx(PassManager(["quantize-int8"]).run(opt), None, d / "int8", {"weight_dtype": "int8"})
        compile_onnx(PassManager(["quantize-int8"]).run(opt), None, d / "int8-dec8",
                     {"weight_dtype": "int8", "decoder_dtype": "int8"})
        compile_onnx(opt, None, d / "f32", {})
        models = {}
        for name in ("int8", "int8-dec8", "f32"):
            models[name] = ((d / name / "model.onnx").read_bytes(), json.loads((d / name / "manifest.json").read_text()))
        models["int8-widen"] = (with_body(models["int8"][0], "EventMatVecQ", widen_body), models["int8"][1])
    order = ["int8-dec8", "int8", "int8-widen", "f32"]
    load = os.getloadavg()[0]
    res = {"sparsity": a.sparsity, "target_activity": a.activity, "thresholds": [round(t, 5) for t in thr],
           "tokens": a.tokens, "rounds": a.rounds, "load_before": round(load, 2), "profile": {}}
    for name in order:
        res["profile"][name] = profile_runner(*models[name], toks, str(Path(tempfile.gettempdir()) / f"egru_prof_{name}"))
    runners = {name: OnnxRunner(*models[name], threads=1) for name in order}
    outs = {}
    for name in ("int8", "int8-widen", "int8-dec8"):
        r = runners[name]
        r.reset()
        outs[name] = np.stack([r.step(int(t)).copy() for t in toks[:60]])
    r = runners["int8"]
    r.reset()
    ev = []
    for t in toks:
        r.step(int(t))
        ev.append(r.last_stats.events)
    res["activity"] = [float(x) for x in np.mean(ev[10:], 0) / np.asarray(hidden)]
    diff = np.abs(outs["int8"] - outs["int8-widen"])
    res["max_logit_diff"] = float(diff.max())
    res["max_logit_rel_diff"] = float(diff.max() / np.abs(outs["int8-widen"]).max())
    res["dec8_max_logit_diff"] = float(np.abs(outs["int8-dec8"] - outs["int8"]).max())
    fns = {name: (runners[name].reset, (lambda r: (lambda i: r.step(int(toks[i]))))(runners[name])) for name in order}
    ts = interleaved_steps(fns, a.tokens, a.rounds, 10, clock=time.thread_time)
    res["median_us"] = {k: float(np.median(v) * 1e6) for k, v in ts.items()}
    res["load_after"] = round(os.getloadavg()[0], 2)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(res, indent=1) + "\n")
    md = render(res)
    Path(a.out + ".md").write_text(md)
    print(md)


def render(res: dict) -> str:
    mu = res["median_us"]
    lines = ["# ONNX int8 in onnxruntime: profile and EventMatVecQ body (issue 26 item 3)", "",
             f"PTB-size (emb 750, hidden 1350/1350/750, vocab 10,000), {100 * res['sparsity']:.0f} % pruned, "
             f"activity {', '.join(f'{100 * x:.1f}' for x in res['activity'])} % per layer, 1 thread, "
             f"{res['tokens']} tokens; load average {res['load_before']} -> {res['load_after']}. "
             "`nice .venv/bin/python -m benchmarks.profile_onnx`", "",
             "Whole token, µs (median per token of interleaved rounds, this thread's CPU time):", "",
             "| int8 + int8 decoder rows | int8 (MatMulInteger of value digits) | int8-widen (previous body: "
             "Gather, Cast, MatMul) | f32 |",
             "|---|---|---|---|",
             f"| {mu['int8-dec8']:,.0f} ({mu['int8-widen'] / mu['int8-dec8']:.2f}x) | {mu['int8']:,.0f} "
             f"({mu['int8-widen'] / mu['int8']:.2f}x) | {mu['int8-widen']:,.0f} | {mu['f32']:,.0f} |",
             "", f"int8 vs int8-widen logits: max |diff| {res['max_logit_diff']:.3g} "
                 f"({res['max_logit_rel_diff']:.2g} of the largest logit); int8 decoder rows vs f32 rows: max |diff| "
                 f"{res['dec8_max_logit_diff']:.3g}.", ""]
    for name in ("int8-dec8", "int8", "int8-widen"):
        p = res["profile"][name]
        lines += [f"## Profile: {name} (onnxruntime profiler, kernel time {p['kernel_us']:,.0f} µs of "
                  f"{p['run_us']:,.0f} µs per run)", "", "| op | µs / token | share |", "|---|---|---|"]
        lines += [f"| {o['op']} | {o['us']:,.1f} | {100 * o['share']:.1f} % |" for o in p["ops"] if o["share"] >= 0.005]
        lines += ["", "Heaviest nodes: " + ", ".join(f"{n['node']} {n['us']:,.0f} µs" for n in p["nodes"][:6]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
