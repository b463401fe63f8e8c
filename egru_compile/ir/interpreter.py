"""Reference interpreter: runs a graph with numpy using the op semantics of `ops.py`.

`trace_runs(graph, want)` records every `run_graph` call on that graph object made inside the block — its
inputs, the values in `want` and its outputs — so a pass that has the interpreter run a graph through some
other caller (quantize-int8's injected perplexity function) can reuse what that run observed.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .graph import Graph, Node, Value
from .ops import OPS


@dataclass
class TracedRun:
    """One recorded `run_graph` call: its inputs (as given), the `want` values it computed, its outputs."""
    inputs: list
    seen: dict
    outputs: list


_TRACES: dict[int, list[tuple[set, list[TracedRun]]]] = {}


@contextmanager
def trace_runs(graph: Graph, want: set[Value]) -> Iterator[list[TracedRun]]:
    """Within the block, every `run_graph(graph, ...)` appends a `TracedRun` to the yielded list."""
    runs: list[TracedRun] = []
    entry = (set(want), runs)
    _TRACES.setdefault(id(graph), []).append(entry)
    try:
        yield runs
    finally:
        lst = _TRACES.get(id(graph), [])
        if entry in lst:
            lst.remove(entry)
        if not lst:
            _TRACES.pop(id(graph), None)


def run_graph(graph: Graph, inputs: list, observe: Callable[[Node, list], None] | None = None) -> list:
    """Evaluate `graph` on `inputs` (one array per graph input); returns one array per graph output.
    `observe(node, outputs)` is called after each node (used by analyses that measure activity)."""
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    traces = _TRACES.get(id(graph))
    if traces:
        want = set().union(*(w for w, _ in traces))
        seen = {v: x for v, x in zip(graph.inputs, inputs) if v in want}
        inner = observe

        def observe(node, outs):
            for v, o in zip(node.outputs, outs):
                if v in want:
                    seen[v] = o
            if inner is not None:
                inner(node, outs)
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
    result = [env[v] for v in graph.outputs]
    if traces:
        for w, runs in traces:
            runs.append(TracedRun(list(inputs), {v: a for v, a in seen.items() if v in w}, result))
    return result


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
