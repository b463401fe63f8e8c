"""ONNX target: lowering of hand-built optimised graphs and traced EGRUs, agreement with the interpreter,
checker, sparse storage, determinism, load-time folding, atomic output."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import make_model
from egru_compile.frontend import trace_model
from egru_compile.ir import Graph, Interpreter, SparseMatrix, TensorType, run_graph
from egru_compile.passes import MacReport, PassManager
from egru_compile.targets.onnx.runner import create_session
from egru_compile.targets import get_target
from egru_compile.targets.onnx import OP_NAMES, OnnxLoweringError, lower_graph, serialize

compile_onnx = get_target("onnx")          # compile + seal, as the CLI does

STEPS = 50
TOL = 1e-5


def _session(model):
    return create_session(serialize(model))           # the runtime's session: what users of open_artifact get


def _compare(graph, options=None, steps=STEPS, vocab=None, tol=TOL, seed=0):
    """Stream random tokens through ORT and the interpreter; max |diff| of every output, and the ORT extras."""
    low = lower_graph(graph, options)
    onnx.checker.check_model(low.model, full_check=True)
    s = _session(low.model)
    names = [o.name for o in s.get_outputs()]
    state = {i.name: np.zeros(i.shape, np.float32) for i in s.get_inputs() if i.name != "tokens"}
    ref_state = [np.zeros(v.type.shape, v.type.np_dtype) for v in graph.inputs[1:]]
    V = vocab or graph.outputs[0].type.shape[-1]
    rng = np.random.default_rng(seed)
    worst = 0.0
    extras = []
    for _ in range(steps):
        tok = int(rng.integers(0, V))
        ref = run_graph(graph, [np.array([tok], np.int64)] + ref_state)
        outs = dict(zip(names, s.run(None, {"tokens": np.array([tok], np.int64), **state})))
        for spec, r in zip(low.outputs, ref):
            worst = max(worst, float(np.abs(outs[spec.name].astype(np.float64) - r).max()) if r.size else 0.0)
        ref_state = ref[1:1 + len(ref_state)]
        for k in state:
            state[k] = outs[k + "_out"]
        extras.append({k: int(v[0]) for k, v in outs.items() if k.startswith("events") or k == "macs"})
    assert worst <= tol, f"ORT differs from the interpreter by {worst}"
    return low, extras


# ------------------------------------------------------------------------------------------------ hand-built
def _sparse(rng, n_out, n_in, density, fmt, int8=False):
    m = rng.standard_normal((n_out, n_in)).astype(np.float32) * 0.5
    m[rng.random(m.shape) >= density] = 0
    if not int8:
        return SparseMatrix.from_dense(m, fmt)
    scale = (np.abs(m).max(axis=1) / 127 + 1e-8).astype(np.float32)
    q = np.round(m / scale[:, None]).astype(np.int8)
    sm = SparseMatrix.from_dense(q, fmt)
    sm.scale = scale
    return sm


def hand_built(vocab=30, emb=6, hidden=(10, 6), int8=False, biasless=False, expose_events=False, seed=0) -> Graph:
    """embedding -> sparse_matvec (csr) / compress_events + event_matvec (csc) -> egru_cell -> linear."""
    rng = np.random.default_rng(seed)
    g = Graph("step")
    tok = g.add_input("tokens", TensorType((1,), "i64"), role="tokens")
    states = []
    for l, h in enumerate(hidden):
        c = g.add_input(f"c{l}", TensorType((1, h)), role="state_in", layer=l, kind="c")
        y = g.add_input(f"y{l}", TensorType((1, h)), role="state_in", layer=l, kind="y")
        states.append((c, y))
    table = g.const(rng.uniform(-0.5, 0.5, (vocab, emb)).astype(np.float32), name="emb", label="embeddings.weight")
    x = g.op("embedding", table, tok)
    outs = []
    extra = []
    n_in = emb
    for l, h in enumerate(hidden):
        c, y = states[l]
        b = g.const(rng.normal(0, 0.3, 3 * h).astype(np.float32), name=f"b{l}")
        br = g.const(rng.normal(0, 0.3, 3 * h).astype(np.float32), name=f"br{l}")
        W = g.const(_sparse(rng, 3 * h, n_in, 0.5, "csr" if l == 0 else "csc", int8), name=f"W{l}")
        R = g.const(_sparse(rng, 3 * h, h, 0.5, "csc", int8), name=f"R{l}")
        if l == 0:
            gx = g.op("sparse_matvec", x, W, b)
        else:
            idx, val, cnt = g.multi_op("compress_events", x, names=[f"x{l}_idx", f"x{l}_val", f"x{l}_cnt"])
            gx = g.op("event_matvec", idx, val, cnt, W, b)
        ridx, rval, rcnt = g.multi_op("compress_events", y, names=[f"y{l}_idx", f"y{l}_val", f"y{l}_cnt"])
        if biasless:
            gh = g.op("add", g.op("event_matvec", ridx, rval, rcnt, R), br)
        else:
            gh = g.op("event_matvec", ridx, rval, rcnt, R, br)
        if expose_events and l == 0:
            extra += [ridx, rval, rcnt]
        thr = g.const(rng.uniform(0.0, 0.2, h).astype(np.float32), name=f"thr{l}")
        c2, y2 = g.multi_op("egru_cell", gx, gh, c, thr, names=[f"c{l}_next", f"y{l}_next"])
        c2.meta.update(role="state_out", layer=l, kind="c")
        y2.meta.update(role="state_out", layer=l, kind="y")
        outs += [c2, y2]
        x, n_in = y2, h
    dec_b = g.const(rng.normal(0, 0.1, vocab).astype(np.float32), name="dec_b")
    logits = g.op("linear", x, table, dec_b, name="logits")
    logits.meta["role"] = "logits"
    g.outputs = [logits] + outs + extra
    return g


@pytest.mark.parametrize("kw", [{}, {"biasless": True}, {"hidden": (8,), "emb": 8}, {"hidden": (9, 7, 6)}])
def test_hand_built_matches_interpreter(kw):
    g = hand_built(**kw)
    low, extras = _compare(g)
    assert {"CompressEvents", "EventMatVec", "EGRUCell"} <= set(low.stats["functions"])
    assert low.stats["folded_embedding"]
    assert any(e["events0"] > 0 for e in extras), "test model never fires"


def test_int8_matrices_exact_and_f16_close():
    g = hand_built(int8=True)
    low, _ = _compare(g)                                            # int8 rows + scale after the sum
    assert {"EventMatVecQ", "SparseWeightI8"} <= set(low.stats["functions"])
    low, _ = _compare(g, {"weight_dtype": "f32"})                   # dequantized at load
    assert "EventMatVecQ" not in low.stats["functions"]
    low, _ = _compare(hand_built(), {"weight_dtype": "f16"}, tol=5e-2)
    assert "EventMatVecF16" in low.stats["functions"]


def test_int8_weight_dtype_needs_quantized_weights():
    low, _ = _compare(hand_built(int8=True), {"weight_dtype": "int8"})
    assert "EventMatVecQ" in low.stats["functions"] and "EventMatVec" in low.stats["functions"]   # f32 decoder
    with pytest.raises(OnnxLoweringError, match="quantize-int8"):
        lower_graph(hand_built(), {"weight_dtype": "int8"})


def test_padded_compress_events_outputs():
    """compress_events results used as graph outputs keep the IR's padded semantics."""
    g = hand_built(expose_events=True)
    low, _ = _compare(g)
    kinds = [o.role for o in low.outputs]
    assert kinds.count("output") == 3


def test_extras_count_events_and_macs():
    g = hand_built()
    low, extras = _compare(g)
    names = [o.name for o in low.outputs]
    assert names[:5] == ["logits", "c0_out", "y0_out", "c1_out", "y1_out"]
    assert names[5:] == ["events0", "events1", "macs"]
    # reference MACs from the interpreter: dense input -> nnz of W0; events -> fan-out of the active units
    it = Interpreter(g)
    rng = np.random.default_rng(0)
    W0 = g.nodes[[n.op for n in g.nodes].index("sparse_matvec")].inputs[1].producer.attrs["data"]
    mats = {n.inputs[3]: n for n in g.nodes if n.op == "event_matvec"}
    for e in extras:
        tok = int(rng.integers(0, 30))
        prev = [a.copy() for a in it.state]
        out = it.step(tok, None)
        assert e["events0"] == np.count_nonzero(it.state[1]) and e["events1"] == np.count_nonzero(it.state[3])
        ys = {"y0": prev[1], "y1": prev[3], "y0_next": it.state[1]}
        macs = W0.nnz
        for wv, n in mats.items():
            src = n.inputs[0].producer.inputs[0]
            act = ys[src.name].reshape(-1) != 0
            macs += int(wv.producer.attrs["data"].column_nnz()[act].sum())
        assert e["macs"] == macs
        del out


# ------------------------------------------------------------------------------------------------ traced
@pytest.fixture(scope="module")
def traced():
    cache = {}

    def get(hidden, sparsity=0.5, seed=0):
        key = (hidden, sparsity, seed)
        if key not in cache:
            m = make_model(vocab=40, emb=hidden[-1], hidden=hidden, sparsity=sparsity, seed=seed)
            raw = trace_model(m)
            cache[key] = (m, raw, PassManager(None).run(raw))
        return cache[key]
    return get


@pytest.mark.parametrize("hidden", [(8,), (12, 8), (10, 12, 8)])
def test_traced_models_match_interpreter(traced, hidden):
    _, raw, opt = traced(hidden)
    low_raw, ex_raw = _compare(raw)
    low_opt, ex_opt = _compare(opt)
    assert ex_raw == ex_opt                  # same activity and MACs from the frontend and optimised IR
    assert low_opt.stats["gated_matvecs"] == 2 * len(hidden)      # (L-1) inputs + L recurrent + decoder
    dense, _ = _compare(raw, {"event_gating": False, "fold_embedding": False, "sparse_storage": False})
    assert dense.stats["gated_matvecs"] == 0
    dense_opt, ex_dense = _compare(opt, {"event_gating": False})      # select-gating un-gates event_matvec
    assert dense_opt.stats["gated_matvecs"] == 0 and "EventMatVec" not in dense_opt.stats["functions"]
    assert ex_dense == ex_opt                # the events{l} / macs extras do not depend on how products run


def test_dense_lowering_for_highly_active_layers(traced):
    """With calibration activity above gate_max_activity, products of that layer's events stay dense."""
    _, _, opt = traced((12, 8))
    g = opt.clone()
    g.analyses.put(dataclasses.replace(g.analyses.get(MacReport), activity=[0.9, 0.1]))
    low, _ = _compare(g)
    assert low.stats["dense_by_activity"] and low.stats["dense_matvecs"] == 2   # layer 1 input, layer 0 recurrent
    assert low.stats["gated_matvecs"] == 2                                       # layer 1 recurrent, decoder


def test_checker_full_check_and_op_names(traced, tmp_path):
    _, _, opt = traced((12, 8))
    res = compile_onnx(opt, None, tmp_path / "a", {})
    model = onnx.load(str(tmp_path / "a" / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {f.name for f in model.functions} <= set(OP_NAMES)
    assert all(f.domain == "ai.egru" for f in model.functions)
    assert {o.domain for o in model.opset_import} == {"", "ai.egru"}
    assert all(n.domain in ("", "ai.egru") for f in model.functions for n in f.node if n.domain)
    assert not any(n.domain for f in model.functions for n in f.node)    # bodies: standard ops only
    assert res["manifest"]["target"] == "onnx"


def test_more_pruning_smaller_file(traced, tmp_path):
    sizes = {}
    for sp in (0.3, 0.9):
        _, _, opt = traced((12, 8), sparsity=sp)
        m = compile_onnx(opt, None, tmp_path / f"s{sp}", {})["manifest"]
        sizes[sp] = (tmp_path / f"s{sp}" / "model.onnx").stat().st_size
        assert m["model_bytes"] == sizes[sp]
    assert sizes[0.9] < sizes[0.3]


def test_deterministic_bytes(traced, tmp_path):
    _, _, opt = traced((12, 8))
    a = compile_onnx(opt, None, tmp_path / "a", {"passes": "default"})
    b = compile_onnx(opt.clone(), None, tmp_path / "b", {"passes": "default"})
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    assert a["summary"] == b["summary"]


def test_manifest_and_vocab(tmp_path):
    from egru_compile.frontend import load_source, save_checkpoint
    m = make_model(vocab=20, emb=8, hidden=(8,), sparsity=0.5)
    words = [f"w{i}" for i in range(19)] + ["<eos>"]
    save_checkpoint(tmp_path / "m.pt", m, words)
    src = load_source(tmp_path / "m.pt")
    g = PassManager(None).run(src.to_graph())
    compile_onnx(g, src, tmp_path / "out", {"passes": None, "calib_token_ids": np.arange(3)})
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["target"] == "onnx" and man["source_sha256"] == src.sha256 and man["vocab"] == "vocab.txt"
    assert (tmp_path / "out" / "vocab.txt").read_text().split("\n")[:-1] == words
    assert [i["name"] for i in man["inputs"]] == ["tokens", "c0", "y0"]
    assert [o["name"] for o in man["outputs"]] == ["logits", "c0_out", "y0_out", "events0", "macs"]
    assert man["inputs"][1]["shape"] == [1, 8] and man["outputs"][0]["shape"] == [1, 20]
    assert man["options"]["onnx"]["weight_dtype"] == "auto"
    assert man["weights"]["nnz"] < man["weights"]["dense"]


def test_load_time_folding(traced, tmp_path):
    """ORT constant-folds the CSR expansion and the embedding product when the session is created."""
    _, _, opt = traced((12, 8))
    low = lower_graph(opt)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(serialize(low.model), so, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert not ops & {"ScatterElements", "CumSum", "ConstantOfShape", "Transpose"}, ops
    assert "NonZero" in ops                     # events are compressed per step


def test_lowering_error_writes_nothing(traced, tmp_path):
    _, _, opt = traced((8,))
    g = Graph("step")
    t = g.add_input("tokens", TensorType((1,), "i64"), role="tokens")
    g.outputs = [g.op("cast", t, dtype="f32")]
    g.outputs[0].meta["role"] = "logits"
    from egru_compile.ir import ops as irops
    irops.OPS["__weird__"] = irops.OPS["tanh"]
    try:
        g.nodes[-1].op = "__weird__"
        g.nodes[-1].attrs = {}                      # tanh's signature takes no dtype
        with pytest.raises(OnnxLoweringError):
            compile_onnx(g, None, tmp_path / "x", {})
    finally:
        del irops.OPS["__weird__"]
    assert list(tmp_path.iterdir()) == []          # nothing written before lowering and checking succeed
    compile_onnx(opt, None, tmp_path / "full", {})
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["manifest.json", "model.onnx", "report.txt"]

