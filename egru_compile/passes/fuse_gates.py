"""fuse-gates: matvecs that read the same input (e.g. separate z / r / g gate matrices of one layer) become
one sparse matrix with concatenated outputs (rows) followed by a ``split``, so each active input unit is
visited once per step. The EvNN layout is already fused ([in, 3h] kernels): then this pass changes nothing.

Before (a model written with one matrix per gate, after fold-masks)::

    %gx0 = sparse_matvec(%embedding, %w0_input, %b_z) {layer=0, role=input}        // [1,h]
    %gx0_1 = sparse_matvec(%embedding, %w0_input_1, %b_r) {layer=0, role=input}    // [1,h]
    %gx0_2 = sparse_matvec(%embedding, %w0_input_2, %b_g) {layer=0, role=input}    // [1,h]

After::

    %w0_input = const @layers.0.{w_z,w_r,w_g} sparse<3hxin, csr, ...>
    %gx0_bias = const dense<...> : tensor<3hxf32>
    %gx0 = sparse_matvec(%embedding, %w0_input, %gx0_bias) {fused=3, layer=0, role=input}  // [1,3h]
    %gx0_part0, %gx0_part1, %gx0_part2 = split(%gx0) {axis=1, sizes=[h, h, h]}

Matvecs are grouped by op, input (for ``event_matvec``: the same compressed events), layer and role;
rows keep program order. Biases are concatenated (zeros where one member had none). int8 matrices are
fused only with int8 matrices (their per-row scales are concatenated).
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, SparseMatrix
from .fold_masks import const_name, sparse_const_attrs
from .manager import PassOptions, register_pass, register_property
from .utils import combine_labels, const_data, is_const, remove_dead_nodes


def vstack_sparse(mats: list[SparseMatrix], fmt: str) -> SparseMatrix:
    """Stack M_1; M_2; ... (rows = outputs) into one SparseMatrix of format `fmt`."""
    csr = [m.convert("csr") for m in mats]
    n_in = csr[0].shape[1]
    indptr = [np.zeros(1, np.int64)]
    off = 0
    for m in csr:
        indptr.append(np.asarray(m.indptr[1:], np.int64) + off)
        off += int(m.indptr[-1])
    scale = None
    if csr[0].scale is not None:
        scale = np.concatenate([np.asarray(m.scale, np.float32) for m in csr])
    out = SparseMatrix((sum(m.shape[0] for m in csr), n_in), "csr", np.concatenate(indptr),
                       np.concatenate([np.asarray(m.indices, np.int64) for m in csr]),
                       np.concatenate([m.data for m in csr]), scale)
    return out.convert(fmt)


def _key(node: Node):
    ins = tuple(node.inputs[:3]) if node.op == "event_matvec" else (node.inputs[0],)
    return (node.op, ins, node.attrs.get("layer"), node.attrs.get("role"))


def _matrix_pos(node: Node) -> int:
    return 3 if node.op == "event_matvec" else 1


def fuse_gates(graph: Graph) -> int:
    groups: dict = {}
    for n in graph.nodes:
        if n.op in ("sparse_matvec", "event_matvec"):
            groups.setdefault(_key(n), []).append(n)
    fused = 0
    for key, nodes in groups.items():
        if len(nodes) < 2:
            continue
        mats = [const_data(n.inputs[_matrix_pos(n)]) for n in nodes]
        if any(not isinstance(m, SparseMatrix) for m in mats):
            continue
        if len({m.scale is None for m in mats}) != 1 or len({m.data.dtype for m in mats}) != 1:
            continue
        nb = [len(n.inputs) > _matrix_pos(n) + 1 for n in nodes]
        biases = [n.inputs[_matrix_pos(n) + 1] if has else None for n, has in zip(nodes, nb)]
        if any(b is not None and not is_const(b) for b in biases):
            continue
        op, ins, layer, role = key
        fmt = "csc" if op == "event_matvec" else mats[0].fmt
        big = vstack_sparse(mats, fmt)
        label = combine_labels([n.inputs[_matrix_pos(n)].producer.attrs.get("label") for n in nodes])
        first = min(graph.index_of(n) for n in nodes)
        mv = graph.const(big, name=const_name(role, layer), index=first,
                         **sparse_const_attrs(big, label, role, layer))
        args = list(ins) + [mv]
        if any(nb):
            parts = [np.asarray(const_data(b), np.float32).reshape(-1) if b is not None
                     else np.zeros(m.shape[0], np.float32) for b, m in zip(biases, mats)]
            args.append(graph.const(np.concatenate(parts), name=f"{nodes[0].output.name}_bias",
                                    index=first + 1))
        attrs = dict(nodes[0].attrs)
        attrs["fused"] = len(nodes)
        idx = first + 1 + any(nb)
        base = nodes[0].output.name
        out = graph.op(op, *args, name=base + "_fused", index=idx, meta=dict(nodes[0].meta), **attrs)
        pieces = graph.multi_op("split", out, names=[f"{base}_part{k}" for k in range(len(nodes))],
                                index=idx + 1, sizes=[m.shape[0] for m in mats], axis=1)
        for n, p in zip(nodes, pieces):
            graph.replace_all_uses(n.output, p)
        for n in nodes:
            graph.remove_node(n)
            mc = n.inputs[_matrix_pos(n)].producer
            if not any(mc.output in u.inputs for u in graph.nodes):
                graph.remove_node(mc)
        graph.rename(out, base)                          # the old values are gone: reuse their names
        graph.rename(mv, const_name(role, layer))
        fused += 1
    remove_dead_nodes(graph)
    return fused


GATES_FUSED = register_property("gates-fused", "matvecs reading the same input are one matrix + split")


@register_pass("fuse-gates", requires={"masks-folded"}, establishes={GATES_FUSED})
def run(graph: Graph, options: PassOptions) -> dict:
    return {"groups": fuse_gates(graph)}
