"""Reference interpreter: runs a graph with numpy using the op semantics of `ops.py`."""
from __future__ import annotations

from typing import Callable

import numpy as np

from .graph import Graph, Node
from .ops import OPS


def run_graph(graph: Graph, inputs: list, observe: Callable[[Node, list], None] | None = None) -> list:
    """Evaluate `graph` on `inputs` (one array per graph input); returns one array per graph output.
    `observe(node, outputs)` is called after each node (used by analyses that measure activity)."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env = {}
    for v, x in zip(graph.inputs, inputs):
        env[v] = np.asarray(x, dtype=v.type.np_dtype)
    for n in graph.nodes:
        args = [env[v] for v in n.inputs]
        outs = OPS[n.op].compute(n.attrs, *args)
        for v, o in zip(n.outputs, outs):
            env[v] = o
        if observe is not None:
            observe(n, outs)
    return [env[v] for v in graph.outputs]


class Interpreter:
    """Streams tokens through a step graph, carrying the recurrent state between calls."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.reset()

    def reset(self) -> None:
        self.state = [np.zeros(v.type.shape, v.type.np_dtype) for v in self.graph.inputs[1:]]

    def step(self, token: int, observe=None) -> np.ndarray:
        tok = np.array([token], dtype=self.graph.inputs[0].type.np_dtype)
        outs = run_graph(self.graph, [tok] + self.state, observe)
        self.state = outs[1:]
        return outs[0]
