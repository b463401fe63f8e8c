"""`egru_compile.runtime.traffic` (bytes of weights and indices touched per token, issue 17 item 4) against a
recount from first principles: the PyTorch model's own weight matrices and the units that fire in its own
`step`, with the storage rules stated by the targets (TVM: input-major CSR, f32 values, int16 indices when
4h <= 32767, 2 int32 pointers + an int32/f32 event entry per active unit; ONNX: the whole dense row of WT per
active unit + an int64/f32 event entry, the int8 per-output scale once per product; dense: every matrix)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_model
from egru_compile.frontend import trace_model
from egru_compile.passes import PassManager
from egru_compile.runtime import open_artifact
from egru_compile.runtime import traffic as BB
from egru_compile.targets import get_target

V, E, HID = 50, 16, (24, 16)
BURN, N = 3, 25


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("bytes")
    model = make_model(vocab=V, emb=E, hidden=HID, sparsity=0.8, seed=3, thr=(0.05, 0.3))
    opt = PassManager(None).run(trace_model(model))
    get_target("onnx")(opt, None, d / "onnx", {})
    get_target("onnx")(PassManager(["quantize-int8"]).run(opt), None, d / "onnx8", {"weight_dtype": "int8"})
    get_target("onnx")(PassManager(["quantize-int8"]).run(opt), None, d / "onnx8d",
                       {"weight_dtype": "int8", "decoder_dtype": "int8"})
    toks = np.random.default_rng(1).integers(0, V, BURN + N)
    # the reference: which units fire at each step, from PyTorch's own step
    active = []
    with torch.no_grad():
        state = model.init_state(1)
        for t in toks:
            _, state = model.step(torch.tensor([int(t)]), state)
            active.append([np.flatnonzero(y.numpy().reshape(-1)) for _, y in state])
    counts = np.array([[len(a) for a in step] for step in active[BURN:]])
    assert (counts.sum(0) > 0).all() and (counts.max(0) < np.array(HID)).all(), "some but not all units fire"
    W = [layer.kernel.detach().numpy() for layer in model.rnns]            # [n_in, 3h]
    R = [layer.recurrent_kernel.detach().numpy() for layer in model.rnns]  # [h, 3h]
    return d, model, toks, active, W, R


def _parts(acc):
    return {p.name: p.bytes for p in acc.parts}


def _prev(active, i, l):
    return active[i - 1][l] if i > 0 else np.array([], int)


def test_tvm_counts_match_recount(setup, tmp_path):
    pytest.importorskip("tvm")
    d, model, toks, active, W, R = setup
    opt = PassManager(None).run(trace_model(model))
    (tmp_path / "tvm").mkdir()
    get_target("tvm")(opt, None, tmp_path / "tvm", {})
    got = _parts(BB.tvm_accounting(open_artifact(tmp_path / "tvm"), toks, BURN, N))
    L = len(HID)
    exp = {k: 0.0 for k in got}
    for i in range(BURN, BURN + N):
        for l, h in enumerate(HID):
            rows = _prev(active, i, l)
            exp[f"L{l} R"] += np.count_nonzero(R[l][rows]) * (4 + 2) + 16 * len(rows)
            if l == 0:
                exp["L0 W"] += 3 * h * 4                              # one row of the E @ W0 table
            else:
                rows = active[i][l - 1]
                exp[f"L{l} W"] += np.count_nonzero(W[l][rows]) * (4 + 2) + 16 * len(rows)
        k = len(active[i][L - 1])
        exp["decoder"] += k * V * 4 + 8 * k + V * 4
    for name in exp:
        assert got[name] == pytest.approx(exp[name] / N, rel=1e-9), name


def test_tvm_uint8_event_counts_match_recount(setup, tmp_path):
    """--event-dtype u8 (int8 decoder rows): per product, whole dense int8 rows of 3h padded to 64 bytes, 8 rows
    per pass (the last pass padded with row 0, read too), 8 bytes per event; the decoder likewise over V padded,
    plus its bias and scale once."""
    pytest.importorskip("tvm")
    from egru_compile.targets.tvm.spec import has_vnni
    if not has_vnni():
        pytest.skip("this CPU has no AVX512-VNNI")
    d, model, toks, active, W, R = setup
    q8 = PassManager(["quantize-int8"]).run(PassManager(None).run(trace_model(model)))
    (tmp_path / "u8").mkdir()
    get_target("tvm")(q8, None, tmp_path / "u8", {"weight_dtype": "int8", "event_dtype": "u8", "decoder_dtype": "int8"})
    got = _parts(BB.tvm_accounting(open_artifact(tmp_path / "u8"), toks, BURN, N))
    pad = lambda n: -(-n // 64) * 64                    # noqa: E731
    passes = lambda k: -(-k // 8) * 8                   # noqa: E731
    exp = {k: 0.0 for k in got}
    for i in range(BURN, BURN + N):
        for l, h in enumerate(HID):
            rows = _prev(active, i, l)
            exp[f"L{l} R"] += passes(len(rows)) * pad(3 * h) + 8 * len(rows)
            if l == 0:
                exp["L0 W"] += 3 * h * 4
            else:
                rows = active[i][l - 1]
                exp[f"L{l} W"] += passes(len(rows)) * pad(3 * h) + 8 * len(rows)
        k = len(active[i][len(HID) - 1])
        exp["decoder"] += passes(k) * pad(V) + 8 * k + 2 * V * 4
    for name in exp:
        assert got[name] == pytest.approx(exp[name] / N, rel=1e-9), name


@pytest.mark.parametrize("int8,dec8", [(False, False), (True, False), (True, True)])
def test_onnx_counts_match_recount(setup, int8, dec8):
    d, model, toks, active, W, R = setup
    art = d / ("onnx8d" if dec8 else "onnx8" if int8 else "onnx")
    got = _parts(BB.onnx_accounting(art, open_artifact(art, threads=1), toks, BURN, N))
    vb, once = (1, True) if int8 else (4, False)
    L = len(HID)
    exp = {k: 0.0 for k in got}
    for i in range(BURN, BURN + N):
        for l, h in enumerate(HID):
            rows = _prev(active, i, l)
            exp[f"L{l} R"] += len(rows) * (3 * h * vb + 12) + (3 * h * 4 if once else 0)
            if l == 0:
                exp["L0 W"] += 3 * h * 4                              # one row of the folded f32 table
            else:
                rows = active[i][l - 1]
                exp[f"L{l} W"] += len(rows) * (3 * h * vb + 12) + (3 * h * 4 if once else 0)
        if dec8:        # int8 decoder rows: 1 byte per logit and row, the per-logit scale once
            exp["decoder"] += len(active[i][L - 1]) * (V * 1 + 12) + V * 4
        else:           # the tied decoder stays f32
            exp["decoder"] += len(active[i][L - 1]) * (V * 4 + 12)
    for name in exp:
        assert got[name] == pytest.approx(exp[name] / N, rel=1e-9), name


def test_dense_counts_every_matrix(setup):
    d, model, toks, active, W, R = setup
    got = _parts(BB.dense_accounting(model, "dense"))
    for l, h in enumerate(HID):
        assert got[f"L{l} W"] == W[l].size * 4 + 3 * h * 4 + (E * 4 if l == 0 else 0)
        assert got[f"L{l} R"] == R[l].size * 4 + 3 * h * 4
    assert got["decoder"] == V * E * 4 + V * 4
