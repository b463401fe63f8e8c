"""Helpers shared by the passes: dead-code removal, constant evaluation, structural analyses.

Everything here identifies structure from the graph alone (state roles on graph inputs/outputs, op
kinds, data flow) — never from parameter names.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..ir import Graph, Node, SparseMatrix, Value
from ..ir.ops import OPS

#: ops that multiply an input vector by a weight matrix (operand positions below).
MATVEC_OPS = ("matmul", "linear", "sparse_matvec", "event_matvec")


# ------------------------------------------------------------------------------------------------ basics
def remove_dead_nodes(graph: Graph) -> int:
    """Drop nodes none of whose results are used (repeatedly); returns how many were removed."""
    removed = 0
    while True:
        used = {v for n in graph.nodes for v in n.inputs} | set(graph.outputs)
        dead = [n for n in graph.nodes if not any(v in used for v in n.outputs)]
        if not dead:
            return removed
        dead_ids = {id(n) for n in dead}
        graph.nodes = [n for n in graph.nodes if id(n) not in dead_ids]
        removed += len(dead)


def is_const(v: Value) -> bool:
    return v.producer is not None and v.producer.is_const


def const_data(v: Value):
    return v.producer.attrs["data"] if is_const(v) else None


def eval_constant(v: Value, _cache: dict | None = None):
    """Evaluate `v` if it depends only on constants (through any ops); None otherwise."""
    cache = {} if _cache is None else _cache
    if v in cache:
        return cache[v]
    p = v.producer
    if p is None:
        cache[v] = None
        return None
    if p.is_const:
        cache[v] = p.attrs["data"]
        return cache[v]
    args = []
    for x in p.inputs:
        a = eval_constant(x, cache)
        if a is None:
            cache[v] = None
            return None
        args.append(a)
    outs = OPS[p.op].compute(p.attrs, *args)
    for o, val in zip(p.outputs, outs):
        cache[o] = val
    return cache[v]


# ------------------------------------------------------------------------------------------------ structure
def state_output(graph: Graph, layer: int, kind: str) -> Value | None:
    for v in graph.outputs:
        if v.meta.get("role") == "state_out" and v.meta.get("layer") == layer and v.meta.get("kind") == kind:
            return v
    return None


def is_event_tensor(graph: Graph, v: Value) -> bool:
    """True for an EGRU layer's event output y = o * c~: a ``y`` state input, a ``y`` state output (the
    value a layer emits as its next y, which also feeds the next layer), or the y result of ``egru_cell``."""
    if v.meta.get("kind") == "y" and v.meta.get("role") in ("state_in", "state_out"):
        return True
    if v.producer is not None and v.producer.op == "egru_cell" and v is v.producer.outputs[1]:
        return True
    return any(o is v and o.meta.get("role") == "state_out" and o.meta.get("kind") == "y" for o in graph.outputs)


def event_source(v: Value) -> Value:
    """For the idx/val/count results of ``compress_events`` return the compressed tensor, else `v`."""
    if v.producer is not None and v.producer.op == "compress_events":
        return v.producer.inputs[0]
    return v


def fed_layers(graph: Graph) -> dict[Node, int | None]:
    """For every node: the lowest layer index whose recurrent state (a ``state_out``) it reaches, or None.

    A layer's input and recurrent matrices reach their own layer's state first (later layers are reached
    only through it), so this is "the layer whose EGRU state the node feeds"."""
    out_layer: dict[Value, int] = {}
    for v in graph.outputs:
        if v.meta.get("role") == "state_out":
            l = v.meta["layer"]
            out_layer[v] = min(l, out_layer.get(v, l))
    users = graph.users()
    result: dict[Node, int | None] = {}
    for n in reversed(graph.nodes):
        best = None
        for o in n.outputs:
            cands = [out_layer.get(o)] + [result.get(u) for u in users.get(o, [])]
            cands = [c for c in cands if c is not None]
            if cands:
                m = min(cands)
                best = m if best is None else min(best, m)
        result[n] = best
    return result


def matvec_operands(node: Node) -> tuple[Value, Value]:
    """(input vector value, weight value) of a matvec-like node; for event_matvec the input is the
    tensor given to compress_events."""
    if node.op == "event_matvec":
        return event_source(node.inputs[1]), node.inputs[3]
    return node.inputs[0], node.inputs[1]


def matvec_role(graph: Graph, node: Node, layer: int | None) -> str:
    """``recurrent`` when the matvec's input is (a compressed form of) its own layer's state input,
    ``input`` for other layer matrices; for matrices that feed no layer state ``decoder`` when the product
    is the logits (possibly + a bias), ``projection`` when it reads an event tensor and is not (EvNN's
    decoder projection of the last layer's y, followed by relu and the decoder), else ``decoder``."""
    x, _ = matvec_operands(node)
    if layer is None:
        out = node.outputs[0]
        logits = [v for v in graph.outputs if v.meta.get("role") == "logits"]
        is_logits = any(v is out or (v.producer is not None and v.producer.op == "add" and out in v.producer.inputs)
                        for v in logits)
        return "projection" if not is_logits and is_event_tensor(graph, x) else "decoder"
    if x.meta.get("role") == "state_in" and x.meta.get("layer") == layer:
        return "recurrent"
    return "input"


def weight_matrix(node: Node, cache: dict | None = None) -> SparseMatrix | np.ndarray | None:
    """The math-convention weight M [n_out, n_in] of a matvec-like node: a SparseMatrix for the
    sparse ops; a dense array (evaluated from constants) for matmul (W.T) / linear (W); None if the
    weight is not constant."""
    if node.op in ("sparse_matvec", "event_matvec"):
        return const_data(node.inputs[1 if node.op == "sparse_matvec" else 3])
    w = eval_constant(node.inputs[1], cache)
    if w is None:
        return None
    w = np.asarray(w)
    return w.T if node.op == "matmul" else w


def column_nnz(m) -> np.ndarray:
    """Non-zero fan-out of each input unit of M [n_out, n_in]."""
    if isinstance(m, SparseMatrix):
        return np.asarray(m.column_nnz(), dtype=np.int64)
    return np.count_nonzero(np.asarray(m), axis=0).astype(np.int64)


def sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "v"


def combine_labels(labels: Iterable[str | None]) -> str | None:
    """``['a.w_z', 'a.w_r']`` -> ``'a.{w_z,w_r}'`` (common dotted prefix), else labels joined by ``+``."""
    labels = [l for l in labels if l]
    if not labels:
        return None
    if len(set(labels)) == 1:
        return labels[0]
    parts = [l.split(".") for l in labels]
    k = 0
    while all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    if k:
        return ".".join(parts[0][:k]) + ".{" + ",".join(".".join(p[k:]) for p in parts) + "}"
    return "+".join(labels)


def projection_activation(graph: Graph, node: Node) -> str:
    """The activation applied to the decoder projection `node`'s product (after its bias add, if any):
    ``"relu"`` (EvNN's 2023 code) or ``"identity"`` (EvNN >= 0.2.0: the decoder reads the product itself)."""
    users = graph.users()
    out = node.outputs[0]
    nxt = users.get(out, [])
    if len(nxt) == 1 and nxt[0].op == "add":
        nxt = users.get(nxt[0].outputs[0], [])
    return "relu" if nxt and all(n.op == "relu" for n in nxt) else "identity"


def graph_projection_activation(graph: Graph) -> str | None:
    """The decoder projection's activation in `graph` (None when the graph has no decoder projection)."""
    for n in graph.nodes:
        if n.op in MATVEC_OPS and n.attrs.get("role") == "projection":
            return projection_activation(graph, n)
    return None
