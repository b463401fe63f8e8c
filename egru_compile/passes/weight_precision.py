"""weight-precision: choose the runtime dtype of the weight rows each event-gated product gathers, as the
attribute ``weight_dtype`` (``i8``, ``f16`` or ``f32``) of every ``event_matvec`` and every
``matmul`` / ``linear`` marked ``gated`` by ``select-gating``.

Target option ``weight_dtype``: ``auto`` (default) — ``i8`` (int8 rows, per-output-row scale applied after
the sum: exact) for the int8 matrices ``quantize-int8`` made, ``f32`` otherwise; ``f32`` — everything
dequantized; ``f16`` — half-precision rows (~1e-3 relative); ``int8`` — as auto, but an error unless some
matrix is int8 (quantize-int8 must have run).

Before (``%w0_recurrent`` int8 after quantize-int8, ``weight_dtype=auto``)::

    %gh0 = event_matvec(%y0_idx, %y0_val, %y0_count, %w0_recurrent, %b) {layer=0, role=recurrent}
    %logits = linear(%y1_next, %embeddings_weight, %decoder_bias) {gated=True}

After::

    %gh0 = event_matvec(%y0_idx, %y0_val, %y0_count, %w0_recurrent, %b) {layer=0, role=recurrent, weight_dtype=i8}
    %logits = linear(%y1_next, %embeddings_weight, %decoder_bias) {gated=True, weight_dtype=f32}
"""
from __future__ import annotations

from ..ir import Graph, Node, SparseMatrix
from .count_macs import collect_matrices
from .manager import PassError, PassOptions, register_pass
from .target_options import target_option
from .utils import eval_constant, matvec_operands

MODES = ("auto", "f32", "f16", "int8")


def _is_int8(data) -> bool:
    return isinstance(data, SparseMatrix) and data.scale is not None


def gathered_weight(node: Node):
    """The weight value an event-gated product gathers rows of, or None if `node` is not event-gated."""
    if node.op == "event_matvec":
        return node.inputs[3]
    if node.op in ("matmul", "linear") and node.attrs.get("gated"):
        return node.inputs[1]
    return None


def weight_precision(graph: Graph, mode: str = "auto") -> int:
    """Set ``weight_dtype`` on every event-gated product; returns how many gather int8 rows."""
    if mode not in MODES:
        raise PassError(f"weight dtype must be 'auto', 'f32', 'f16' or 'int8', not {mode!r}")
    cache: dict = {}
    if mode == "int8" and not any(_is_int8(eval_constant(matvec_operands(m.node)[1], cache))
                                  for m in collect_matrices(graph)):
        raise PassError("onnx weight_dtype 'int8' needs int8 weights: run the quantize-int8 pass "
                        "(egru-compile adds it with --onnx-weight-dtype int8)")
    n_i8 = 0
    for node in graph.nodes:
        w = gathered_weight(node)
        if w is None:
            continue
        if mode in ("auto", "int8") and _is_int8(eval_constant(w, cache)):
            node.attrs["weight_dtype"] = "i8"
            n_i8 += 1
        else:
            node.attrs["weight_dtype"] = "f16" if mode == "f16" else "f32"
    return n_i8


@register_pass("weight-precision", invalidates=())        # an annotation: same math, same MACs
def run(graph: Graph, options: PassOptions) -> dict:
    return {"int8": weight_precision(graph, str(target_option(options, "weight_dtype", "auto")))}
