"""TVM TIR kernels for batch-1 event-driven EGRU inference: parity with the IR op semantics (tvm_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from egru_compile.ir.ops import OPS  # noqa: E402
from egru_compile.targets.tvm import (EGRUKernelSpec, TVMStepRunner, build_kernel_library,  # noqa: E402
                                      default_target, from_input_major, pack_layer, to_input_major)
from tvm_reference import extra_kernels, rand_model, reference_run  # noqa: E402

TOL = 1e-5


def test_input_major_roundtrip():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((7, 12)).astype(np.float32)
    W[rng.random(W.shape) < 0.7] = 0
    p, i, d = to_input_major(W, np.int16)
    assert p.dtype == np.int32 and i.dtype == np.int16 and d.dtype == np.float32
    assert p[-1] == np.count_nonzero(W) == len(d)
    for r in range(7):  # row r of W = column r of W^T
        np.testing.assert_array_equal(i[p[r]:p[r + 1]], np.flatnonzero(W[r]))
    np.testing.assert_array_equal(from_input_major(p, i, d, 12), W)


@pytest.mark.parametrize("hidden,embed_mode,index_dtype,interleave", [
    ((24,), "csc", "auto", 8),
    ((24, 16), "csc", "auto", 8),
    ((24, 16), "table", "int32", 8),
    ((96, 64), "csc", "auto", 8),  # enough events per step for the 8-column interleaved scatter path
    ((96, 64), "csc", "auto", 1),  # one column at a time (no interleaving)
])
def test_fused_step_parity(hidden, embed_mode, index_dtype, interleave):
    E, layers, db = rand_model(hidden=hidden, emb=hidden[-1])  # tied decoder: hidden[-1] == emb
    r = TVMStepRunner(E, layers, db, embed_mode=embed_mode, index_dtype=index_dtype, interleave=interleave)
    toks = np.random.default_rng(2).integers(0, E.shape[0], 50)
    ref, ref_state = reference_run(toks, E, layers, E, db)
    acts = []
    out = []
    for t in toks:
        out.append(r.step(int(t)))
        acts.append(r.activity())
    out = np.stack(out)
    assert np.abs(out - ref).max() <= TOL
    for (c, y), (rc, ry) in zip(r.get_state(), ref_state):
        assert np.abs(c - rc).max() <= TOL and np.abs(y - ry).max() <= TOL
    acts = np.array(acts)
    assert 0.02 < acts.mean() < 0.9, acts.mean()  # the test exercises real events
    # K-token variant from the same initial state, states carried
    r.reset()
    np.testing.assert_allclose(r.run(toks[:20]), ref[:20], atol=TOL, rtol=0)
    np.testing.assert_allclose(r.run(toks[20:]), ref[20:], atol=TOL, rtol=0)


def test_prefetch_changes_no_result():
    """The software prefetch of the next event column (spec.prefetch) leaves every sum and its order as they
    are: the logits are bit-identical to the kernel without it, and match the reference."""
    E, layers, db = rand_model(hidden=(96, 64), emb=64, seed=8)
    toks = np.random.default_rng(9).integers(0, E.shape[0], 40)
    ref, _ = reference_run(toks, E, layers, E, db)
    plain = TVMStepRunner(E, layers, db, prefetch=0).run(toks)
    assert np.abs(plain - ref).max() <= TOL
    np.testing.assert_array_equal(TVMStepRunner(E, layers, db, prefetch=2).run(toks), plain)
    assert EGRUKernelSpec.from_dict({"vocab_size": 3, "embedding_size": 2, "hidden_sizes": [4]}).prefetch == 0


def test_precise_math_and_untied_decoder():
    E, layers, db = rand_model(hidden=(20, 12), emb=16, seed=3)
    D = np.random.default_rng(4).standard_normal((E.shape[0], 12)).astype(np.float32) * 0.3
    r = TVMStepRunner(E, layers, db, D, fast_math=False, decoder_unroll=1, decoder_chunk=8)
    toks = np.random.default_rng(5).integers(0, E.shape[0], 50)
    ref, _ = reference_run(toks, E, layers, D, db)
    assert np.abs(r.run(toks) - ref).max() <= TOL


def test_csr_weights_and_set_state():
    """Weights given as input-major CSR triples; a non-zero initial state is compressed correctly."""
    E, layers, db = rand_model(hidden=(24, 16), emb=16, seed=6)
    csr_layers = [dict(L, W=to_input_major(L["W"]), R=to_input_major(L["R"])) for L in layers]
    r = TVMStepRunner(E, csr_layers, db, embed_mode="table", decoder_mode="dense")
    rng = np.random.default_rng(7)
    state = []
    for L in layers:
        h = L["thr"].shape[0]
        y = np.where(rng.random(h) < 0.3, rng.uniform(0.2, 1, h), 0).astype(np.float32)
        state.append((rng.uniform(-0.2, 0.2, h).astype(np.float32), y))
    r.set_state(state)
    toks = rng.integers(0, E.shape[0], 50)
    ref, _ = reference_run(toks, E, layers, E, db, state=state)
    assert np.abs(np.stack([r.step(int(t)) for t in toks]) - ref).max() <= TOL


def test_pack_layer_rejects_bad_csr():
    W = np.zeros((3, 6), np.float32)
    W[0, 1] = W[2, 5] = 1.0
    p, i, d = to_input_major(W)
    R = np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        pack_layer((p, i + 1, d), R, np.zeros(6), np.zeros(6), np.zeros(2))
    with pytest.raises(ValueError, match="malformed"):
        pack_layer((p[::-1], i, d), R, np.zeros(6), np.zeros(6), np.zeros(2))
    pk = pack_layer(W, np.eye(2, 6, 4, dtype=np.float32), np.zeros(6), np.zeros(6), np.zeros(2))
    assert pk["w_idx"].dtype == np.int16
    np.testing.assert_array_equal(pk["r_idx"], [6, 7])  # g-part of R moved to the gh_g slot (+h)


def test_from_torch_model():
    torch = pytest.importorskip("torch")
    from conftest import make_model
    m = make_model(vocab=30, emb=16, hidden=(24, 16), sparsity=0.85)
    r = TVMStepRunner.from_model(m)
    toks = np.random.default_rng(10).integers(0, 30, 50)
    state = m.init_state(1)
    worst = 0.0
    with torch.no_grad():
        for t in toks:
            lg, state = m.step(torch.tensor([int(t)]), state)
            worst = max(worst, float(np.abs(r.step(int(t)) - lg[0].numpy()).max()))
    assert worst <= TOL


@pytest.mark.parametrize("index_dtype", ["int16", "int32"])
def test_kernel_library(index_dtype):
    T_ = tvm.runtime.tensor
    lib = build_kernel_library(index_dtype)
    extra = tvm.compile(tvm.IRModule(extra_kernels()), default_target())
    rng = np.random.default_rng(11)
    n_in, h, V = 40, 36, 30

    def sparse(shape):
        W = rng.standard_normal(shape).astype(np.float32)
        W[rng.random(shape) < 0.8] = 0
        return W

    def events(n, p=0.3):
        y = np.where(rng.random(n) < p, rng.uniform(0.1, 1, n), 0).astype(np.float32)
        nz = np.flatnonzero(y)
        ei = np.zeros(n, np.int32)
        ev = np.zeros(n, np.float32)
        ei[:len(nz)], ev[:len(nz)] = nz, y[nz]
        return y, ei, ev, np.array([len(nz)], np.int32)

    # 1. compress
    y, ei, ev, en = events(h)
    t = [T_(y), T_(np.zeros(h, np.int32)), T_(np.zeros(h, np.float32)), T_(np.zeros(1, np.int32))]
    extra["compress"](*t)
    assert t[3].numpy()[0] == en[0]
    np.testing.assert_array_equal(t[1].numpy()[:en[0]], ei[:en[0]])
    np.testing.assert_array_equal(t[2].numpy()[:en[0]], ev[:en[0]])
    # 2. event-gated sparse matvec and 3. dense-input sparse matvec
    W = sparse((n_in, 3 * h))
    p, i, d = to_input_major(W, index_dtype)
    bias = rng.standard_normal(3 * h).astype(np.float32)
    x, xi, xv, xn = events(n_in)
    acc = T_(np.zeros(3 * h, np.float32))
    lib["event_matvec"](T_(p), T_(i), T_(d), T_(xi), T_(xv), T_(xn), T_(bias), acc)
    np.testing.assert_allclose(acc.numpy(), x @ W + bias, atol=TOL, rtol=0)
    xd = rng.standard_normal(n_in).astype(np.float32)
    lib["dense_matvec"](T_(p), T_(i), T_(d), T_(xd), T_(bias), acc)
    np.testing.assert_allclose(acc.numpy(), xd @ W + bias, atol=TOL, rtol=0)
    # 4. update (+ fused compression) against the reference layer math
    gx = rng.standard_normal(3 * h).astype(np.float32)
    gh = rng.standard_normal(3 * h).astype(np.float32)
    thr = rng.uniform(0, 0.3, h).astype(np.float32)
    c0 = rng.uniform(-0.5, 0.5, h).astype(np.float32)
    (c_ref,), (y_ref,) = OPS["egru_cell"].compute({}, gx[None], gh[None], c0[None], thr)
    c, yy, qi, qv, qn = T_(c0), T_(np.zeros(h, np.float32)), T_(np.zeros(h, np.int32)), \
        T_(np.zeros(h, np.float32)), T_(np.zeros(1, np.int32))
    lib["update"](T_(gx), T_(gh), T_(thr), c, yy, qi, qv, qn)
    np.testing.assert_allclose(c.numpy(), c_ref, atol=TOL, rtol=0)
    np.testing.assert_allclose(yy.numpy(), y_ref, atol=TOL, rtol=0)
    assert qn.numpy()[0] == np.count_nonzero(y_ref)
    np.testing.assert_array_equal(qi.numpy()[:qn.numpy()[0]], np.flatnonzero(y_ref))
    # 4b. whole layer with packed weights (input events x, recurrent events y)
    R = sparse((h, 3 * h))
    L = dict(W=W, R=R, b=bias, br=rng.standard_normal(3 * h).astype(np.float32), thr=thr)
    pk = pack_layer(L["W"], L["R"], L["b"], L["br"], L["thr"], index_dtype)
    y0, yi, yv, yn = events(h)
    c0 = rng.uniform(-0.5, 0.5, h).astype(np.float32)
    ref, [(rc, ry)] = reference_run([0], x[None, :], [L], np.zeros((1, h), np.float32), np.zeros(1, np.float32),
                                    state=[(c0, y0)])
    st = [T_(c0), T_(y0), T_(yi), T_(yv), T_(yn)]
    lib["egru_layer"](T_(xi), T_(xv), T_(xn), T_(pk["w_ptr"]), T_(pk["w_idx"]), T_(pk["w_val"]), T_(pk["r_ptr"]),
                      T_(pk["r_idx"]), T_(pk["r_val"]), T_(pk["thr"]), T_(pk["bias4"]), *st,
                      T_(np.zeros(4 * h, np.float32)))
    np.testing.assert_allclose(st[0].numpy(), rc, atol=TOL, rtol=0)
    np.testing.assert_allclose(st[1].numpy(), ry, atol=TOL, rtol=0)
    assert st[4].numpy()[0] == np.count_nonzero(ry)
    # 5. event decoder
    D = rng.standard_normal((V, h)).astype(np.float32)
    db = rng.standard_normal(V).astype(np.float32)
    y, ei, ev, en = events(h)
    lg = T_(np.zeros(V, np.float32))
    extra["event_decoder"](T_(ei), T_(ev), T_(en), T_(np.ascontiguousarray(D.T)), T_(db), lg)
    np.testing.assert_allclose(lg.numpy(), D @ y + db, atol=TOL, rtol=0)


def test_auto_embed_mode_follows_the_table_size_limit():
    assert EGRUKernelSpec(50, 16, (24,), embed_mode="auto").embed_mode == "table"          # 50 x 72 floats
    assert EGRUKernelSpec(50, 16, (24,), embed_mode="auto", table_limit_mb=0.0).embed_mode == "csc"


def test_step_without_decoder_keeps_the_layer_states():
    """build_egru_step(with_decoder=False) (the benchmarks' RNN-only scope) runs the same layer loop."""
    from egru_compile.targets.tvm import build_egru_step
    E, layers, db = rand_model(hidden=(24, 16), emb=16, seed=12)
    spec = EGRUKernelSpec(E.shape[0], 16, (24, 16))
    r = TVMStepRunner(E, layers, db, spec=spec, module=build_egru_step(spec, with_decoder=False))
    toks = np.random.default_rng(13).integers(0, E.shape[0], 30)
    ref, ref_state = reference_run(toks, E, layers, E, db)
    for t in toks:
        logits = r.step(int(t))
    assert logits[0] == db[0]                     # the one store the decoder-less step keeps
    for (c, y), (rc, ry) in zip(r.get_state(), ref_state):
        assert np.abs(c - rc).max() <= TOL and np.abs(y - ry).max() <= TOL


@pytest.mark.parametrize("field,value", [("index_dtype", "int8"), ("vocab_size", 0), ("vocab_size", "50"),
                                         ("hidden_sizes", []), ("hidden_sizes", [24, 0]), ("interleave", -1),
                                         ("embed_mode", "rows"), ("decoder_mode", "sparse")])
def test_spec_rejects_bad_fields(field, value):
    d = EGRUKernelSpec(50, 16, (24,)).to_dict()
    d[field] = value
    with pytest.raises(ValueError):
        EGRUKernelSpec.from_dict(d)
