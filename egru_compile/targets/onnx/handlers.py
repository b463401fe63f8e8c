"""The op -> handler table of the ONNX lowering: one function per IR op kind, registered in `HANDLERS`.

A handler ``fn(lw, node)`` translates one IR node with the lowering context `lw` (`lower._Lowering`: ``node``
/ ``fn`` emit standard / ``ai.egru`` ONNX nodes, ``val`` / ``as_f32`` name an IR value, ``vmap`` records the
ONNX name of a result). Handlers decide nothing about the graph: which products are event-gated, folded
with the embedding, or gather int8 / f16 rows is in the node's attributes (``gated``, ``fold_embedding``,
``weight_dtype``), set by the target's passes (see `pipeline`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import TensorProto

from ...ir import Node
from ...passes.utils import sanitize
from .options import NP_NAMES, ONNX_DTYPES

#: IR op name -> handler(lowering, node)
HANDLERS: dict[str, Callable] = {}


def handles(*ops: str):
    """Decorator registering a handler for the IR ops `ops`."""
    def wrap(fn):
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return wrap


# ------------------------------------------------------------------------------------------------ products
@handles("matmul", "linear", "sparse_matvec")
def matvec(lw, n: Node) -> None:
    """x @ W (matmul), x @ W.T (linear), x @ M.T (sparse_matvec), + bias: gated (``gated``), folded with the
    embedding (``fold_embedding``: EmbedMatVec) or dense (SparseMatVec for a batch-1 sparse_matvec)."""
    x, w = n.inputs[0], n.inputs[1]
    bias = n.inputs[2] if len(n.inputs) > 2 else None
    out = n.outputs[0]
    if lw.const_of(w) is None:              # not a constant weight: plain ops
        xs, ws = lw.as_f32(x), lw.as_f32(w)
        if n.op == "linear":
            ws = lw.node("Transpose", [ws], perm=[1, 0])[0]
        r = lw.node("MatMul", [xs, ws], hint=out.name)[0]
        lw.vmap[out] = lw.add_bias(r, bias, out.name)
        return
    if n.attrs.get("gated"):
        idx, v, _ = lw.events_of(x)
        lw.vmap[out] = lw.gated(n, w, idx, v, out.name, bias)
        return
    if n.attrs.get("fold_embedding"):
        table, ids = x.producer.inputs
        r = lw.fn("EmbedMatVec", [lw.val(ids), lw.const_name(table), lw.weight_t(n, w)], hint=out.name)[0]
        lw.stats["folded_embedding"] = True
    else:
        wt = lw.weight_t(n, w)
        if n.op == "sparse_matvec" and x.type.shape[0] == 1:
            r = lw.fn("SparseMatVec", [lw.as_f32(x), wt], hint=out.name)[0]
        else:
            r = lw.node("MatMul", [lw.as_f32(x), wt], hint=out.name)[0]
        lw.stats["dense_matvecs"] += 1
    lw.vmap[out] = lw.add_bias(r, bias, out.name)


@handles("compress_events")
def compress_events(lw, n: Node) -> None:
    """One CompressEvents per event tensor; its (unpadded) results are kept for event_matvec, and padded
    to the IR's semantics only where something else reads them (`lower._Lowering.padded`)."""
    y = n.inputs[0]
    idx, val, count = lw.events_of(y)
    for v, kind in zip(n.outputs, ("idx", "val", "count")):
        lw.compact[v] = (idx, val, count, y.type.shape[-1])
        lw.compact_kind[v] = kind


@handles("event_matvec")
def event_matvec(lw, n: Node) -> None:
    """EventMatVec[Q|F16] over the active units (rows in the node's ``weight_dtype``), + bias."""
    idx_v, val_v, cnt_v, w = n.inputs[:4]
    bias = n.inputs[4] if len(n.inputs) > 4 else None
    if idx_v in lw.compact and val_v in lw.compact:
        idx, val = lw.compact[idx_v][0], lw.compact[val_v][1]
    else:                                    # padded arrays from elsewhere: take the first count
        cnt = lw.val(cnt_v)
        z = lw.ints([0], "zero")
        idx = lw.node("Slice", [lw.val(idx_v), z, cnt], hint="ev_idx")[0]
        idx = lw.node("Cast", [idx], hint="ev_idx64", to=TensorProto.INT64)[0]
        val = lw.node("Slice", [lw.as_f32(val_v), z, cnt], hint="ev_val")[0]
    lw.vmap[n.outputs[0]] = lw.gated(n, w, idx, val, n.outputs[0].name, bias)


@handles("egru_cell")
def egru_cell(lw, n: Node) -> None:
    gx, gh, c, thr = (lw.as_f32(v) for v in n.inputs)
    outs = lw.fn("EGRUCell", [gx, gh, c, thr], 2, hint=sanitize(n.outputs[0].name))
    lw.vmap[n.outputs[0]], lw.vmap[n.outputs[1]] = outs


@handles("embedding")
def embedding(lw, n: Node) -> None:
    out = n.outputs[0]
    lw.vmap[out] = lw.node("Gather", [lw.val(n.inputs[0]), lw.val(n.inputs[1])], hint=out.name, axis=0)[0]


# ------------------------------------------------------------------------------------------------ elementwise
_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul"}


@handles(*_BINARY)
def binary(lw, n: Node) -> None:
    a, b = n.inputs
    lw.vmap[n.outputs[0]] = lw.node(_BINARY[n.op], [lw.as_f32(a), lw.as_f32(b)], hint=n.outputs[0].name)[0]


@handles("sigmoid", "tanh")
def unary(lw, n: Node) -> None:
    lw.vmap[n.outputs[0]] = lw.node(n.op.capitalize(), [lw.as_f32(n.inputs[0])], hint=n.outputs[0].name)[0]


@handles("relu")
def relu(lw, n: Node) -> None:
    """relu(x) (EvNN's decoder projection output) -> Relu."""
    lw.vmap[n.outputs[0]] = lw.node("Relu", [lw.as_f32(n.inputs[0])], hint=n.outputs[0].name)[0]


@handles("heaviside")
def heaviside(lw, n: Node) -> None:
    out = n.outputs[0]
    gt = lw.node("Greater", [lw.as_f32(n.inputs[0]), lw.scalar(0.0, np.float32, "zero_f")],
                 hint=f"{out.name}_gt")[0]
    lw.vmap[out] = lw.node("Cast", [gt], hint=out.name, to=TensorProto.FLOAT)[0]


@handles("greater")
def greater(lw, n: Node) -> None:
    a, b = n.inputs
    if a.type.dtype != b.type.dtype:
        sa, sb = lw.as_f32(a), lw.as_f32(b)
    else:
        sa, sb = lw.val(a), lw.val(b)
    lw.vmap[n.outputs[0]] = lw.node("Greater", [sa, sb], hint=n.outputs[0].name)[0]


@handles("cast")
def cast(lw, n: Node) -> None:
    lw.vmap[n.outputs[0]] = lw.node("Cast", [lw.val(n.inputs[0])], hint=n.outputs[0].name,
                                    to=ONNX_DTYPES[n.attrs["dtype"]])[0]


@handles("clamp")
def clamp(lw, n: Node) -> None:
    x = n.inputs[0]
    dt = np.dtype(NP_NAMES[x.type.dtype])
    lo, hi = n.attrs.get("min"), n.attrs.get("max")
    args = [lw.val(x), "" if lo is None else lw.scalar(lo, dt, "lo"), "" if hi is None else lw.scalar(hi, dt, "hi")]
    while args[-1] == "":
        args.pop()
    lw.vmap[n.outputs[0]] = lw.node("Clip", args, hint=n.outputs[0].name)[0]


# ------------------------------------------------------------------------------------------------ shape ops
@handles("split")
def split(lw, n: Node) -> None:
    outs = lw.node("Split", [lw.val(n.inputs[0]), lw.ints(n.attrs["sizes"], "sizes")], len(n.outputs),
                   hint=n.outputs[0].name, axis=int(n.attrs["axis"]))
    for v, s in zip(n.outputs, outs):
        lw.vmap[v] = s


@handles("concat")
def concat(lw, n: Node) -> None:
    lw.vmap[n.outputs[0]] = lw.node("Concat", [lw.val(v) for v in n.inputs], hint=n.outputs[0].name,
                                    axis=int(n.attrs["axis"]))[0]


@handles("transpose")
def transpose(lw, n: Node) -> None:
    rank = len(n.inputs[0].type.shape)
    lw.vmap[n.outputs[0]] = lw.node("Transpose", [lw.val(n.inputs[0])], hint=n.outputs[0].name,
                                    perm=list(range(rank))[::-1])[0]
