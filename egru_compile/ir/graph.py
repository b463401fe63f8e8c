"""The graph IR: a straight-line SSA program of typed values, in the spirit of torch.fx.

* A `Value` is a typed SSA name (`%name : tensor<...>`), defined exactly once: by a graph input or by a node.
* A `Node` applies one op (see `ops.py`) to input values, with attributes, defining one or more values.
* Constants are nodes of op ``const`` whose attribute ``data`` holds a numpy array or a `SparseMatrix`.
* Recurrent state is explicit: graph inputs and outputs carry ``role`` = ``state_in``/``state_out`` with
  ``layer`` and ``kind`` (``c`` or ``y``) in their meta.
* ``graph.nodes`` is kept in topological order; the verifier checks it.
* Pass results live beside the program: ``graph.analyses`` (typed analysis results, `analyses.py`) and
  ``graph.properties`` (names of the properties established by the passes run so far).
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .analyses import AnalysisStore
from .types import TensorType


@dataclass(eq=False)
class Value:
    name: str
    type: TensorType
    producer: "Node | None" = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"%{self.name}"


@dataclass(eq=False)
class Node:
    op: str
    inputs: list[Value]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)   # "loc": where it came from (module path / source line)

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} outputs")
        return self.outputs[0]

    @property
    def is_const(self) -> bool:
        return self.op == "const"

    def __repr__(self) -> str:
        return f"Node({self.op}: {self.inputs} -> {self.outputs})"


class Graph:
    """One step function: ``inputs`` (tokens + per-layer states) -> ``outputs`` (logits + next states)."""

    def __init__(self, name: str = "step"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.meta: dict[str, Any] = {}                  # free-form provenance ("passes": names run so far)
        #: typed analysis results (`ir.analyses`), e.g. ``graph.analyses.get(MacReport)``
        self.analyses = AnalysisStore()
        #: pipeline properties the passes run so far established (`passes.manager.PROPERTIES`)
        self.properties: set[str] = set()
        self._names: set[str] = set()
        self._counter = itertools.count()

    # ----------------------------------------------------------------- construction
    def fresh_name(self, hint: str = "v") -> str:
        hint = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in hint) or "v"
        name = hint
        while name in self._names:
            name = f"{hint}_{next(self._counter)}"
        self._names.add(name)
        return name

    def has_name(self, name: str) -> bool:
        """Whether `name` was ever given out (fresh_name never reuses one)."""
        return name in self._names

    def rename(self, value: Value, name: str) -> bool:
        """Give `value` the name `name` if no other live value uses it (names of removed values can be
        reused). Returns whether it was renamed."""
        live = {v.name for v in self.inputs} | {v.name for n in self.nodes for v in n.outputs if v is not value}
        if name in live:
            return False
        value.name = name
        self._names.add(name)
        return True

    def add_input(self, name: str, type: TensorType, **meta) -> Value:
        v = Value(self.fresh_name(name), type, None, dict(meta))
        self.inputs.append(v)
        return v

    def create_node(self, op: str, inputs: Iterable[Value], out_types: list[TensorType], attrs=None,
                    names: list[str] | None = None, meta=None, index: int | None = None) -> Node:
        names = names or [op] * len(out_types)
        node = Node(op, list(inputs), [], dict(attrs or {}), dict(meta or {}))
        node.outputs = [Value(self.fresh_name(n), t, node) for n, t in zip(names, out_types)]
        if index is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(index, node)
        return node

    def op(self, op: str, *inputs: Value, name: str | None = None, index: int | None = None, meta=None,
           **attrs) -> Value:
        """Add a single-output op, inferring its type from the op definition."""
        from .ops import infer_types
        types = infer_types(op, [v.type for v in inputs], attrs)
        return self.create_node(op, inputs, types, attrs, [name or op] * len(types), meta, index).outputs[0]

    def multi_op(self, op: str, *inputs: Value, names: list[str] | None = None, index: int | None = None,
                 meta=None, **attrs) -> list[Value]:
        from .ops import infer_types
        types = infer_types(op, [v.type for v in inputs], attrs)
        return self.create_node(op, inputs, types, attrs, names or [op] * len(types), meta, index).outputs

    def const(self, data, name: str = "const", index: int | None = None, **attrs) -> Value:
        from .sparse import SparseMatrix
        if isinstance(data, SparseMatrix):
            t = TensorType(data.shape, data.dtype)
        else:
            data = np.asarray(data)
            t = TensorType.of(data)
        return self.create_node("const", [], [t], {"data": data, **attrs}, [name], index=index).outputs[0]

    # ----------------------------------------------------------------- queries
    def users(self) -> dict[Value, list[Node]]:
        uses: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                uses.setdefault(v, []).append(n)
        return uses

    def const_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.is_const]

    def state_inputs(self) -> list[Value]:
        return [v for v in self.inputs if v.meta.get("role") == "state_in"]

    def num_layers(self) -> int:
        return len({v.meta["layer"] for v in self.state_inputs()})

    def layer_sizes(self) -> list[int]:
        sizes = {}
        for v in self.state_inputs():
            sizes[v.meta["layer"]] = v.type.shape[-1]
        return [sizes[i] for i in sorted(sizes)]

    # ----------------------------------------------------------------- rewriting
    def replace_all_uses(self, old: Value, new: Value) -> None:
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]
        if old.meta and not new.meta:
            new.meta = dict(old.meta)

    def remove_node(self, node: Node) -> None:
        self.nodes.remove(node)

    def index_of(self, node: Node) -> int:
        for i, n in enumerate(self.nodes):
            if n is node:
                return i
        raise ValueError("node not in graph")

    def clone(self) -> "Graph":
        """Deep copy of structure; constant arrays are shared (passes must not mutate them in place)."""
        memo = {}
        for n in self.nodes:
            if n.is_const:
                memo[id(n.attrs["data"])] = n.attrs["data"]
        return copy.deepcopy(self, memo)

    # ----------------------------------------------------------------- views
    def to_networkx(self):
        """Directed graph of nodes (node objects as keys) with value edges, for analyses."""
        import networkx as nx
        g = nx.MultiDiGraph()
        for i, n in enumerate(self.nodes):
            g.add_node(n, op=n.op, index=i)
        for n in self.nodes:
            for v in n.inputs:
                if v.producer is not None:
                    g.add_edge(v.producer, n, value=v.name)
        return g

    def __str__(self) -> str:
        from .printer import print_graph
        return print_graph(self)
