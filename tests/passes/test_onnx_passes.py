"""The ONNX target's passes (select-gating, fold-embedding, weight-precision) and its op -> handler table.

Each pass: a minimal hand-built one-layer EGRU step (no tracer, no other pass) -> the pass -> compared
node by node with the expected graph, built by hand too; the IR interpreter gives the same outputs before
and after; the ONNX lowering of the rewritten graph (without re-running the passes) agrees with the
interpreter, so the lowering follows what the pass decided.
"""
from __future__ import annotations

import numpy as np
import pytest

from egru_compile.ir import Graph, SparseMatrix, TensorType, run_graph
from egru_compile.ir.ops import OPS
from egru_compile.passes import PASS_REGISTRY, PassError, PassManager, known_passes
from egru_compile.passes.fold_embedding import fold_embedding
from egru_compile.passes.select_gating import select_gating
from egru_compile.passes.weight_precision import weight_precision
from egru_compile.targets.onnx.runner import create_session
from egru_compile.targets.onnx import ONNX_PIPELINE_NEEDS, OnnxLoweringError, lower_graph, prepare_graph, serialize
from egru_compile.targets.onnx.handlers import HANDLERS
from egru_compile.targets.onnx.options import OnnxOptions

V, E, H = 12, 6, 6          # tied decoder: the embedding width is the hidden size


def _sparse(rng, n_out, n_in, fmt, int8=False):
    m = (rng.standard_normal((n_out, n_in)) * 0.6).astype(np.float32)
    m[rng.random(m.shape) >= 0.5] = 0
    if not int8:
        return SparseMatrix.from_dense(m, fmt)
    scale = (np.abs(m).max(axis=1) / 127 + 1e-8).astype(np.float32)
    q = SparseMatrix.from_dense(np.round(m / scale[:, None]).astype(np.int8), fmt)
    q.scale = scale
    return q


def one_layer(recurrent="sparse", int8=False, gx_attrs=None, gh_attrs=None, dec_attrs=None, seed=0) -> Graph:
    """tokens -> embedding -> sparse_matvec (input) + [compress_events + event_matvec | sparse_matvec]
    (recurrent) -> egru_cell -> linear (decoder tied to the embedding table)."""
    rng = np.random.default_rng(seed)
    g = Graph("step")
    tok = g.add_input("tokens", TensorType((1,), "i64"), role="tokens")
    c = g.add_input("c0", TensorType((1, H)), role="state_in", layer=0, kind="c")
    y = g.add_input("y0", TensorType((1, H)), role="state_in", layer=0, kind="y")
    table = g.const(rng.uniform(-1, 1, (V, E)).astype(np.float32), name="table", label="emb.weight")
    W = g.const(_sparse(rng, 3 * H, E, "csr", int8), name="W")
    b = g.const(rng.normal(0, 0.3, 3 * H).astype(np.float32), name="b")
    R = g.const(_sparse(rng, 3 * H, H, "csc", int8), name="R")
    br = g.const(rng.normal(0, 0.3, 3 * H).astype(np.float32), name="br")
    thr = g.const(rng.uniform(0.0, 0.2, H).astype(np.float32), name="thr")
    dec_b = g.const(rng.normal(0, 0.1, V).astype(np.float32), name="dec_b")
    x = g.op("embedding", table, tok, name="x")
    gx = g.op("sparse_matvec", x, W, b, name="gx", layer=0, role="input", **(gx_attrs or {}))
    if recurrent == "sparse":
        gh = g.op("sparse_matvec", y, R, br, name="gh", layer=0, role="recurrent", **(gh_attrs or {}))
    else:
        ev = g.multi_op("compress_events", y, names=["y0_idx", "y0_val", "y0_count"])
        gh = g.op("event_matvec", *ev, R, br, name="gh", layer=0, role="recurrent", **(gh_attrs or {}))
    c2, y2 = g.multi_op("egru_cell", gx, gh, c, thr, names=["c0_next", "y0_next"], layer=0)
    c2.meta.update(role="state_out", layer=0, kind="c")
    y2.meta.update(role="state_out", layer=0, kind="y")
    logits = g.op("linear", y2, table, dec_b, name="logits", **(dec_attrs or {}))
    logits.meta["role"] = "logits"
    g.outputs = [logits, c2, y2]
    return g


def _data(d):
    if isinstance(d, SparseMatrix):
        return ("sparse", d.fmt, d.shape, d.to_dense().tolist(), None if d.scale is None else d.scale.tolist())
    return ("dense", np.asarray(d).tolist())


def structure(g: Graph) -> list:
    """Node by node: results, op, operands (by name), attributes (constants by value)."""
    rows = []
    for n in g.nodes:
        attrs = {k: (_data(v) if k == "data" else v) for k, v in sorted(n.attrs.items())}
        rows.append(([v.name for v in n.outputs], n.op, [v.name for v in n.inputs], attrs))
    return rows + [("return", [v.name for v in g.outputs])]


def _inputs(g: Graph, rng):
    """Random token and states; y has some exact zeros (silent units), as an EGRU's events."""
    vals = [np.array([rng.integers(0, V)], np.int64)]
    for v in g.inputs[1:]:
        a = rng.normal(0, 0.5, v.type.shape).astype(np.float32)
        if v.meta.get("kind") == "y":
            a[rng.random(a.shape) < 0.5] = 0
        vals.append(a)
    return vals


def same_results(before: Graph, after: Graph, exact: bool, trials=20):
    rng = np.random.default_rng(1)
    for _ in range(trials):
        ins = _inputs(before, rng)
        for r0, r1 in zip(run_graph(before, ins), run_graph(after, ins)):
            if exact:
                np.testing.assert_array_equal(r0, r1)
            else:
                np.testing.assert_allclose(r0, r1, rtol=1e-5, atol=1e-6)


def onnx_agrees(g: Graph, options=None, trials=20, tol=1e-5):
    """Lower `g` as it is (the passes already ran) and compare ORT with the interpreter."""
    low = lower_graph(g, options, prepare=False)
    s = create_session(serialize(low.model))
    rng = np.random.default_rng(2)
    for _ in range(trials):
        ins = _inputs(g, rng)
        feed = {spec.name: a for spec, a in zip(low.inputs, ins)}
        outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))
        for spec, r in zip(low.outputs, run_graph(g, ins)):
            np.testing.assert_allclose(outs[spec.name], r, rtol=tol, atol=tol)
    return low


def _run(fn, g, *args, **kw):
    g = g.clone()
    stats = fn(g, *args, **kw)
    return g, stats


# ------------------------------------------------------------------------------------------------ select-gating
def test_select_gating_gates_event_products():
    before = one_layer("sparse")
    after, st = _run(select_gating, before)
    assert structure(after) == structure(one_layer("event", dec_attrs={"gated": True}))
    assert st == {"gated": 2, "dense": 0, "dense_by_activity": []}
    same_results(before, after, exact=False)
    low = onnx_agrees(after)
    assert low.stats["gated_matvecs"] == 2 and low.stats["dense_matvecs"] == 1     # + the embedding product


def test_select_gating_densifies_busy_layers():
    before = one_layer("event", dec_attrs={"gated": True})
    from egru_compile.passes import MacReport
    before.analyses.put(MacReport(macs_per_token=None, layers=[], activity=[0.9], density={}, matrices=[],
                                  decoder_macs_per_token=0, calib_tokens=0))
    after, st = _run(select_gating, before, max_activity=0.5)
    assert structure(after) == structure(one_layer("sparse"))
    assert st["dense"] == 2 and st["dense_by_activity"] == [0, 0]
    same_results(before, after, exact=False)
    low = onnx_agrees(after)
    assert low.stats["gated_matvecs"] == 0 and "EventMatVec" not in low.stats["functions"]
    kept, _ = _run(select_gating, before, max_activity=0.95)         # below the threshold: gated
    assert structure(kept) == structure(one_layer("event", dec_attrs={"gated": True}))


def test_select_gating_options():
    off, st = _run(select_gating, one_layer("event"), enabled=False)
    assert structure(off) == structure(one_layer("sparse")) and st["gated"] == 0
    no_dec, _ = _run(select_gating, one_layer("sparse"), decoder=False)
    assert structure(no_dec) == structure(one_layer("event"))


def test_select_gating_converts_csr_to_csc():
    """A CSR recurrent matrix is gated through a CSC copy (the rows an event touches are contiguous)."""
    g = one_layer("sparse")
    r = next(n for n in g.nodes if n.op == "const" and n.outputs[0].name == "R")
    r.attrs["data"] = r.attrs["data"].convert("csr")
    after, _ = _run(select_gating, g)
    em = next(n for n in after.nodes if n.op == "event_matvec")
    assert em.inputs[3].name == "R_csc" and em.inputs[3].producer.attrs["data"].fmt == "csc"
    assert not any(n.outputs[0].name == "R" for n in after.nodes)          # the CSR original is gone
    same_results(g, after, exact=False)


# ------------------------------------------------------------------------------------------------ fold-embedding
def test_fold_embedding_marks_the_embedding_product():
    before = one_layer("event")
    after, n = _run(fold_embedding, before)
    assert n == 1
    assert structure(after) == structure(one_layer("event", gx_attrs={"fold_embedding": True}))
    same_results(before, after, exact=True)
    low = onnx_agrees(after)
    assert low.stats["folded_embedding"] and "EmbedMatVec" in low.stats["functions"]


def test_fold_embedding_size_limit_and_mode():
    g = one_layer("event")
    assert _run(fold_embedding, g, None, 0.0)[1] == 0             # V x 3h table larger than 0 MiB
    assert _run(fold_embedding, g, False)[1] == 0
    unmarked, n = _run(fold_embedding, one_layer("event", gx_attrs={"fold_embedding": True}), False)
    assert n == 0 and structure(unmarked) == structure(g)           # a second run re-decides
    forced, n = _run(fold_embedding, g, True, 0.0)
    assert n == 1 and structure(forced) == structure(one_layer("event", gx_attrs={"fold_embedding": True}))
    low = onnx_agrees(one_layer("event"))                          # not marked: a Gather and a SparseMatVec
    assert not low.stats["folded_embedding"] and "EmbedMatVec" not in low.stats["functions"]


# ------------------------------------------------------------------------------------------------ weight-precision
@pytest.mark.parametrize("mode,gh,dec", [("auto", "i8", "f32"), ("int8", "i8", "f32"), ("f32", "f32", "f32"),
                                         ("f16", "f16", "f16")])
def test_weight_precision_int8_graph(mode, gh, dec):
    before = one_layer("event", int8=True, dec_attrs={"gated": True})
    after, n = _run(weight_precision, before, mode)
    expected = one_layer("event", int8=True, gh_attrs={"weight_dtype": gh},
                         dec_attrs={"gated": True, "weight_dtype": dec})
    assert structure(after) == structure(expected) and n == (gh == "i8")
    same_results(before, after, exact=True)
    low = onnx_agrees(after, tol=5e-2 if mode == "f16" else 1e-5)
    fns = set(low.stats["functions"])
    assert ("EventMatVecQ" in fns) == (gh == "i8") and ("EventMatVecF16" in fns) == (mode == "f16")


def test_weight_precision_int8_needs_quantized_weights():
    with pytest.raises(PassError, match="quantize-int8"):
        weight_precision(one_layer("event").clone(), "int8")
    with pytest.raises(PassError, match="weight dtype"):
        weight_precision(one_layer("event").clone(), "int4")
    after, n = _run(weight_precision, one_layer("event", dec_attrs={"gated": True}), "auto")
    assert n == 0 and structure(after) == structure(
        one_layer("event", gh_attrs={"weight_dtype": "f32"}, dec_attrs={"gated": True, "weight_dtype": "f32"}))


# ------------------------------------------------------------------------------------------------ pipeline / table
def test_pipeline_passes_registered_with_before_after_docs():
    assert ONNX_PIPELINE_NEEDS == ("select-gating", "fold-embedding", "weight-precision")
    for name in ONNX_PIPELINE_NEEDS:
        assert name in known_passes()
        doc = __import__(PASS_REGISTRY[name].fn.__module__, fromlist=["x"]).__doc__
        assert "Before" in doc and "After" in doc


def test_pipeline_by_name_uses_defaults_and_target_options():
    """Run by name (no target options) the passes use their defaults; prepare_graph passes OnnxOptions."""
    g = one_layer("sparse", int8=True)
    by_name = PassManager(list(ONNX_PIPELINE_NEEDS)).run(g)
    expected = one_layer("event", int8=True, gx_attrs={"fold_embedding": True}, gh_attrs={"weight_dtype": "i8"},
                         dec_attrs={"gated": True, "weight_dtype": "f32"})
    assert structure(by_name) == structure(expected)
    prepared, stats = prepare_graph(g, OnnxOptions(event_decoder=False, fold_embedding=False, weight_dtype="f32"))
    expected = one_layer("event", int8=True, gh_attrs={"weight_dtype": "f32"})
    assert structure(prepared) == structure(expected)
    assert stats["select-gating"]["gated"] == 1 and structure(g) == structure(one_layer("sparse", int8=True))
    with pytest.raises(OnnxLoweringError, match="quantize-int8"):
        prepare_graph(one_layer("sparse"), OnnxOptions(weight_dtype="int8"))


def test_passes_idempotent_lowering_unchanged():
    """Preparing an already prepared graph changes nothing: the same ONNX bytes."""
    g = one_layer("sparse", int8=True)
    once, _ = prepare_graph(g, OnnxOptions())
    twice, _ = prepare_graph(once, OnnxOptions())
    assert structure(once) == structure(twice)
    assert serialize(lower_graph(g).model) == serialize(lower_graph(once, prepare=False).model)


def test_every_ir_op_has_a_handler_and_unknown_ops_name_the_op():
    assert set(OPS) - {"const"} <= set(HANDLERS)
    g = Graph("step")
    t = g.add_input("tokens", TensorType((1,), "i64"), role="tokens")
    g.outputs = [g.op("cast", t, dtype="f32")]
    g.outputs[0].meta["role"] = "logits"
    OPS["__weird__"] = OPS["tanh"]
    try:
        g.nodes[-1].op = "__weird__"
        with pytest.raises(OnnxLoweringError) as e:
            lower_graph(g, prepare=False)
    finally:
        del OPS["__weird__"]
    msg = str(e.value)
    assert "'__weird__'" in msg and "\n" not in msg
