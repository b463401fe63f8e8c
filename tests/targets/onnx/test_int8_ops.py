"""The integer-product body of ``ai.egru.EventMatVecQ`` (`targets.onnx.bodies`, batched: `bodies_batched`) in stock
onnxruntime, against a float64 recount: the error is within the stated bound (event values rounded to 2^-22 max|val|, plus float32
rounding), an empty event list gives exactly zero, and the batched body is bit-identical per stream to batch 1."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from egru_compile.targets.onnx import bodies, bodies_batched
from egru_compile.targets.onnx import functions as F
from egru_compile.targets.onnx.batch import BATCHED

ONE = F.function_proto(bodies.EventMatVecQ)
BATCH = F.function_proto(bodies_batched.EventMatVecQ)


def _session(fn: onnx.FunctionProto, WT, scale, idx_shape, val_shape):
    node = helper.make_node("EventMatVecQ", ["idx", "val", "WT", "scale"], ["out"], domain=F.DOMAIN)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("idx", TensorProto.INT64, idx_shape),
                                        helper.make_tensor_value_info("val", TensorProto.FLOAT, val_shape)],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [idx_shape[0] if len(idx_shape) > 1 else 1, "N"])],
                          [numpy_helper.from_array(WT, "WT"), numpy_helper.from_array(scale, "scale")])
    m = helper.make_model(g, ir_version=10, functions=[fn],
                          opset_imports=[helper.make_opsetid("", F.OPSET), helper.make_opsetid(F.DOMAIN, 1)])
    onnx.checker.check_model(m)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _weights(rng, K, N):
    WT = rng.integers(-127, 128, (K, N)).astype(np.int8)
    WT[rng.random((K, N)) < 0.8] = 0
    return WT, rng.uniform(1e-3, 2e-2, N).astype(np.float32)


@pytest.mark.parametrize("K,N,n,spread", [(40, 24, 9, 1.0), (300, 130, 120, 1e-3), (64, 50, 1, 1.0),
                                          (200, 70, 200, 10.0)])
def test_batch1_within_bound_of_float64(K, N, n, spread):
    rng = np.random.default_rng(K + n)
    WT, scale = _weights(rng, K, N)
    idx = np.sort(rng.choice(K, n, replace=False)).astype(np.int64)
    val = (rng.uniform(0.05, 1.0, n) * spread * rng.choice([-1.0, 1.0], n)).astype(np.float32)
    val[0] = spread                                  # the largest value is on the digit grid's edge
    out = _session(ONE, WT, scale, ["n"], ["n"]).run(None, {"idx": idx, "val": val})[0]
    assert out.shape == (1, N)
    rows = WT[idx].astype(np.float64)
    ref = (val.astype(np.float64) @ rows) * scale
    # each value moves by <= 2^-22 max|val| (the digit grid), then float32 rounding of the sums and scale
    absrow = np.abs(val).astype(np.float64) @ np.abs(rows) * scale
    bound = 2.0 ** -22 * np.abs(val).max() * (np.abs(rows).sum(0) * scale) + 4 * 2.0 ** -24 * absrow
    assert np.all(np.abs(out[0] - ref) <= bound + 1e-30), np.max(np.abs(out[0] - ref) / (bound + 1e-30))
    # and it is closer to float64 than float32's own widen-then-MatMul is off by more than a few ulps
    f32 = (val[None, :] @ WT[idx].astype(np.float32)) * scale
    assert np.max(np.abs(out - ref)) <= 8 * max(np.max(np.abs(f32 - ref)), 2.0 ** -24 * np.abs(ref).max())


def test_no_events_gives_exact_zero():
    rng = np.random.default_rng(1)
    WT, scale = _weights(rng, 30, 17)
    s = _session(ONE, WT, scale, ["n"], ["n"])
    for _ in range(3):      # repeated runs: the output never holds stale memory
        out = s.run(None, {"idx": np.zeros(0, np.int64), "val": np.zeros(0, np.float32)})[0]
        assert out.shape == (1, 17) and np.all(out == 0)


def test_batched_body_is_registered_and_bit_identical_per_stream():
    assert "EventMatVecQ" in BATCHED and {n.op_type for n in BATCH.node} >= {"MatMulInteger"}
    rng = np.random.default_rng(2)
    K, N = 90, 41
    WT, scale = _weights(rng, K, N)
    one = _session(ONE, WT, scale, ["n"], ["n"])
    bat = _session(BATCH, WT, scale, ["B", "k"], ["B", "k"])
    counts = [0, 5, 23, 11]
    width = 27                                   # padded rows: zeros (value 0) in front and behind
    idx_b = np.zeros((len(counts), width), np.int64)
    val_b = np.zeros((len(counts), width), np.float32)
    singles = []
    for b, c in enumerate(counts):
        idx = np.sort(rng.choice(K, c, replace=False)).astype(np.int64)
        val = rng.uniform(0.1, 2.0, c).astype(np.float32)
        front = 4 * ((width - c) // 4)
        idx_b[b, front:front + c], val_b[b, front:front + c] = idx, val
        idx_b[b, :front] = rng.integers(0, K, front)          # padding points anywhere, with value 0
        singles.append(one.run(None, {"idx": idx, "val": val})[0][0])
    out = bat.run(None, {"idx": idx_b, "val": val_b})[0]
    assert out.shape == (len(counts), N)
    for b in range(len(counts)):
        assert np.array_equal(out[b], singles[b]), b
    assert np.all(out[0] == 0)
