"""Deterministic MLIR-like text form of a graph.

    graph @step(%tokens: tensor<1xi64>, %c0: tensor<1x32xf32> {state_in l0 c}, ...) {
      %w = const @rnns.0.kernel : tensor<16x96xf32>
      %mm = matmul(%x, %w) : tensor<1x96xf32>                       loc(rnns.0)
      ...
      return %logits, %c0_next, ...
    }

Constants print their name and a summary (never their data), so golden tests stay small and stable.
"""
from __future__ import annotations

import numpy as np

from .sparse import SparseMatrix


def _fmt_attr(v) -> str:
    if isinstance(v, float):
        return repr(float(np.float32(v)))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt_attr(x) for x in v) + "]"
    if isinstance(v, str):
        return v
    return repr(v)


def _const_summary(node) -> str:
    data = node.attrs["data"]
    label = node.attrs.get("label")
    head = f"@{label}" if label else ""
    if isinstance(data, SparseMatrix):
        return f"{head} {data.describe()}".strip()
    arr = np.asarray(data)
    if arr.size <= 4:
        vals = ", ".join(_fmt_attr(x) for x in arr.reshape(-1).tolist())
        return f"{head} dense<[{vals}]>".strip()
    return head or "dense<...>"


def format_node(node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    types = ", ".join(str(v.type) for v in node.outputs)
    if node.is_const:
        body = f"const {_const_summary(node)}"
    else:
        args = ", ".join(f"%{v.name}" for v in node.inputs)
        attrs = {k: v for k, v in node.attrs.items()}
        attr_s = (" {" + ", ".join(f"{k}={_fmt_attr(attrs[k])}" for k in sorted(attrs)) + "}") if attrs else ""
        body = f"{node.op}({args}){attr_s}"
    line = f"{outs} = {body} : {types}"
    loc = node.meta.get("loc")
    if loc:
        line = f"{line}  loc({loc})"
    return line


def _fmt_value_decl(v) -> str:
    s = f"%{v.name}: {v.type}"
    if v.meta.get("role") in ("state_in", "state_out"):
        s += f" {{{v.meta['role']} l{v.meta['layer']} {v.meta['kind']}}}"
    return s


def print_graph(graph) -> str:
    lines = [f"graph @{graph.name}(" + ", ".join(_fmt_value_decl(v) for v in graph.inputs) + ") {"]
    for n in graph.nodes:
        lines.append("  " + format_node(n))
    lines.append("  return " + ", ".join(_fmt_value_decl(v) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
