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
from onnx import helper

from . import functions as F
from .options import OnnxLoweringError

#: the symbolic batch dimension's name
BATCH_DIM = "B"

#: the ``ai.egru`` ops with a batched body (`bodies_batched`, written with onnxscript)
BATCHED = ("CompressEvents", "EventMatVec", "EventMatVecF16", "EventMatVecQ", "CountMACs")


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
    from . import bodies_batched
    fns = [f for f in m.functions if f.domain != F.DOMAIN or f.name not in BATCHED]
    used = {f.name for f in m.functions if f.domain == F.DOMAIN}
    fns += [F.function_proto(getattr(bodies_batched, k)) for k in F.OP_NAMES if k in BATCHED and k in used]
    del m.functions[:]
    m.functions.extend(fns)
    return m
