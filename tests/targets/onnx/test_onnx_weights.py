"""Constant storage of the ONNX lowering: constants are deduplicated by their values (`weights.content_key`),
not by which Python object holds them — equal arrays from two const nodes share one initializer, different ones
never do — and the model still agrees with the IR interpreter."""
from __future__ import annotations

import numpy as np
from onnx import numpy_helper
from test_onnx import _compare, hand_built

from egru_compile.ir import SparseMatrix
from egru_compile.targets.onnx.weights import content_key


def _consts(g) -> dict:
    return {n.outputs[0].name: n for n in g.nodes if n.op == "const"}


def _holding(model, a: np.ndarray) -> list[str]:
    """Names of the initializers equal to `a` (dtype, shape and values)."""
    return [t.name for t in model.graph.initializer
            if (b := numpy_helper.to_array(t)).dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b)]


def test_equal_constants_share_one_initializer():
    g = hand_built(hidden=(6, 6))
    c = _consts(g)
    thr = np.asarray(c["thr0"].attrs["data"])
    c["thr1"].attrs["data"] = thr.copy()                       # same values, another array object
    low, _ = _compare(g)                                       # ORT agrees with the interpreter
    shared = _holding(low.model, thr)
    assert len(shared) == 1
    cells = [nd for nd in low.model.graph.node if nd.op_type == "EGRUCell"]
    assert len(cells) == 2 and cells[0].input[3] == cells[1].input[3] == shared[0]


def test_different_constants_stay_apart():
    g = hand_built(hidden=(6, 6))
    c = _consts(g)
    thr = np.asarray(c["thr0"].attrs["data"])
    other = thr.copy()
    other[-1] = np.nextafter(other[-1], np.float32(1))          # one ulp apart in one element
    c["thr1"].attrs["data"] = other
    low, _ = _compare(g)
    assert len(_holding(low.model, thr)) == 1 and len(_holding(low.model, other)) == 1
    cells = [nd for nd in low.model.graph.node if nd.op_type == "EGRUCell"]
    assert cells[0].input[3] != cells[1].input[3]


def test_content_key():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert content_key(a) == content_key(a.copy()) == content_key(np.asfortranarray(a))
    assert content_key(a) != content_key(a.reshape(3, 2))                  # same bytes, other shape
    assert content_key(a) != content_key(a.view(np.int32))                 # same bytes, other dtype
    s = SparseMatrix.from_dense(a, "csc")
    assert content_key(s) == content_key(SparseMatrix.from_dense(a.copy(), "csc"))
    assert content_key(s) != content_key(SparseMatrix.from_dense(a, "csr"))
    q = SparseMatrix.from_dense(a.astype(np.int8), "csc")
    q.scale = np.ones(2, np.float32)
    q2 = SparseMatrix.from_dense(a.astype(np.int8), "csc")
    q2.scale = np.full(2, 2, np.float32)
    assert content_key(q) != content_key(q2)                                # same int8 values, other scale
