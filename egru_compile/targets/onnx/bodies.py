"""The batch-1 bodies of the ``ai.egru`` ops (table and signatures: `functions`), written with onnxscript: each
``@script`` function below is the op of the same name; its docstring is the FunctionProto's doc string.

Imported only when a model is built (`functions.build_functions`): onnxscript is not needed to run one.

EventMatVecQ (int8 rows; batched form in `bodies_batched`, same arithmetic) is one integer product
(``MatMulInteger``, ONNX Runtime's u8 x s8 kernel) of the gathered int8 rows with the event values written as
integer digits, instead of widening the rows to float32 for a float MatMul (commit f9f1f7a's profile of the
PTB-size artifact, `benchmarks/profile_onnx.py`: the Cast and the float MatMul were two thirds of the product;
1,035 -> 519 us per token). Exactness: the float32 values become three base-128 digits of one 22-bit integer
per event tensor: ``m = max|val|``, ``s = m / LIM`` (LIM = 2^21 - 2), ``t = round(val / s)`` (|t| < 2^21),
``t = 2^14 d0 + 2^7 d1 + d2`` with d0 = floor(t / 2^14) in [-128, 127] and d1, d2 in [0, 127], stored as uint8
with zero point 128. One MatMulInteger of the digit rows D [3, n] with the rows [n, N] gives three exact int32
sums; the result is ``scale * (s * (2^14 acc0 + 2^7 acc1 + acc2))``. The only error beyond float32 rounding
is the rounding of each value to a multiple of s: at most 2^-22 max|val| (about two float32 ulps of the
largest value; checked against a float64 recount in tests/targets/onnx/test_int8_ops.py). At batch 1 a
zero-valued event (row 0) is appended, so an empty event list still has one row (MatMulInteger with an empty
inner dimension leaves its output unset in onnxruntime 1.23) and adds exactly nothing. Batched, every stream
has its own max|val[b]| (padding values are 0: digits 128 = zero, maximum unchanged), so its integer sums and
scale are those of its batch-1 run and its result is bit-identical to batch 1.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto
from onnx.helper import make_tensor
from onnx.numpy_helper import from_array
from onnxscript import FLOAT, INT64, UINT8, script
from onnxscript import opset21 as op
from onnxscript.values import Opset

from .options import DOMAIN, DOMAIN_VERSION, OPSET

if op.version != OPSET:
    raise ImportError(f"the ai.egru bodies are written against opset {op.version}, the models use {OPSET}")
egru = Opset(DOMAIN, DOMAIN_VERSION)

#: EventMatVecQ's digits: |t| <= LIM < 2^21 keeps the top digit floor(t / 2^14) in [-128, 127]; POWERS turns t
#: into t / 2^14, t / 2^7, t; DIGITS turns their floors into the digits; COEF weighs the digit sums
LIM = from_array(np.array([2.0 ** 21 - 2], np.float32), "lim")
TINY = from_array(np.array([1e-30], np.float32), "tiny")
POWERS = from_array(np.array([[2.0 ** -14], [2.0 ** -7], [1.0]], np.float32), "pw")
COEF = from_array(np.array([[2.0 ** 14, 2.0 ** 7, 1.0]], np.float32), "cpw")
DIGITS = from_array(np.array([[1, 0, 0], [-128, 1, 0], [0, -128, 1]], np.float32), "dig")
ZERO_POINT = from_array(np.array(128, np.uint8), "zp")


@script(egru, default_opset=op)
def CompressEvents(y):
    """Active units of a batch-1 event vector y [1,N]: ascending indices (int64), their values and their number."""
    yf = op.Reshape(y, [-1])
    idx = op.Squeeze(op.NonZero(yf), [0])
    val = op.Gather(yf, idx, axis=0)
    count = op.Shape(idx)
    return idx, val, count


@script(egru, default_opset=op)
def SparseWeight(indptr, indices, values, shape):
    """CSR (indptr over rows, column indices, values) -> dense [rows, cols] of the values' dtype. Weights are
    stored in this form so the model file shrinks with pruning; the inputs are initializers, so runtimes
    constant-fold this once at load time."""
    ip = op.Cast(indptr, to=INT64.dtype)
    ix = op.Cast(indices, to=INT64.dtype)
    nnz = op.Shape(ix)
    # row id of every stored entry: mark where each row (after the first) starts, then prefix-sum
    starts = op.Slice(ip, [1], [-1])
    marks0 = op.ConstantOfShape(nnz + 1, value=make_tensor("v", TensorProto.INT64, [1], [0]))
    ones = op.ConstantOfShape(op.Shape(starts), value=make_tensor("v", TensorProto.INT64, [1], [1]))
    marks = op.ScatterElements(marks0, starts, ones, axis=0, reduction="add")
    row = op.CumSum(op.Slice(marks, [0], nnz), 0)
    flat = row * op.Gather(shape, 1, axis=0) + ix
    zeros = op.CastLike(op.ConstantOfShape(op.ReduceProd(shape, keepdims=1)), values)
    dense = op.Reshape(op.ScatterElements(zeros, flat, values, axis=0), shape)
    return dense


@script(egru, default_opset=op)
def SparseWeightI8(indptr, indices, values, shape):
    """CSR int8 values -> dense int8 [rows, cols] (kept int8 for EventMatVecQ; folded at load time)."""
    dense = SparseWeight(indptr, indices, values, shape)
    return dense


@script(egru, default_opset=op)
def SparseWeightQ(indptr, indices, values, scale, shape):
    """CSR int8 values with a per-column dequantisation scale (the per-output-row scale of the IR's int8
    SparseMatrix) -> dense f32 [rows, cols], value = int8 * scale[column]."""
    dense = op.Cast(SparseWeight(indptr, indices, values, shape), to=FLOAT.dtype) * scale  # scale [C]: per column
    return dense


@script(egru, default_opset=op)
def EventMatVec(idx, val, WT):
    """Event-gated matrix-vector product: sum over the active input units i of val_i * WT[i, :]; only the rows of
    the active units are read."""
    out = op.MatMul(op.Unsqueeze(val, [0]), op.Gather(WT, idx, axis=0))
    return out


@script(egru, default_opset=op)
def EventMatVecF16(idx, val, WT):
    """EventMatVec over float16 weight rows (half the bytes read), accumulated in float32."""
    out = op.MatMul(op.Unsqueeze(val, [0]), op.Cast(op.Gather(WT, idx, axis=0), to=FLOAT.dtype))
    return out


@script(egru, default_opset=op)
def EventMatVecQ(idx, val, WT, scale):
    """EventMatVec over int8 weight rows with a per-output scale after the sum: scale * sum_i val_i * WT[i, :], as
    one integer product (MatMulInteger) of the gathered int8 rows with the values written as three base-128
    digits (22 bits; error <= 2^-22 max|val| per value)."""
    lim = op.Constant(value=LIM)
    idx1 = op.Concat(idx, [0], axis=0)               # + one zero-valued event: never an empty product
    val1 = op.Concat(val, [0.0], axis=0)
    m = op.Max(op.ReduceMax(op.Abs(val1), [0], keepdims=1), op.Constant(value=TINY))
    t = op.Round(val1 * op.Div(lim, m))
    fl = op.Floor(op.Unsqueeze(t, [0]) * op.Constant(value=POWERS))                 # [3, n+1]
    digits = op.MatMul(op.Constant(value=DIGITS), fl) + 128.0                         # exact: integers < 2^22
    acc_i = op.MatMulInteger(op.Cast(digits, to=UINT8.dtype), op.Gather(WT, idx1, axis=0),
                             op.Constant(value=ZERO_POINT))                           # [3, N] int32, exact
    coef = op.Div(m, lim) * op.Constant(value=COEF)                                   # [1, 3]
    out = op.MatMul(coef, op.Cast(acc_i, to=FLOAT.dtype)) * scale
    return out


@script(egru, default_opset=op)
def SparseMatVec(x, WT):
    """x [1,K] @ WT [K,N] for a dense input vector."""
    out = op.MatMul(x, WT)
    return out


@script(egru, default_opset=op)
def EmbedMatVec(tokens, table, WT):
    """embedding(table, tokens) @ WT as one row lookup in table @ WT, which depends only on initializers and is
    constant-folded at load time."""
    out = op.Gather(op.MatMul(table, WT), tokens, axis=0)
    return out


@script(egru, default_opset=op)
def EGRUCell(gx, gh, c, thr):
    """EGRU update, gate order z, r, g: z=σ(gx_z+gh_z), r=σ(gx_r+gh_r), g=tanh(gx_g+r*gh_g), c~=z*c+(1-z)*g,
    o=H(c~-thr), y'=o*c~, c'=c~-o*thr."""
    gxz, gxr, gxg = op.Split(gx, axis=1, num_outputs=3)
    ghz, ghr, ghg = op.Split(gh, axis=1, num_outputs=3)
    z = op.Sigmoid(gxz + ghz)
    r = op.Sigmoid(gxr + ghr)
    g = op.Tanh(gxg + r * ghg)
    ct = z * c + (1.0 - z) * g
    o = op.Cast(ct > thr, to=FLOAT.dtype)
    y_next = o * ct
    c_next = ct - o * thr
    return c_next, y_next


@script(egru, default_opset=op)
def CountMACs(idx, fanout):
    """Multiply-accumulates of an event-gated product: the summed non-zero fan-out of the active units."""
    macs = op.ReduceSum(op.Gather(fanout, idx, axis=0), [0], keepdims=1)
    return macs
