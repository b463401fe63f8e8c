"""The ``ai.egru`` operator set: compiler ops shipped as model-local ONNX functions.

Each op is a `FunctionProto` whose body uses only standard ONNX ops (opset `OPSET`), so stock onnxruntime
runs a compiled model with no extra library (it inlines model-local functions when it loads the model).
Op names and signatures are stable; a runtime with native kernels for ``ai.egru`` may replace the bodies.

=================  ======================================================  ====================================
op                 signature                                               body (standard ops)
=================  ======================================================  ====================================
CompressEvents     (y [1,N] f32) -> (idx [n] i64, val [n] f32, count [1])  NonZero, Gather; n = active units,
                                                                           ascending (the IR op's padded
                                                                           arrays without the padding)
SparseWeight       (indptr, indices, values, shape [2] i64) -> D [R,C]     CSR -> dense: ScatterElements,
                                                                           CumSum (D has the values'
                                                                           dtype). All inputs are
                                                                           initializers, so onnxruntime
                                                                           constant-folds it at load time.
SparseWeightQ      (indptr, indices, values i8, scale [C], shape) -> D     SparseWeight, Cast, * scale[column]
SparseWeightI8     (indptr, indices, values i8, shape) -> D i8 [R,C]       SparseWeight (kept int8)
EventMatVec        (idx [n], val [n], WT [K,N]) -> [1,N]                   Gather(WT, idx) rows of the active
                                                                           units, MatMul with their values
EventMatVecF16     (idx, val, WT f16 [K,N]) -> [1,N] f32                   Gather f16 rows, Cast, MatMul
EventMatVecQ       (idx, val, WT i8 [K,N], scale [N]) -> [1,N]             Gather i8 rows; values as 3 base-128
                                                                           uint8 digits; MatMulInteger, * scale
                                                                           (error <= 2^-22 max|val|; `bodies`)
SparseMatVec       (x [1,K], WT [K,N]) -> [1,N]                            MatMul (dense input)
EmbedMatVec        (tokens [1] i64, table [V,K], WT [K,N]) -> [1,N]        Gather(MatMul(table, WT), tokens):
                                                                           embedding folded into the first
                                                                           layer's input matrix at load time
EGRUCell           (gx [1,3h], gh [1,3h], c [1,h], thr [h]) -> (c', y')    gates z, r, g; threshold; reset
CountMACs          (idx [n] i64, fanout [K] i64) -> [1] i64                sum of the active units' fan-outs
=================  ======================================================  ====================================

Weights are passed as ``WT`` = Mᵀ (input-major: one row per input unit), the layout in which the rows
an event touches are contiguous.

The bodies are written with onnxscript in `bodies` (batched forms: `bodies_batched`), imported only when a
model is built; SparseWeightQ / SparseWeightI8 call SparseWeight, so a model that uses them carries it too
(`DEPENDS`).
"""
from __future__ import annotations

import onnx

from .options import DOMAIN, DOMAIN_VERSION, OPSET

__all__ = ["DOMAIN", "DOMAIN_VERSION", "OPSET", "OP_NAMES", "DEPENDS", "with_callees", "function_proto",
           "build_functions"]

#: the stable op names of the ``ai.egru`` domain, in the order a model lists their functions (callees first)
OP_NAMES = ("CompressEvents", "SparseWeight", "SparseWeightQ", "SparseWeightI8", "EventMatVec", "EventMatVecF16",
            "EventMatVecQ", "SparseMatVec", "EmbedMatVec", "EGRUCell", "CountMACs")

#: op -> the ``ai.egru`` ops its body calls
DEPENDS = {"SparseWeightQ": ("SparseWeight",), "SparseWeightI8": ("SparseWeight",)}


def with_callees(names) -> set[str]:
    """`names` and the ``ai.egru`` ops their bodies call (`DEPENDS`)."""
    out = set(names)
    for k in list(out):
        out.update(DEPENDS.get(k, ()))
    return out


def function_proto(body) -> onnx.FunctionProto:
    """The FunctionProto of an onnxscript function, its doc string (the Python docstring) on one line."""
    proto = body.to_function_proto()
    proto.doc_string = " ".join(proto.doc_string.split())
    return proto


def build_functions(names) -> list[onnx.FunctionProto]:
    """FunctionProtos for the ops in `names` and their callees, in a fixed order (deterministic model bytes)."""
    from . import bodies
    need = with_callees(names)
    return [function_proto(getattr(bodies, k)) for k in OP_NAMES if k in need]
