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
                                                                           CumSum. All inputs are
                                                                           initializers, so onnxruntime
                                                                           constant-folds it at load time.
SparseWeightQ      (indptr, indices, values i8, scale [C], shape) -> D     same, values * scale[column]
SparseWeightI8     (indptr, indices, values i8, shape) -> D i8 [R,C]       same, kept int8
EventMatVec        (idx [n], val [n], WT [K,N]) -> [1,N]                   Gather(WT, idx) rows of the active
                                                                           units, MatMul with their values
EventMatVecF16     (idx, val, WT f16 [K,N]) -> [1,N] f32                   Gather f16 rows, Cast, MatMul
EventMatVecQ       (idx, val, WT i8 [K,N], scale [N]) -> [1,N]             Gather i8 rows, Cast, MatMul, * scale
SparseMatVec       (x [1,K], WT [K,N]) -> [1,N]                            MatMul (dense input)
EmbedMatVec        (tokens [1] i64, table [V,K], WT [K,N]) -> [1,N]        Gather(MatMul(table, WT), tokens):
                                                                           embedding folded into the first
                                                                           layer's input matrix at load time
EGRUCell           (gx [1,3h], gh [1,3h], c [1,h], thr [h]) -> (c', y')    gates z, r, g; threshold; reset
CountMACs          (idx [n] i64, fanout [K] i64) -> [1] i64                sum of the active units' fan-outs
=================  ======================================================  ====================================

Weights are passed as ``WT`` = Mᵀ (input-major: one row per input unit), the layout in which the rows
an event touches are contiguous.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

DOMAIN = "ai.egru"
DOMAIN_VERSION = 1
OPSET = 21

_F = TensorProto.FLOAT
_I64 = TensorProto.INT64


def _const_ints(name: str, vals: list[int]):
    return helper.make_node("Constant", [], [name], value_ints=list(vals))


def _const_int(name: str, val: int):
    return helper.make_node("Constant", [], [name], value_int=int(val))


def _const_float(name: str, val: float):
    return helper.make_node("Constant", [], [name], value_float=float(val))


def _fn(name: str, inputs: list[str], outputs: list[str], nodes: list, doc: str) -> onnx.FunctionProto:
    return helper.make_function(DOMAIN, name, inputs, outputs, nodes,
                                opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc)


def compress_events() -> onnx.FunctionProto:
    n = helper.make_node
    nodes = [
        _const_ints("m1", [-1]),
        _const_ints("ax0", [0]),
        n("Reshape", ["y", "m1"], ["yf"]),
        n("NonZero", ["yf"], ["nz"]),
        n("Squeeze", ["nz", "ax0"], ["idx"]),
        n("Gather", ["yf", "idx"], ["val"], axis=0),
        n("Shape", ["idx"], ["count"]),
    ]
    return _fn("CompressEvents", ["y"], ["idx", "val", "count"], nodes,
               "Active units of a batch-1 event vector y [1,N]: ascending indices (int64), their values and "
               "their number.")


def _csr_to_dense_nodes(values: str, dtype: int = _F, out: str = "dense") -> list:
    """Nodes computing `out` [R,C] from indptr, indices, `values` (of `dtype`) and shape (int64 [2])."""
    n = helper.make_node
    return [
        _const_ints("one1", [1]),
        _const_ints("zero1", [0]),
        _const_ints("m1", [-1]),
        _const_int("zero_s", 0),
        n("Cast", ["indptr"], ["ip"], to=_I64),
        n("Cast", ["indices"], ["ix"], to=_I64),
        n("Shape", ["ix"], ["nnz"]),
        n("Add", ["nnz", "one1"], ["nnz1"]),
        # row id of every stored entry: mark where each row (after the first) starts, then prefix-sum
        n("Slice", ["ip", "one1", "m1"], ["starts"]),
        n("ConstantOfShape", ["nnz1"], ["marks0"], value=helper.make_tensor("v", _I64, [1], [0])),
        n("Shape", ["starts"], ["nstarts"]),
        n("ConstantOfShape", ["nstarts"], ["ones"], value=helper.make_tensor("v", _I64, [1], [1])),
        n("ScatterElements", ["marks0", "starts", "ones"], ["marks"], axis=0, reduction="add"),
        n("Slice", ["marks", "zero1", "nnz"], ["marks_n"]),
        n("CumSum", ["marks_n", "zero_s"], ["row"]),
        _const_int("one_s", 1),
        n("Gather", ["shape", "one_s"], ["ncols_v"], axis=0),
        n("ReduceProd", ["shape"], ["total"], keepdims=1),
        n("Mul", ["row", "ncols_v"], ["row_off"]),
        n("Add", ["row_off", "ix"], ["flat"]),
        n("ConstantOfShape", ["total"], ["zeros"], value=helper.make_tensor("v", dtype, [1], [0])),
        n("ScatterElements", ["zeros", "flat", values], ["dense_flat"], axis=0),
        n("Reshape", ["dense_flat", "shape"], [out]),
    ]


def sparse_weight() -> onnx.FunctionProto:
    return _fn("SparseWeight", ["indptr", "indices", "values", "shape"], ["dense"], _csr_to_dense_nodes("values"),
               "CSR (indptr over rows, column indices, f32 values) -> dense [rows, cols]. Weights are stored in "
               "this form so the model file shrinks with pruning; the inputs are initializers, so runtimes "
               "constant-fold this once at load time.")


def sparse_weight_q() -> onnx.FunctionProto:
    n = helper.make_node
    nodes = _csr_to_dense_nodes("values", TensorProto.INT8, out="dense_i8") + [
        n("Cast", ["dense_i8"], ["dense_f"], to=_F),
        n("Mul", ["dense_f", "scale"], ["dense"]),            # scale [C] broadcasts over the rows
    ]
    return _fn("SparseWeightQ", ["indptr", "indices", "values", "scale", "shape"], ["dense"], nodes,
               "CSR int8 values with a per-column dequantisation scale (the per-output-row scale of the IR's "
               "int8 SparseMatrix) -> dense f32 [rows, cols], value = int8 * scale[column].")


def sparse_weight_i8() -> onnx.FunctionProto:
    return _fn("SparseWeightI8", ["indptr", "indices", "values", "shape"], ["dense"],
               _csr_to_dense_nodes("values", TensorProto.INT8),
               "CSR int8 values -> dense int8 [rows, cols] (kept int8 for EventMatVecQ; folded at load time).")


def _event_matvec_nodes(cast_rows: bool = False, scaled: bool = False) -> list:
    """Gather(WT, idx) rows of the active units [-> Cast f32], MatMul with their values [-> * scale]."""
    n = helper.make_node
    nodes = [_const_ints("ax0", [0]), n("Gather", ["WT", "idx"], ["gathered" if cast_rows else "rows"], axis=0)]
    if cast_rows:
        nodes.append(n("Cast", ["gathered"], ["rows"], to=_F))
    nodes += [n("Unsqueeze", ["val", "ax0"], ["v"]), n("MatMul", ["v", "rows"], ["acc" if scaled else "out"])]
    if scaled:
        nodes.append(n("Mul", ["acc", "scale"], ["out"]))
    return nodes


def event_matvec() -> onnx.FunctionProto:
    return _fn("EventMatVec", ["idx", "val", "WT"], ["out"], _event_matvec_nodes(),
               "Event-gated matrix-vector product: sum over the active input units i of val_i * WT[i, :]; only "
               "the rows of the active units are read.")


def event_matvec_f16() -> onnx.FunctionProto:
    return _fn("EventMatVecF16", ["idx", "val", "WT"], ["out"], _event_matvec_nodes(cast_rows=True),
               "EventMatVec over float16 weight rows (half the bytes read), accumulated in float32.")


def event_matvec_q() -> onnx.FunctionProto:
    return _fn("EventMatVecQ", ["idx", "val", "WT", "scale"], ["out"], _event_matvec_nodes(True, scaled=True),
               "EventMatVec over int8 weight rows with a per-output scale applied after the sum: "
               "scale * sum_i val_i * WT[i, :] (a quarter of the f32 bytes; exact up to f32 rounding).")


def sparse_matvec() -> onnx.FunctionProto:
    nodes = [helper.make_node("MatMul", ["x", "WT"], ["out"])]
    return _fn("SparseMatVec", ["x", "WT"], ["out"], nodes, "x [1,K] @ WT [K,N] for a dense input vector.")


def embed_matvec() -> onnx.FunctionProto:
    n = helper.make_node
    nodes = [
        n("MatMul", ["table", "WT"], ["folded"]),
        n("Gather", ["folded", "tokens"], ["out"], axis=0),
    ]
    return _fn("EmbedMatVec", ["tokens", "table", "WT"], ["out"], nodes,
               "embedding(table, tokens) @ WT as one row lookup in table @ WT, which depends only on "
               "initializers and is constant-folded at load time.")


def egru_cell() -> onnx.FunctionProto:
    n = helper.make_node
    nodes = [
        n("Split", ["gx"], ["gxz", "gxr", "gxg"], axis=1, num_outputs=3),
        n("Split", ["gh"], ["ghz", "ghr", "ghg"], axis=1, num_outputs=3),
        n("Add", ["gxz", "ghz"], ["az"]),
        n("Sigmoid", ["az"], ["z"]),
        n("Add", ["gxr", "ghr"], ["ar"]),
        n("Sigmoid", ["ar"], ["r"]),
        n("Mul", ["r", "ghg"], ["rg"]),
        n("Add", ["gxg", "rg"], ["ag"]),
        n("Tanh", ["ag"], ["g"]),
        _const_float("one", 1.0),
        n("Mul", ["z", "c"], ["zc"]),
        n("Sub", ["one", "z"], ["omz"]),
        n("Mul", ["omz", "g"], ["omzg"]),
        n("Add", ["zc", "omzg"], ["ct"]),
        n("Greater", ["ct", "thr"], ["fire"]),
        n("Cast", ["fire"], ["o"], to=_F),
        n("Mul", ["o", "ct"], ["y_next"]),
        n("Mul", ["o", "thr"], ["othr"]),
        n("Sub", ["ct", "othr"], ["c_next"]),
    ]
    return _fn("EGRUCell", ["gx", "gh", "c", "thr"], ["c_next", "y_next"], nodes,
               "EGRU update, gate order z, r, g: z=σ(gx_z+gh_z), r=σ(gx_r+gh_r), g=tanh(gx_g+r*gh_g), "
               "c~=z*c+(1-z)*g, o=H(c~-thr), y'=o*c~, c'=c~-o*thr.")


def count_macs() -> onnx.FunctionProto:
    n = helper.make_node
    nodes = [
        _const_ints("ax0", [0]),
        n("Gather", ["fanout", "idx"], ["f"], axis=0),
        n("ReduceSum", ["f", "ax0"], ["macs"], keepdims=1),
    ]
    return _fn("CountMACs", ["idx", "fanout"], ["macs"], nodes,
               "Multiply-accumulates of an event-gated product: the summed non-zero fan-out of the active units.")


BUILDERS = {
    "CompressEvents": compress_events,
    "SparseWeight": sparse_weight,
    "SparseWeightQ": sparse_weight_q,
    "SparseWeightI8": sparse_weight_i8,
    "EventMatVec": event_matvec,
    "EventMatVecF16": event_matvec_f16,
    "EventMatVecQ": event_matvec_q,
    "SparseMatVec": sparse_matvec,
    "EmbedMatVec": embed_matvec,
    "EGRUCell": egru_cell,
    "CountMACs": count_macs,
}

#: the stable op names of the ``ai.egru`` domain
OP_NAMES = tuple(BUILDERS)


def build_functions(names) -> list[onnx.FunctionProto]:
    """FunctionProtos for the ops in `names`, in a fixed order (deterministic model bytes)."""
    return [BUILDERS[k]() for k in OP_NAMES if k in set(names)]
