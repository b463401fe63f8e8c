"""const-fold: evaluate ops whose inputs are all constants into new ``const`` nodes.

Before (a pruned layer, as traced: ``torch.nn.utils.prune`` recomputes ``kernel = kernel_orig * mask``)::

    %rnns_0_kernel_orig = const @rnns.0.kernel_orig : tensor<8x36xf32>
    %rnns_0_kernel_mask = const @rnns.0.kernel_mask : tensor<8x36xf32>
    %rnns_0_thr = const @rnns.0.thr : tensor<12xf32>
    %to = cast(%rnns_0_kernel_mask) {dtype=f32} : tensor<8x36xf32>
    %mul = mul(%to, %rnns_0_kernel_orig) : tensor<8x36xf32>
    %matmul = matmul(%embedding, %mul) : tensor<1x36xf32>
    %clamp = clamp(%rnns_0_thr) {max=1.0, min=0.0} : tensor<12xf32>

After::

    %rnns_0_kernel = const @rnns.0.kernel : tensor<8x36xf32>
    %matmul = matmul(%embedding, %rnns_0_kernel) : tensor<1x36xf32>
    %rnns_0_thr_1 = const @rnns.0.thr : tensor<12xf32>

The new constant's ``label`` comes from its sources (``_orig`` / ``_mask`` suffixes dropped; labels of a
concat are combined). A constant that is still used by a non-foldable op (e.g. the embedding table, also
the tied decoder weight) is never folded into a derived copy: ``transpose(table)`` stays as it is, so a
tied decoder stays tied. Small constants (one element) may be copied freely.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, SparseMatrix
from ..ir.ops import OPS
from .manager import PassOptions, register_pass
from .utils import combine_labels, remove_dead_nodes, sanitize

_SUFFIXES = ("_orig", "_mask")


def _strip(label: str) -> str:
    for s in _SUFFIXES:
        if label.endswith(s):
            return label[: -len(s)]
    return label


def _is_small(node: Node) -> bool:
    d = node.attrs["data"]
    return not isinstance(d, SparseMatrix) and np.asarray(d).size <= 1


def _derived_label(node: Node) -> str | None:
    srcs = [v.producer for v in node.inputs if v.producer is not None and v.producer.is_const
            and not _is_small(v.producer)]
    labels = [s.attrs.get("label") for s in srcs if s.attrs.get("label")]
    if not labels:
        return None
    if node.op == "concat":
        return combine_labels([_strip(l) for l in labels])
    for l in labels:                      # the weight itself, not its mask
        if l.endswith("_orig"):
            return _strip(l)
    non_mask = [l for l in labels if not l.endswith("_mask")]
    return _strip((non_mask or labels)[0])


def _foldable(node: Node) -> bool:
    if node.is_const or node.op not in OPS or not node.inputs:
        return False
    for v in node.inputs:
        p = v.producer
        if p is None or not p.is_const or isinstance(p.attrs["data"], SparseMatrix):
            return False
    return True


def const_fold(graph: Graph) -> int:
    """Fold all-constant ops in place; returns the number of ops folded."""
    folded = 0
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if not _foldable(node):
                continue
            users = graph.users()
            # never duplicate a (non-scalar) constant that stays live for a non-foldable user
            if any(not _is_small(v.producer) and any(not _foldable(u) for u in users.get(v, []))
                   for v in node.inputs):
                continue
            outs = OPS[node.op].compute(node.attrs, *[v.producer.attrs["data"] for v in node.inputs])
            label = _derived_label(node)
            idx = graph.index_of(node)
            for k, (old, data) in enumerate(zip(node.outputs, outs)):
                data = np.ascontiguousarray(data)
                attrs = {"label": label} if label else {}
                hint = sanitize(label) if label else old.name
                if len(node.outputs) > 1 and label:
                    hint += f"_{k}"
                new = graph.const(data, name=hint, index=idx + k, **attrs)
                if node.meta.get("loc"):
                    new.producer.meta["loc"] = node.meta["loc"]
                graph.replace_all_uses(old, new)
            graph.remove_node(node)
            folded += 1
            changed = True
        if changed:
            remove_dead_nodes(graph)
    return folded


@register_pass("const-fold")
def run(graph: Graph, options: PassOptions) -> dict:
    n = const_fold(graph)
    return {"folded": n}
