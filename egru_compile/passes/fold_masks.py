"""fold-masks: ``x @ W`` with a constant W (pruned: W = orig * mask after const-fold, or with exact zeros)
becomes ``sparse_matvec(x, M)`` with M = W.T as a `SparseMatrix` holding only the non-zeros; a following
``add(..., const bias)`` is absorbed as the bias input.

Before (after const-fold)::

    %rnns_0_kernel = const @rnns.0.kernel : tensor<8x36xf32>
    %rnns_0_recurrent_kernel = const @rnns.0.recurrent_kernel : tensor<12x36xf32>
    %matmul = matmul(%embedding, %rnns_0_kernel) : tensor<1x36xf32>
    %add = add(%matmul, %rnns_0_bias) : tensor<1x36xf32>
    %matmul_1 = matmul(%y0, %rnns_0_recurrent_kernel) : tensor<1x36xf32>
    %add_1 = add(%matmul_1, %rnns_0_recurrent_bias) : tensor<1x36xf32>

After::

    %w0_input = const @rnns.0.kernel sparse<36x8, csr, nnz=144, density=0.5000> : tensor<36x8xf32>
    %w0_recurrent = const @rnns.0.recurrent_kernel sparse<36x12, csc, nnz=216, density=0.5000> : ...
    %gx0 = sparse_matvec(%embedding, %w0_input, %rnns_0_bias) {layer=0, role=input} : tensor<1x36xf32>
    %gh0 = sparse_matvec(%y0, %w0_recurrent, %rnns_0_recurrent_bias) {layer=0, role=recurrent} : ...

Format: CSC (columns = presynaptic units) where the input is an event tensor (a layer's y), CSR where it
is dense (the embedding); `PassOptions.sparse_format` forces one. The constant's attrs record ``label``
(from the source weight), ``role`` (``input`` / ``recurrent`` / ``decoder``), ``layer``, ``nnz`` and
``density``; role and layer are found structurally (see `utils.fed_layers`, `utils.matvec_role`), not from
parameter names. The ``linear(y_last, P, p)`` of EvNN's decoder projection ``a(P · y_last + p)`` (M = P,
role ``projection``: an event input whose product is not the logits) is folded the same way into
``sparse_matvec(y_last, P, p) {role=projection}``; the decoder's ``linear`` is left alone, and so is a
weight that another op (e.g. an embedding lookup) also reads, so no table is copied.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, SparseMatrix, Value
from .manager import PassOptions, register_pass, register_property
from .utils import (fed_layers, is_const, is_event_tensor, matvec_role, remove_dead_nodes, sanitize)


def sparse_const_attrs(m: SparseMatrix, label: str | None, role: str, layer: int | None) -> dict:
    attrs = {"role": role, "layer": layer, "nnz": m.nnz, "density": round(float(m.density), 6)}
    if label:
        attrs["label"] = label
    return attrs


def const_name(role: str, layer: int | None) -> str:
    return f"w{layer}_{role}" if layer is not None else f"w_{role}"


def _bias_of(graph: Graph, users, mm_out: Value, n_out: int):
    """(add node, bias value) when mm_out's only user is ``add(mm_out, const bias[N])``."""
    us = users.get(mm_out, [])
    if len(us) != 1 or us[0].op != "add" or mm_out in graph.outputs:
        return None
    add = us[0]
    if len(add.inputs) != 2 or add.inputs[0] is add.inputs[1]:
        return None
    other = add.inputs[1] if add.inputs[0] is mm_out else add.inputs[0]
    if not is_const(other) or isinstance(other.producer.attrs["data"], SparseMatrix):
        return None
    shape = other.type.shape
    if shape not in ((n_out,), (1, n_out)) or add.output.type.shape != mm_out.type.shape:
        return None
    return add, other


def fold_masks(graph: Graph, sparse_format: str = "auto") -> dict:
    layers = fed_layers(graph)
    users = graph.users()
    cache: dict[tuple[int, str], Value] = {}
    n_mat = n_bias = 0
    for node in list(graph.nodes):
        if node.op not in ("matmul", "linear"):
            continue
        x, w = node.inputs[:2]
        if not is_const(w) or isinstance(w.producer.attrs["data"], SparseMatrix) or len(w.type.shape) != 2:
            continue
        if any(u.op != node.op or u.inputs[1] is not w or w in u.inputs[2:] for u in users.get(w, [])) \
                or w in graph.outputs:
            continue   # the weight is also read elsewhere: a sparse copy would duplicate it
        layer = layers.get(node)
        role = matvec_role(graph, node, layer)
        if node.op == "linear" and role != "projection":
            continue   # only the projection's linear is folded; a decoder keeps its (dense) linear
        lin_bias = node.inputs[2] if node.op == "linear" and len(node.inputs) > 2 else None
        if lin_bias is not None and (not is_const(lin_bias) or len(lin_bias.type.shape) != 1):
            continue
        fmt = sparse_format if sparse_format != "auto" else ("csc" if is_event_tensor(graph, x) else "csr")
        key = (id(w.producer), fmt)
        if key not in cache:
            dense = np.asarray(w.producer.attrs["data"], np.float32)
            m = SparseMatrix.from_dense(dense if node.op == "linear" else dense.T, fmt)   # a view, no copy
            label = w.producer.attrs.get("label")
            cache[key] = graph.const(m, name=const_name(role, layer), index=graph.index_of(w.producer),
                                     **sparse_const_attrs(m, label, role, layer))
        mv = cache[key]
        n_out = mv.type.shape[0]
        absorbed = (node, lin_bias) if lin_bias is not None else _bias_of(graph, users, node.output, n_out)
        target = absorbed[0] if absorbed else node
        args = [x, mv] + ([absorbed[1]] if absorbed else [])
        hint = {"input": f"gx{layer}", "recurrent": f"gh{layer}"}.get(role, sanitize(node.output.name))
        attrs = {"role": role} if layer is None else {"layer": layer, "role": role}
        out = graph.op("sparse_matvec", *args, name=hint, index=graph.index_of(target), meta=dict(target.meta),
                       **attrs)
        graph.replace_all_uses(target.output, out)
        n_mat += 1
        n_bias += bool(absorbed)
        users = graph.users()
    remove_dead_nodes(graph)
    return {"matrices": n_mat, "biases": n_bias}


MASKS_FOLDED = register_property(
    "masks-folded", "constant-weight matvecs are sparse_matvec over SparseMatrix constants",
    detect=lambda g: any(n.op in ("sparse_matvec", "event_matvec") for n in g.nodes))


@register_pass("fold-masks", requires={"consts-folded"}, establishes={MASKS_FOLDED})
def run(graph: Graph, options: PassOptions) -> dict:
    return fold_masks(graph, options.sparse_format)
