"""Frontend canonicalization: rewrite ATen idioms into the IR's canonical ops, then drop dead nodes.

* ``cast(greater(a, 0), f32)``  -> ``heaviside(a)``
* ``cast(greater(a, b), f32)``  -> ``heaviside(sub(a, b))``   (exact for IEEE floats with subnormals)
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph


def _is_zero_const(v) -> bool:
    p = v.producer
    return p is not None and p.is_const and np.asarray(p.attrs["data"]).size == 1 and \
        float(np.asarray(p.attrs["data"]).reshape(-1)[0]) == 0.0


def canonicalize(graph: Graph) -> None:
    for node in list(graph.nodes):
        if node.op != "cast" or node.attrs["dtype"] != "f32":
            continue
        src = node.inputs[0].producer
        if src is None or src.op != "greater":
            continue
        a, b = src.inputs
        idx = graph.index_of(node)
        if _is_zero_const(b) and a.type.shape == node.output.type.shape:
            h = graph.op("heaviside", a, name=node.output.name + "_h", index=idx, meta=node.meta)
        else:
            d = graph.op("sub", a, b, name=node.output.name + "_d", index=idx, meta=node.meta)
            h = graph.op("heaviside", d, name=node.output.name + "_h", index=idx + 1, meta=node.meta)
        graph.replace_all_uses(node.output, h)
    remove_dead_nodes(graph)


def remove_dead_nodes(graph: Graph) -> int:
    """Drop nodes none of whose results are used; returns how many were removed."""
    removed = 0
    while True:
        used = {v for n in graph.nodes for v in n.inputs} | set(graph.outputs)
        dead = [n for n in graph.nodes if not any(v in used for v in n.outputs)]
        if not dead:
            return removed
        for n in dead:
            graph.remove_node(n)
        removed += len(dead)
