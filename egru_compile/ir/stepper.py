"""Stepping a step graph token by token with the reference interpreter, state matched by role.

* `Stepper` — streams tokens through a graph, carrying each ``state_out`` to the ``state_in`` of the same
  (layer, kind) — not by position — from a zero (or given) initial state.
* `observed_step` — one step that also returns the values of chosen graph inputs / intermediate values
  (what analyses such as count-macs and the IR runner measure activity on).

Used by the passes (count-macs), the runtime's `GraphRunner` and the pass tests; it depends on the IR only.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph
from .interpreter import run_graph


class Stepper:
    """Streams tokens through a step graph carrying state matched by (layer, kind) — not by position."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.tokens_in = next((v for v in graph.inputs if v.meta.get("role") == "tokens"), graph.inputs[0])
        self.logits_out = next((v for v in graph.outputs if v.meta.get("role") == "logits"), graph.outputs[0])
        self.pairs = []   # (input index, output index)
        for i, v in enumerate(graph.inputs):
            if v.meta.get("role") == "state_in":
                j = next(j for j, o in enumerate(graph.outputs) if o.meta.get("role") == "state_out"
                         and (o.meta["layer"], o.meta["kind"]) == (v.meta["layer"], v.meta["kind"]))
                self.pairs.append((i, j))
        self.reset()

    def reset(self, state: dict[int, np.ndarray] | None = None) -> None:
        """Zero state, or `state` {graph input index: array} for the inputs it names."""
        self.inputs = [np.zeros(v.type.shape, v.type.np_dtype) for v in self.graph.inputs]
        if state:
            for i, a in state.items():
                self.inputs[i] = np.asarray(a, self.graph.inputs[i].type.np_dtype)

    def step(self, token: int, observe=None) -> list[np.ndarray]:
        """All graph outputs after `token`; the state outputs become the next step's state inputs."""
        ti = self.graph.inputs.index(self.tokens_in)
        self.inputs[ti] = np.array([token], dtype=self.tokens_in.type.np_dtype)
        outs = run_graph(self.graph, self.inputs, observe)
        for i, j in self.pairs:
            self.inputs[i] = outs[j]
        return outs

    def logits(self, outs: list[np.ndarray]) -> np.ndarray:
        return outs[self.graph.outputs.index(self.logits_out)]


def observed_step(stepper: Stepper, want: set, token: int):
    """One interpreter step; returns (outputs, {value: array}) for the values in `want` — graph inputs
    (the previous step's state) and any intermediate value."""
    seen = {v: a for v, a in zip(stepper.graph.inputs, stepper.inputs) if v in want}

    def observe(node, outs):
        for v, o in zip(node.outputs, outs):
            if v in want:
                seen[v] = o

    return stepper.step(int(token), observe), seen
