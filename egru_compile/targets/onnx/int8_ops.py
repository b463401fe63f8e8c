"""The body of ``ai.egru.EventMatVecQ`` (batch 1 and batched): int8 weight rows times the event values as an
integer product (``MatMulInteger``, ONNX Runtime's u8 x s8 kernel), instead of widening the gathered rows to
float32 and running a float MatMul.

Same op name and signature as before — ``EventMatVecQ (idx, val, WT i8 [K,N], scale [N]) -> out`` — so the
lowering, the batched model (`batch.batch_model`, whose registry entry this module replaces with the batched
form below) and the traffic accounting are unchanged; `lower` takes this body in place of the one in
`functions`.

Why (profile of the PTB-size int8 artifact in onnxruntime, `benchmarks/profile_onnx.py`): an int8 product was
Gather (int8 rows) + Cast (the gathered [n, N] block to float32: 4 bytes written per weight) + MatMul (reads
them back) + Mul (scale); the Cast and the float MatMul cost about two thirds of it. ``MatMulInteger`` reads
the gathered int8 rows once.

Exactness: the event values are float32, so they are written as three base-128 digits of one 22-bit integer
per event tensor: ``m = max|val|``, ``s = m / LIM`` (LIM = 2^21 - 2), ``t = round(val / s)`` (|t| < 2^21),
``t = 2^14 d0 + 2^7 d1 + d2`` with d0 = floor(t / 2^14) in [-128, 127] and d1, d2 in [0, 127]; the digits are
stored as uint8 with zero point 128 (the input of ONNX Runtime's fast u8 x s8 kernel). One MatMulInteger of
the digit rows D [3, n] with the gathered int8 rows [n, N] gives three exact int32 sums; the result is
``scale * (s * (2^14 acc0 + 2^7 acc1 + acc2))``. The only error beyond float32 rounding is the rounding of
each event value to a multiple of s = max|val| / (2^21 - 2): at most 2^-22 max|val| (a relative 2.4e-7 of the
largest value, about two float32 ulps; tested against a float64 reference in
tests/targets/onnx/test_int8_ops.py). A zero-valued event (row 0) is appended at batch 1: an empty event list
then still has one row (MatMulInteger with an empty inner dimension leaves its output unset in onnxruntime
1.23) and adds exactly nothing.

Batched form (per stream b): the same digits with each stream's own max|val[b]| (the padding entries have
value 0: their digits are 128 = zero, and the maximum is unchanged), so every stream's integer sums and scale
are those of its batch-1 run, and its result is bit-identical to batch 1 (integer sums do not depend on the
order or padding of the rows; the float combine is the same [1,3] x [3,N] product per stream).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import batch as _batch
from . import functions as F

_F, _U8 = TensorProto.FLOAT, TensorProto.UINT8

#: |t| <= LIM < 2^21: the top digit floor(t / 2^14) stays in [-128, 127]
LIM = float(2 ** 21 - 2)
#: digit weights and the matrix turning the floors [t/2^14], [t/2^7], t into the digits
POWERS = np.array([[2.0 ** -14], [2.0 ** -7], [1.0]], np.float32)
COEF = np.array([[2.0 ** 14, 2.0 ** 7, 1.0]], np.float32)
DIGITS = np.array([[1, 0, 0], [-128, 1, 0], [0, -128, 1]], np.float32)


def _const(name: str, a) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(a), name))


def _consts() -> list:
    return [_const("lim", np.array([LIM], np.float32)), _const("tiny", np.array([1e-30], np.float32)),
            _const("pw", POWERS), _const("cpw", COEF), _const("dig", DIGITS),
            _const("c128", np.array(128.0, np.float32)), _const("zp", np.array(128, np.uint8))]


def _digits(val: str, axis: int, unsq: str) -> list:
    """Nodes: val [.., n] -> D (uint8 digits [.., 3, n], zero point 128) and s (= max|val| / LIM along the
    last axis, keepdims)."""
    n = helper.make_node
    return [
        n("Abs", [val], ["a"]),
        n("ReduceMax", ["a", axis], ["m0"], keepdims=1),
        n("Max", ["m0", "tiny"], ["m"]),
        n("Div", ["lim", "m"], ["inv"]),
        n("Mul", [val, "inv"], ["tf"]),
        n("Round", ["tf"], ["t"]),
        n("Unsqueeze", ["t", unsq], ["t2"]),                 # [.., 1, n]
        n("Mul", ["t2", "pw"], ["P"]),                       # [.., 3, n]: t / 2^14, t / 2^7, t
        n("Floor", ["P"], ["Fl"]),
        n("MatMul", ["dig", "Fl"], ["Dm"]),                  # digits (exact: integers < 2^22)
        n("Add", ["Dm", "c128"], ["Du"]),
        n("Cast", ["Du"], ["D"], to=_U8),
        n("Div", ["m", "lim"], ["s"]),
    ]


def event_matvec_q() -> onnx.FunctionProto:
    """Batch 1: idx [n] i64, val [n] f32 -> out [1, N]."""
    n = helper.make_node
    nodes = _consts() + [
        F._const_ints("ax0", [0]),
        _const("zi", np.array([0], np.int64)),
        _const("zf", np.array([0.0], np.float32)),
        n("Concat", ["idx", "zi"], ["idx1"], axis=0),        # + one zero-valued event (never an empty product)
        n("Concat", ["val", "zf"], ["val1"], axis=0),
    ] + _digits("val1", "ax0", "ax0") + [
        n("Mul", ["s", "cpw"], ["coef"]),                    # [1, 3]
        n("Gather", ["WT", "idx1"], ["rows"], axis=0),       # [n+1, N] int8
        n("MatMulInteger", ["D", "rows", "zp"], ["acc_i"]),  # [3, N] int32, exact
        n("Cast", ["acc_i"], ["acc_f"], to=_F),
        n("MatMul", ["coef", "acc_f"], ["acc"]),             # [1, N]
        n("Mul", ["acc", "scale"], ["out"]),
    ]
    return F._fn("EventMatVecQ", ["idx", "val", "WT", "scale"], ["out"], nodes,
                 "EventMatVec over int8 weight rows with a per-output scale after the sum: scale * sum_i val_i * "
                 "WT[i, :], as one integer product (MatMulInteger) of the gathered int8 rows with the values "
                 "written as three base-128 digits (22 bits; error <= 2^-22 max|val| per value).")


def event_matvec_q_b() -> onnx.FunctionProto:
    """Batched: idx [B, K'] i64, val [B, K'] f32 (padding value 0) -> out [B, N]; per stream = batch 1."""
    n = helper.make_node
    nodes = _consts() + [F._const_ints("ax1", [1]), F._const_ints("ax2", [2])] + _digits("val", "ax1", "ax1") + [
        n("Unsqueeze", ["s", "ax2"], ["s3"]),                # [B, 1, 1]
        n("Mul", ["s3", "cpw"], ["coef"]),                   # [B, 1, 3]
        n("Gather", ["WT", "idx"], ["rows"], axis=0),        # [B, K', N] int8
        n("MatMulInteger", ["D", "rows", "zp"], ["acc_i"]),  # [B, 3, N]
        n("Cast", ["acc_i"], ["acc_f"], to=_F),
        n("MatMul", ["coef", "acc_f"], ["acc3"]),            # [B, 1, N]
        n("Squeeze", ["acc3", "ax1"], ["acc"]),
        n("Mul", ["acc", "scale"], ["out"]),
    ]
    return _batch._fn("EventMatVecQ", ["idx", "val", "WT", "scale"], ["out"], nodes,
                      "Per-stream EventMatVecQ (integer product of each stream's value digits with its gathered "
                      "int8 rows; bit-identical per stream to batch 1).")


#: the bodies this module provides, by op name (`lower` builds these instead of `functions.BUILDERS`' ones)
BODIES = {"EventMatVecQ": event_matvec_q}

# the batched model swaps op bodies by name (`batch.BATCHED`): give it the batched form of this body, so
# that batched streams stay bit-identical to batch 1
_batch.BATCHED["EventMatVecQ"] = event_matvec_q_b
