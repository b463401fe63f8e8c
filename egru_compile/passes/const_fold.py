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
    %rnns_0_thr_clamp = const @rnns.0.thr : tensor<12xf32>

The new constant's ``label`` comes from its sources (``_orig`` / ``_mask`` suffixes dropped; labels of a
concat are combined). A constant that is still used by a non-foldable op (e.g. the embedding table, also
the tied decoder weight) is never folded into a derived copy: ``transpose(table)`` stays as it is, so a
tied decoder stays tied. Small constants (one element) may be copied freely.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, SparseMatrix
from ..ir.ops import OPS
from .manager import PassOptions, register_pass, register_property
from .utils import combine_labels, eval_constant, remove_dead_nodes, sanitize

_SUFFIXES = ("_orig", "_mask")


def _strip(label: str) -> str:
    for s in _SUFFIXES:
        if label.endswith(s):
            return label[: -len(s)]
    return label


def _is_small(v) -> bool:
    return v.type.numel <= 1


def _derived_label(v, inner: set) -> str | None:
    """Label of a folded value from the labelled constants it is computed from."""
    p = v.producer
    if p is None:
        return None
    if p.is_const:
        return p.attrs.get("label")
    if p not in inner:
        return None
    labels = [(x, _derived_label(x, inner)) for x in p.inputs if not _is_small(x)]
    labels = [l for _, l in labels if l]
    if not labels:
        return None
    if p.op == "concat":
        return combine_labels([_strip(l) for l in labels])
    for l in labels:                      # the weight itself, not its mask
        if l.endswith("_orig"):
            return _strip(l)
    non_mask = [l for l in labels if not l.endswith("_mask")]
    return _strip((non_mask or labels)[0])


def foldable(graph: Graph, users: dict | None = None) -> set:
    """The ops const-fold would fold: computed from constants only, without deriving a copy of a tensor
    that stays live for another user."""
    users = graph.users() if users is None else users
    # 1. optimistic candidate set: ops computed from constants only
    cand: set = set()
    for n in graph.nodes:
        if n.is_const or n.op not in OPS or not n.inputs:
            continue
        if all(v.producer is not None and (v.producer in cand or (v.producer.is_const and not isinstance(
                v.producer.attrs["data"], SparseMatrix))) for v in n.inputs):
            cand.add(n)
    # 2. never derive a copy of a (non-scalar) tensor that stays live for a non-folded user
    changed = True
    while changed:
        changed = False
        for n in [n for n in graph.nodes if n in cand]:
            ok = all(v.producer is not None and (v.producer.is_const or v.producer in cand) for v in n.inputs)
            if ok:
                ok = not any(not _is_small(v) and any(u not in cand for u in users.get(v, [])) for v in n.inputs)
            if not ok:
                cand.discard(n)
                changed = True
    return cand


def const_fold(graph: Graph) -> int:
    """Fold all-constant subgraphs in place (one new constant per result still needed at run time);
    returns the number of ops folded away."""
    users = graph.users()
    cand = foldable(graph, users)
    # 3. materialise the results that something outside the folded set still reads
    outputs = set(graph.outputs)
    roots = [n for n in graph.nodes if n in cand and any(
        v in outputs or any(u not in cand for u in users.get(v, [])) for v in n.outputs)]
    cache: dict = {}
    for node in roots:
        label = _derived_label(node.outputs[0], cand)
        idx = graph.index_of(node)
        for k, old in enumerate(node.outputs):
            if not (old in outputs or users.get(old)):
                continue
            data = np.array(eval_constant(old, cache), order="C")     # keeps 0-d results 0-d
            attrs = {"label": label} if label else {}
            hint = sanitize(label) if label else old.name
            if label and graph.has_name(hint):
                hint = f"{hint}_{node.op}"
            if len(node.outputs) > 1:
                hint += f"_{k}"
            new = graph.const(data, name=hint, index=idx, **attrs)
            idx += 1
            if node.meta.get("loc"):
                new.producer.meta["loc"] = node.meta["loc"]
            graph.replace_all_uses(old, new)
    remove_dead_nodes(graph)
    return len(cand)


CONSTS_FOLDED = register_property("consts-folded", "no op computes from constants only (masks applied)",
                                  detect=lambda g: not foldable(g))


@register_pass("const-fold", establishes={CONSTS_FOLDED})
def run(graph: Graph, options: PassOptions) -> dict:
    n = const_fold(graph)
    return {"folded": n}
