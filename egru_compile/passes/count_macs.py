"""count-macs (analysis): multiply-accumulates per token of the RNN layers, static and measured.

Convention (EvNN / the EGRU paper): only the RNN layers' input and recurrent matrices count; the embedding
lookup and the decoder are reported separately. An input unit's column costs its non-zero fan-out only
when the unit is active (y != 0); a dense input (the embedding output) counts as fully active.

* ``dense``   — no weight pruned, every input active: sum over layer matrices of n_out * n_in
  (= sum over layers of (in + h) * 3h for EGRU).
* ``static``  — pruned (non-zeros only), every input active: sum of nnz.
* ``dynamic`` — pruned, with the activity measured by interpreting the IR on ``PassOptions.calib_tokens``
  (zero initial state, state carried across tokens): the exact sum over tokens of the active units'
  non-zero fan-outs divided by the number of tokens; null without calibration tokens.

Before (the IR is not changed)::

    %gh0 = event_matvec(%y0_idx, %y0_val, %y0_count, %w0_recurrent, %b) {layer=0, role=recurrent}

After: the same IR, and ``graph.meta["macs"]`` =
``{"macs_per_token": {"dense", "static", "dynamic"}, "layers": [{"layer", "input", "recurrent",
"input_static", "recurrent_static", "activity", "input_density", "recurrent_density", ...}],
"activity": [...], "density": {label: d}, "matrices": [...], "decoder_macs_per_token", "calib_tokens"}``.

Works at any stage of the pipeline (``matmul`` with constant weights, ``sparse_matvec``, ``event_matvec``);
matrices are attributed to layers structurally (see `utils.fed_layers` / `utils.matvec_role`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import Graph, Node, Value
from .manager import PassOptions, register_pass
from .utils import (MATVEC_OPS, Stepper, column_nnz, fed_layers, is_event_tensor, matvec_operands, matvec_role,
                    state_output, weight_matrix)


@dataclass
class MatrixInfo:
    node: Node
    x: Value                     # the input vector (for event_matvec: the tensor that was compressed)
    layer: int | None
    role: str                    # input / recurrent / decoder
    label: str
    shape: tuple[int, int]       # (n_out, n_in) of M
    nnz: int
    colnnz: np.ndarray           # fan-out per input unit
    event: bool                  # input is an event tensor (activity-gated)

    @property
    def dense(self) -> int:
        return int(self.shape[0] * self.shape[1])

    @property
    def density(self) -> float:
        return self.nnz / self.dense if self.dense else 0.0


def _label_of(w: Value) -> str | None:
    """Label of a weight value: its constant's label, or that of the labelled constants it is made from."""
    seen = set()
    stack = [w]
    labels = []
    while stack:
        v = stack.pop()
        if v in seen or v.producer is None:
            continue
        seen.add(v)
        p = v.producer
        if p.is_const:
            l = p.attrs.get("label")
            if l:
                labels.append(l)
            continue
        stack.extend(p.inputs)
    for l in labels:
        if l.endswith("_orig"):
            return l[: -len("_orig")]
    labels = [l for l in labels if not l.endswith("_mask")] or labels
    return labels[0] if labels else None


def collect_matrices(graph: Graph) -> list[MatrixInfo]:
    """Every matvec-like node with a constant weight, with its layer/role and fan-outs."""
    layers = fed_layers(graph)
    cache: dict = {}
    out = []
    for n in graph.nodes:
        if n.op not in MATVEC_OPS:
            continue
        m = weight_matrix(n, cache)
        if m is None:
            continue
        x, w = matvec_operands(n)
        layer = layers.get(n)
        role = matvec_role(graph, n, layer)
        label = _label_of(w) or (f"layers.{layer}.{role}" if layer is not None else role)
        cn = column_nnz(m)
        out.append(MatrixInfo(n, x, layer, role, label, tuple(int(s) for s in m.shape), int(cn.sum()), cn,
                              is_event_tensor(graph, x)))
    return out


def observed_step(stepper: Stepper, want: set, token: int):
    """One interpreter step; returns (outputs, {value: array}) for the values in `want` — graph inputs
    (the previous step's state) and any intermediate value."""
    seen = {v: a for v, a in zip(stepper.graph.inputs, stepper.inputs) if v in want}

    def observe(node, outs):
        for v, o in zip(node.outputs, outs):
            if v in want:
                seen[v] = o

    return stepper.step(int(token), observe), seen


def step_macs(mats: list[MatrixInfo], seen: dict) -> np.ndarray:
    """MACs of one step per matrix: an event input's active units' non-zero fan-out, all of a dense one's."""
    return np.array([int(m.colnnz[np.asarray(seen[m.x]).reshape(-1) != 0].sum()) if m.event else m.nnz
                     for m in mats], np.int64)


def _measure(graph: Graph, mats: list[MatrixInfo], tokens: np.ndarray):
    """(total MACs per matrix over all tokens, per layer: how many tokens each unit's y was active, per layer:
    the active mask of y after the last token)."""
    layer_ids = sorted({m.layer for m in mats if m.layer is not None} | {
        v.meta["layer"] for v in graph.outputs if v.meta.get("role") == "state_out"})
    ys = {l: state_output(graph, l, "y") for l in layer_ids}
    want = {m.x for m in mats if m.event} | {v for v in ys.values() if v is not None}
    stepper = Stepper(graph)
    totals = np.zeros(len(mats), dtype=np.int64)
    active = {l: np.zeros(v.type.shape[-1], np.int64) for l, v in ys.items() if v is not None}
    last = {}
    for tok in tokens:
        _, seen = observed_step(stepper, want, tok)
        totals += step_macs(mats, seen)
        for l, v in ys.items():
            if v is not None:
                last[l] = np.asarray(seen[v]).reshape(-1) != 0
                active[l] += last[l]
    return totals, active, last


def count_macs_for_tokens(graph: Graph, tokens=None, unit_activity: dict | None = None) -> dict:
    """The MACs report of `graph` (JSON-serialisable dict); with `tokens` (np.int64 ids) also the measured
    activity and dynamic MACs. Reusable by any target: it only interprets the IR. If `unit_activity` is a
    dict it receives ``tokens``, ``fires`` (layer -> tokens each unit's y was non-zero) and ``last`` (layer
    -> active mask after the last token) from the same run."""
    mats = collect_matrices(graph)
    rnn = [m for m in mats if m.layer is not None]
    dec = [m for m in mats if m.layer is None]
    tokens = None if tokens is None else np.asarray(tokens, np.int64).reshape(-1)
    if tokens is not None and len(tokens) == 0:
        tokens = None
    T = 0 if tokens is None else len(tokens)
    totals = active = None
    if tokens is not None:
        totals, active, last = _measure(graph, mats, tokens)
        if unit_activity is not None:    # per-unit counts for targets that place units (not in the JSON report)
            unit_activity.update(tokens=tokens, fires={l: a.copy() for l, a in active.items()}, last=last)
    sizes = {v.meta["layer"]: v.type.shape[-1] for v in graph.outputs if v.meta.get("role") == "state_out"}
    layer_ids = sorted(set(sizes) | {m.layer for m in rnn})
    layers = []
    for l in layer_ids:
        row: dict = {"layer": l, "hidden_size": sizes.get(l)}
        for role in ("input", "recurrent"):
            ms = [(k, m) for k, m in enumerate(mats) if m.layer == l and m.role == role]
            dense = sum(m.dense for _, m in ms)
            static = sum(m.nnz for _, m in ms)
            row[f"{role}_dense"] = dense
            row[f"{role}_static"] = static
            row[f"{role}_density"] = static / dense if dense else None
            row[role] = float(sum(int(totals[k]) for k, _ in ms)) / T if T else None
        row["activity"] = (int(active[l].sum()) / (T * sizes[l])) if T and sizes.get(l) else None
        layers.append(row)
    # keep the documented key order
    layers = [{"layer": r["layer"], "input": r["input"], "recurrent": r["recurrent"],
               "input_static": r["input_static"], "recurrent_static": r["recurrent_static"],
               "activity": r["activity"], "input_density": r["input_density"],
               "recurrent_density": r["recurrent_density"], "input_dense": r["input_dense"],
               "recurrent_dense": r["recurrent_dense"], "hidden_size": r["hidden_size"]} for r in layers]
    density: dict[str, float] = {}
    for m in rnn:
        key = m.label if m.label not in density else f"{m.label}#{m.layer}.{m.role}"
        density[key] = m.density
    matrices = []
    for k, m in enumerate(mats):
        matrices.append({"label": m.label, "layer": m.layer, "role": m.role, "shape": list(m.shape),
                         "op": m.node.op, "nnz": m.nnz, "density": m.density, "event_input": m.event,
                         "static": m.nnz if m.layer is not None else None,
                         "dynamic": (int(totals[k]) / T) if T and m.layer is not None else None})
    decoder = 0
    for m in dec:
        decoder += m.dense if m.node.op in ("linear", "matmul") else m.nnz
    dyn = float(sum(int(totals[k]) for k, m in enumerate(mats) if m.layer is not None)) / T if T else None
    return {
        "macs_per_token": {"dense": sum(m.dense for m in rnn), "static": sum(m.nnz for m in rnn),
                           "dynamic": dyn},
        "layers": layers,
        "activity": [r["activity"] for r in layers],
        "density": density,
        "matrices": matrices,
        "decoder_macs_per_token": decoder,
        "calib_tokens": T,
    }


def macs_report(graph: Graph, calib_tokens=None) -> dict:
    """The report `count-macs` stored in ``graph.meta["macs"]`` (computed now — static only unless
    `calib_tokens` are given — when the pass has not run or `calib_tokens` are passed)."""
    if calib_tokens is None and "macs" in graph.meta:
        return graph.meta["macs"]
    return count_macs_for_tokens(graph, calib_tokens)


@register_pass("count-macs", kind="analysis")
def run(graph: Graph, options: PassOptions) -> dict:
    unit_activity: dict = {}
    rep = count_macs_for_tokens(graph, options.calib_tokens, unit_activity)
    graph.meta["macs"] = rep
    if unit_activity:
        graph.meta["unit_activity"] = unit_activity
    mp = rep["macs_per_token"]
    st = {"dense": mp["dense"], "static": mp["static"]}
    if mp["dynamic"] is not None:
        st["dynamic"] = round(mp["dynamic"], 1)
    return st
