"""Batched streams for the ONNX target: the step model with a symbolic batch dimension ``B`` (B independent
streams in one call) and per-stream event gating.

`batch_model(model)` turns a lowered step model into the batched one: the token input becomes int64 [B], the
state inputs/outputs and the logits [B, ...], ``events{l}`` / ``macs`` int64 [B] (per stream), and the
batch-1 bodies of the ``ai.egru`` event ops are replaced by their batched forms (same op names and
arguments). Everything else in the graph already broadcasts over rows: the embedding / folded-table lookups
gather B rows, dense products are [B, K] x [K, N] MatMuls, the cell is element-wise. The weights are the
same initializers, so the batched model is derived from ``model.onnx`` when a runner needs it (no second
file in the artifact).

Per-stream gating (ONNX Runtime has no ragged gather): each stream's active units are padded to a common
width K' (the largest active count in the batch, rounded up to 3 mod 4):

=================  ======================================================  ====================================
op                 batched signature                                       body
=================  ======================================================  ====================================
CompressEvents     (y [B,N]) -> (idx [B,K'] i64, val [B,K'],               count = per-row non-zeros; TopK
                   count [B] i64)                                          (k = K') of mask·(N - j) = each
                                                                           row's active columns ascending,
                                                                           then inactive ones (value 0,
                                                                           GatherElements); each row rotated
                                                                           (see Exactness)
EventMatVec[Q|F16] (idx [B,K'], val [B,K'], WT [K,N]) -> [B,N]             Gather(WT, idx) -> [B,K',N] rows;
                                                                           batched MatMul with val [B,1,K']
                                                                           (one GEMV per stream) [-> * scale]
CountMACs          (idx [B,K'], fanout [K], val [B,K']) -> [B]             fan-outs of the entries whose
                                                                           value is non-zero
=================  ======================================================  ====================================

Exactness: stream b's product reads its own active rows in the batch-1 order plus zero-valued padding rows
(0·w adds nothing). That alone is not enough: ORT's MLAS kernel for a [1,K] x [K,N] product walks K in
groups of 4 and treats a remainder of 3 differently, so the padding must not regroup the active rows —
measured on this machine's MLAS (onnxruntime 1.32, x86-64): a K-row product equals the same rows with 4m
zero rows in front and p zero rows behind for every m, and for every p unless K = 3 (mod 4), where p must
be 0. So each row is laid out as [4m zeros | active units | p < 4 zeros] with width K' = 3 (mod 4):
rows with count = 3 (mod 4) then have p = 0. With that, every stream's logits, states, events and MACs are
bit-identical to its batch-1 run (tests/targets/onnx/test_onnx_batch.py checks exact equality, f32 and int8 rows, on a
random model and the trained example; a different MLAS build would show there first).

Cost and the dense alternative: the gather copies K' rows per stream, so the batched model costs about its
batch-1 time per token, less the per-call overhead. A dense-masked product (y [B,N] x WT, one GEMM for the
batch) reads each weight row once for all streams and gets GEMM efficiency from B, but sums all N rows in
MLAS's blocking, so it is not bit-exact against batch 1; it is what the dense ORT peer does, and
`benchmarks/bench_batch.py` times both (results in benchmarks/results/batch.md). The target keeps the
gathered form: exact per-stream numbers are the contract of ``eval --batch-size``. Batch 1 keeps the batch-1
model (``model.onnx`` as compiled), so its numbers and speed are unchanged: the batched model run at B = 1 is
exact too but ~15-20 % slower per step (TopK / rotation / GatherElements on every event tensor; measured by
`bench_batch.batch1_overhead`, benchmarks/results/batch.md).

Limitation: a ``compress_events`` result read by something other than an event product (`lower.padded`:
1-D padding) is not batched; models from the compiler's pipeline never have one, and `batch_model` raises
`OnnxLoweringError` for a model that does.
"""
from __future__ import annotations

import copy

import onnx
from onnx import TensorProto, helper

from . import functions as F
from .options import OnnxLoweringError

_F = TensorProto.FLOAT
_I64 = TensorProto.INT64

#: the symbolic batch dimension's name
BATCH_DIM = "B"


def _fn(name, inputs, outputs, nodes, doc):
    return helper.make_function(F.DOMAIN, name, inputs, outputs, nodes,
                                opset_imports=[helper.make_opsetid("", F.OPSET)], doc_string=doc)


def compress_events_b() -> onnx.FunctionProto:
    n = helper.make_node
    nodes = [
        F._const_ints("ax1", [1]),
        F._const_int("zero_s", 0),
        F._const_int("one_s", 1),
        F._const_ints("three", [3]),
        F._const_ints("four", [4]),
        F._const_float("zero_f", 0.0),
        n("Shape", ["y"], ["shp"]),
        n("Gather", ["shp", "one_s"], ["N"], axis=0),
        n("Equal", ["y", "zero_f"], ["eq0"]),
        n("Not", ["eq0"], ["mask"]),
        n("Cast", ["mask"], ["m64"], to=_I64),
        n("ReduceSum", ["m64", "ax1"], ["count"], keepdims=0),                 # [B]
        n("ReduceMax", ["count"], ["kmax"], keepdims=1),                       # [1]
        # width K' = the smallest value >= kmax with K' = 3 (mod 4), at most N
        n("Sub", ["three", "kmax"], ["d3"]),
        n("Mod", ["d3", "four"], ["r3"]),
        n("Add", ["kmax", "r3"], ["kp0"]),
        n("Unsqueeze", ["N", "zero_s"], ["N1"]),
        n("Min", ["kp0", "N1"], ["kp"]),
        # key(j) = N - j for active columns, 0 for the others: TopK(K') = active columns ascending, then
        # inactive ones (value 0)
        n("Range", ["zero_s", "N", "one_s"], ["j"]),
        n("Sub", ["N", "j"], ["rev"]),
        n("Mul", ["m64", "rev"], ["key"]),
        n("TopK", ["key", "kp"], ["_k", "idx0"], axis=1, largest=1, sorted=1),
        # rotate row b right by f_b = 4 * floor((K' - count_b) / 4): zeros first (a multiple of 4), then the
        # active units, then fewer than 4 zeros (none when count_b = 3 mod 4)
        n("Sub", ["kp", "count"], ["free"]),
        n("Div", ["free", "four"], ["f4"]),
        n("Mul", ["f4", "four"], ["f"]),
        n("Unsqueeze", ["f", "ax1"], ["f2"]),                                  # [B,1]
        n("Squeeze", ["kp", "zero_ax"], ["kp_s"]),
        n("Range", ["zero_s", "kp_s", "one_s"], ["pos"]),                      # [K']
        n("Sub", ["pos", "f2"], ["sh"]),
        n("Add", ["sh", "kp"], ["sh2"]),
        n("Mod", ["sh2", "kp"], ["src"]),                                      # [B,K']
        n("GatherElements", ["idx0", "src"], ["idx"], axis=1),
        n("GatherElements", ["y", "idx"], ["val"], axis=1),
    ]
    nodes.insert(0, F._const_ints("zero_ax", [0]))
    return _fn("CompressEvents", ["y"], ["idx", "val", "count"], nodes,
               "Active units of each row of y [B,N], ascending, in a row of width K' (>= the batch's largest count, "
               "3 mod 4) laid out for bit-exact per-stream products: a multiple of 4 zero-valued entries first, "
               "the active units, then < 4 zero entries (none when count = 3 mod 4); values (0 at padding); "
               "per-row counts [B].")


def _event_matvec_b(cast_rows: bool = False, scaled: bool = False) -> list:
    n = helper.make_node
    nodes = [F._const_ints("ax1", [1]), n("Gather", ["WT", "idx"], ["gathered" if cast_rows else "rows"], axis=0)]
    if cast_rows:
        nodes.append(n("Cast", ["gathered"], ["rows"], to=_F))
    nodes += [n("Unsqueeze", ["val", "ax1"], ["v"]),                      # [B,1,Kmax]
              n("MatMul", ["v", "rows"], ["acc3"]),                        # [B,1,N]
              n("Squeeze", ["acc3", "ax1"], ["acc" if scaled else "out"])]
    if scaled:
        nodes.append(n("Mul", ["acc", "scale"], ["out"]))
    return nodes


def event_matvec_b() -> onnx.FunctionProto:
    return _fn("EventMatVec", ["idx", "val", "WT"], ["out"], _event_matvec_b(),
               "Per-stream event-gated product: out[b] = sum_k val[b,k] * WT[idx[b,k], :].")


def event_matvec_f16_b() -> onnx.FunctionProto:
    return _fn("EventMatVecF16", ["idx", "val", "WT"], ["out"], _event_matvec_b(cast_rows=True),
               "Per-stream EventMatVec over float16 rows, accumulated in float32.")


def event_matvec_q_b() -> onnx.FunctionProto:
    return _fn("EventMatVecQ", ["idx", "val", "WT", "scale"], ["out"], _event_matvec_b(True, scaled=True),
               "Per-stream EventMatVec over int8 rows, per-output scale after the sum.")


def count_macs_b() -> onnx.FunctionProto:
    """Per-stream MACs: padding entries of idx point at inactive columns whose fan-out must not count;
    they are exactly the entries whose value is 0 (an active unit's value is non-zero)."""
    n = helper.make_node
    nodes = [
        F._const_ints("ax1", [1]),
        F._const_float("zero_f", 0.0),
        n("Gather", ["fanout", "idx"], ["f"], axis=0),                       # [B,K']
        n("Equal", ["val", "zero_f"], ["pad"]),
        n("Not", ["pad"], ["keep"]),
        n("Cast", ["keep"], ["keep64"], to=_I64),
        n("Mul", ["f", "keep64"], ["fk"]),
        n("ReduceSum", ["fk", "ax1"], ["macs"], keepdims=0),
    ]
    return _fn("CountMACs", ["idx", "fanout", "val"], ["macs"], nodes,
               "Per-stream MACs of an event-gated product: summed fan-out of each row's active units.")


BATCHED = {
    "CompressEvents": compress_events_b,
    "EventMatVec": event_matvec_b,
    "EventMatVecF16": event_matvec_f16_b,
    "EventMatVecQ": event_matvec_q_b,
    "CountMACs": count_macs_b,
}


def _set_batch(vi: onnx.ValueInfoProto) -> None:
    dims = vi.type.tensor_type.shape.dim
    if len(dims) == 0:
        return
    if dims[0].HasField("dim_value") and dims[0].dim_value != 1:
        raise OnnxLoweringError(f"step model {vi.name} has leading dimension {dims[0].dim_value}, not 1: "
                                "not a batch-1 step model")
    dims[0].ClearField("dim_value")
    dims[0].dim_param = BATCH_DIM


def batch_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """The batched (symbolic ``B``) form of a batch-1 step model from `lower.lower_graph` / ``model.onnx``:
    a copy with every graph input / output's leading dimension ``B`` and the ``ai.egru`` event ops'
    bodies replaced by their per-stream forms (`BATCHED`). CountMACs gets the event values as a third
    argument (it masks the padding). Raises `OnnxLoweringError` for a model that uses a compressed event
    tensor other than in an event product."""
    m = copy.deepcopy(model)
    g = m.graph
    # CompressEvents outputs: (idx, val, count) by name; their readers must be batched ops
    compress, values = {}, {}
    for nd in g.node:
        if nd.domain == F.DOMAIN and nd.op_type == "CompressEvents":
            idx, val, cnt = nd.output
            compress[idx] = ("idx", cnt)
            compress[val] = ("val", cnt)
            compress[cnt] = ("count", cnt)
            values[cnt] = val
    out_names = {o.name for o in g.output}
    for nd in g.node:
        batched_reader = nd.domain == F.DOMAIN and nd.op_type in BATCHED
        for i, s in enumerate(nd.input):
            if s in compress and not batched_reader and compress[s][0] != "count":
                raise OnnxLoweringError(f"node {nd.name} ({nd.op_type}) reads the compressed events {s}: "
                                        "only event products can be batched")
        if nd.domain == F.DOMAIN and nd.op_type == "CountMACs":
            kind, cnt = compress.get(nd.input[0], (None, None))
            if kind != "idx":
                raise OnnxLoweringError(f"CountMACs node {nd.name} does not read a CompressEvents index")
            nd.input.append(values[cnt])
    for vi in list(g.input) + list(g.output):
        _set_batch(vi)
    del g.value_info[:]
    # macs: [B] even where every part is a constant [1] (no event-gated product)
    for nd in g.node:
        for i, s in enumerate(nd.output):
            if s == "macs":
                nd.output[i] = "macs_1"
    if "macs" in out_names:
        tok = next((i.name for i in g.input if i.name == "tokens"), g.input[0].name)
        g.node.extend([helper.make_node("Shape", [tok], ["macs_bshape"], end=1),
                       helper.make_node("Expand", ["macs_1", "macs_bshape"], ["macs"])])
    fns = [f for f in m.functions if f.domain != F.DOMAIN or f.name not in BATCHED]
    used = {f.name for f in m.functions if f.domain == F.DOMAIN}
    fns += [BATCHED[k]() for k in F.OP_NAMES if k in BATCHED and k in used]
    del m.functions[:]
    m.functions.extend(fns)
    return m
