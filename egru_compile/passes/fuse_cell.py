"""fuse-cell: pattern-match each layer's elementwise gate / threshold / reset subgraph into one
``egru_cell(gx, gh, c, thr) -> (c_next, y_next)`` (semantics in `ir/ops.py`).

Before (one layer, after fold-masks)::

    %split_0, %split_1, %split_2 = split(%gx0) {axis=1, sizes=[12, 12, 12]}
    %split_1_0, %split_1_1, %split_1_2 = split(%gh0) {axis=1, sizes=[12, 12, 12]}
    %add_2 = add(%split_0, %split_1_0)
    %sigmoid = sigmoid(%add_2)                       // z
    %add_3 = add(%split_1, %split_1_1)
    %sigmoid_1 = sigmoid(%add_3)                     // r
    %mul_2 = mul(%sigmoid_1, %split_1_2)
    %add_4 = add(%split_2, %mul_2)
    %tanh = tanh(%add_4)                             // g
    %mul_3 = mul(%sigmoid, %c0)
    %rsub = sub(%scalar, %sigmoid)                   // 1 - z
    %mul_4 = mul(%rsub, %tanh)
    %add_5 = add(%mul_3, %mul_4)                     // c~
    %sub = sub(%add_5, %rnns_0_thr_clamp)
    %to_2_h = heaviside(%sub)                        // o
    %mul_5 = mul(%to_2_h, %add_5)                    // y'
    %mul_6 = mul(%to_2_h, %rnns_0_thr_clamp)
    %sub_1 = sub(%add_5, %mul_6)                     // c'

After::

    %c0_next, %y0_next = egru_cell(%gx0, %gh0, %c0, %rnns_0_thr_clamp) {layer=0}

The match is structural and accepts commuted operands of ``add``/``mul`` (exact in IEEE arithmetic), any
``1 - z`` constant of ones, and gate pre-activations that are not the three slices of one tensor (then
``gx``/``gh`` are built with ``concat``). The numpy op order of `egru_cell` equals the traced op order,
so interpreting the graph before and after gives bit-identical results.
"""
from __future__ import annotations

from itertools import permutations

import numpy as np

from ..ir import Graph, SparseMatrix, Value
from .manager import PassOptions, register_pass, register_property
from .utils import const_data, fed_layers, remove_dead_nodes


def _prod(v: Value, op: str):
    p = v.producer
    return p if p is not None and p.op == op else None


def _is_ones(v: Value) -> bool:
    d = const_data(v)
    if d is None or isinstance(d, SparseMatrix):
        return False
    a = np.asarray(d)
    return a.size >= 1 and bool(np.all(a == 1.0))


def _pairs(node):
    """Both operand orders of a binary commutative node."""
    a, b = node.inputs
    return [(a, b), (b, a)] if a is not b else [(a, b)]


def _src(v: Value):
    p = v.producer
    return p if p is not None and p.op == "split" else v


def _assign(p1: Value, p2: Value, gx_g: Value, gh_g: Value) -> tuple[Value, Value]:
    """Which operand of ``gate_x + gate_h`` is the input-side one (numerically irrelevant: + commutes)."""
    if _src(p1) is _src(gh_g) or _src(p2) is _src(gx_g):
        return p2, p1
    return p1, p2


def _operands(node, op: str):
    """(producer of one operand, the other operand) for each order of commutative `node` whose first
    operand is produced by `op`."""
    for a, b in _pairs(node):
        p = _prod(a, op)
        if p is not None:
            yield p, b


def _match(hv, users):
    d = _prod(hv.inputs[0], "sub")
    ctn = _prod(d.inputs[0], "add") if d is not None else None
    if ctn is None:
        return None
    ct, thr = d.inputs
    found = _outputs(users, hv.output, ct, thr)
    if found is None:
        return None
    y_node, c_node = found
    for P, Q in permutations(ctn.inputs):
        pm, qm = _prod(P, "mul"), _prod(Q, "mul")
        if pm is None or qm is None:
            continue
        for zn, c in _operands(pm, "sigmoid"):                       # z * c
            z = zn.output
            for on, g in _operands(qm, "sub"):                       # (1 - z) * g
                gn = _prod(g, "tanh")
                if gn is None or on.inputs[1] is not z or not _is_ones(on.inputs[0]):
                    continue
                gpre, zpre = _prod(gn.inputs[0], "add"), _prod(zn.inputs[0], "add")
                if gpre is None or zpre is None:
                    continue
                for rm, gx_g in _operands(gpre, "mul"):              # gx_g + r * gh_g
                    for rn, gh_g in _operands(rm, "sigmoid"):
                        rpre = _prod(rn.inputs[0], "add")
                        if rpre is None:
                            continue
                        gx_z, gh_z = _assign(*zpre.inputs, gx_g, gh_g)
                        gx_r, gh_r = _assign(*rpre.inputs, gx_g, gh_g)
                        h = c.type.shape[-1]
                        shapes = {v.type.shape for v in (gx_z, gh_z, gx_r, gh_r, gx_g, gh_g, c, ct)}
                        if len(shapes) != 1 or len(c.type.shape) != 2 or thr.type.shape[-1] != h \
                                or thr.type.numel != h:
                            return None
                        return dict(gx=(gx_z, gx_r, gx_g), gh=(gh_z, gh_r, gh_g), c=c, thr=thr,
                                    y_node=y_node, c_node=c_node, ct=ct)
    return None


def _outputs(users, o: Value, ct: Value, thr: Value):
    """(y = o*c~ node, c_next = c~ - o*thr node) among the users of o."""
    y_node = c_node = None
    for u in users.get(o, []):
        if u.op != "mul":
            continue
        for a, b in _pairs(u):
            if a is o and b is ct:
                y_node = u
            elif a is o and b is thr:
                for s in users.get(u.output, []):
                    if s.op == "sub" and s.inputs[0] is ct and s.inputs[1] is u.output:
                        c_node = s
    if y_node is None or c_node is None:
        return None
    return y_node, c_node


def _gate_tensor(graph: Graph, parts: tuple[Value, Value, Value], index: int, name: str):
    """The [1,3h] tensor whose z/r/g slices are `parts` (the split source, or a new concat)."""
    p = parts[0].producer
    if p is not None and p.op == "split" and len(p.outputs) == 3 and list(p.outputs) == list(parts) \
            and p.attrs["axis"] % len(p.inputs[0].type.shape) == len(p.inputs[0].type.shape) - 1:
        return p.inputs[0], index
    v = graph.op("concat", *parts, name=name, index=index, axis=1)
    return v, index + 1


def fuse_cells(graph: Graph) -> int:
    layers = fed_layers(graph)
    fused = 0
    for hv in [n for n in graph.nodes if n.op == "heaviside"]:
        if hv not in graph.nodes:
            continue
        users = graph.users()
        m = _match(hv, users)
        if m is None:
            continue
        c = m["c"]
        layer = c.meta.get("layer") if c.meta.get("role") == "state_in" else layers.get(m["ct"].producer)
        idx = min(graph.index_of(m["y_node"]), graph.index_of(m["c_node"]))
        sfx = "" if layer is None else str(layer)
        gx, idx = _gate_tensor(graph, m["gx"], idx, f"gx{sfx}")
        gh, idx = _gate_tensor(graph, m["gh"], idx, f"gh{sfx}")
        attrs = {} if layer is None else {"layer": layer}
        c_next, y_next = graph.multi_op("egru_cell", gx, gh, c, m["thr"], names=[f"c{sfx}_next", f"y{sfx}_next"],
                                        index=idx, meta=dict(m["y_node"].meta), **attrs)
        graph.replace_all_uses(m["y_node"].output, y_next)
        graph.replace_all_uses(m["c_node"].output, c_next)
        remove_dead_nodes(graph)
        fused += 1
    return fused


CELL_FUSED = register_property("cell-fused", "each layer's gate / threshold / reset subgraph is one egru_cell")


@register_pass("fuse-cell", establishes={CELL_FUSED})
def run(graph: Graph, options: PassOptions) -> dict:
    return {"cells": fuse_cells(graph)}
