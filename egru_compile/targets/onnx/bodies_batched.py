"""The batched bodies of the ``ai.egru`` event ops (table, padding layout and why: `batch`), written with
onnxscript: each ``@script`` function below replaces the batch-1 op of the same name in a batched model.

Imported only when a batched model is built (`batch.batch_model`).
"""
from __future__ import annotations

from onnxscript import FLOAT, INT64, UINT8, script
from onnxscript import opset21 as op
from onnxscript.values import Opset

from .bodies import COEF, DIGITS, LIM, POWERS, TINY, ZERO_POINT
from .options import DOMAIN, DOMAIN_VERSION, OPSET

if op.version != OPSET:
    raise ImportError(f"the ai.egru bodies are written against opset {op.version}, the models use {OPSET}")
egru = Opset(DOMAIN, DOMAIN_VERSION)


@script(egru, default_opset=op)
def CompressEvents(y):
    """Active units of each row of y [B,N], ascending, in a row of width K' (>= the batch's largest count, 3 mod
    4) laid out for bit-exact per-stream products: a multiple of 4 zero-valued entries first, the active units,
    then < 4 zero entries (none when count = 3 mod 4); values (0 at padding); per-row counts [B]."""
    n = op.Gather(op.Shape(y), 1, axis=0)
    active = op.Cast(op.Not(op.Equal(y, 0.0)), to=INT64.dtype)
    count = op.ReduceSum(active, [1], keepdims=0)                               # [B]
    kmax = op.ReduceMax(count, keepdims=1)                                      # [1]
    # width K' = the smallest value >= kmax with K' = 3 (mod 4), at most N
    kp = op.Min(kmax + (3 - kmax) % 4, op.Unsqueeze(n, [0]))
    # key(j) = N - j for active columns, 0 for the others: TopK(K') = active columns ascending, then inactive ones
    _, idx0 = op.TopK(active * (n - op.Range(0, n, 1)), kp, axis=1, largest=1, sorted=1)
    # rotate row b right by f_b = 4 * floor((K' - count_b) / 4): zeros first (a multiple of 4), then the active
    # units, then fewer than 4 zeros (none when count_b = 3 mod 4)
    f = op.Div(kp - count, 4) * 4
    src = (op.Range(0, op.Squeeze(kp, [0]), 1) - op.Unsqueeze(f, [1]) + kp) % kp     # [B,K']
    idx = op.GatherElements(idx0, src, axis=1)
    val = op.GatherElements(y, idx, axis=1)
    return idx, val, count


@script(egru, default_opset=op)
def EventMatVec(idx, val, WT):
    """Per-stream event-gated product: out[b] = sum_k val[b,k] * WT[idx[b,k], :]."""
    out = op.Squeeze(op.MatMul(op.Unsqueeze(val, [1]), op.Gather(WT, idx, axis=0)), [1])    # [B,1,K'] x [B,K',N]
    return out


@script(egru, default_opset=op)
def EventMatVecF16(idx, val, WT):
    """Per-stream EventMatVec over float16 rows, accumulated in float32."""
    out = op.Squeeze(op.MatMul(op.Unsqueeze(val, [1]), op.Cast(op.Gather(WT, idx, axis=0), to=FLOAT.dtype)), [1])
    return out


@script(egru, default_opset=op)
def EventMatVecQ(idx, val, WT, scale):
    """Per-stream EventMatVecQ (integer product of each stream's value digits with its gathered int8 rows; the
    arithmetic of the batch-1 body, bit-identical per stream to batch 1)."""
    lim = op.Constant(value=LIM)
    m = op.Max(op.ReduceMax(op.Abs(val), [1], keepdims=1), op.Constant(value=TINY))     # [B, 1]
    t = op.Round(val * op.Div(lim, m))
    fl = op.Floor(op.Unsqueeze(t, [1]) * op.Constant(value=POWERS))                   # [B, 3, K']
    digits = op.MatMul(op.Constant(value=DIGITS), fl) + 128.0
    acc_i = op.MatMulInteger(op.Cast(digits, to=UINT8.dtype), op.Gather(WT, idx, axis=0),
                             op.Constant(value=ZERO_POINT))                           # [B, 3, N]
    coef = op.Unsqueeze(op.Div(m, lim), [2]) * op.Constant(value=COEF)                # [B, 1, 3]
    out = op.Squeeze(op.MatMul(coef, op.Cast(acc_i, to=FLOAT.dtype)), [1]) * scale
    return out


@script(egru, default_opset=op)
def CountMACs(idx, fanout, val):
    """Per-stream MACs of an event-gated product: summed fan-out of each row's active units (the padding entries
    of idx point at inactive columns; they are exactly the entries whose value is 0)."""
    keep = op.Cast(op.Not(op.Equal(val, 0.0)), to=INT64.dtype)
    macs = op.ReduceSum(op.Gather(fanout, idx, axis=0) * keep, [1], keepdims=0)
    return macs
