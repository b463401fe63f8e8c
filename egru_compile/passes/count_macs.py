"""count-macs (analysis): multiply-accumulates per token of the RNN layers, static and measured.

Convention (EvNN / the EGRU paper): only the RNN layers' input and recurrent matrices count; the embedding
lookup and the decoder — with EvNN's projection ``a(P · y_last + p)`` — are reported separately. An
input unit's column costs its non-zero fan-out only
when the unit is active (y != 0); a dense input (the embedding output) counts as fully active.

* ``dense``   — no weight pruned, every input active: sum over layer matrices of n_out * n_in
  (= sum over layers of (in + h) * 3h for EGRU).
* ``static``  — pruned (non-zeros only), every input active: sum of nnz.
* ``dynamic`` — pruned, with the activity measured by interpreting the IR on ``PassOptions.calib_tokens``
  (zero initial state, state carried across tokens): the exact sum over tokens of the active units'
  non-zero fan-outs divided by the number of tokens; null without calibration tokens.

Before (the IR is not changed)::

    %gh0 = event_matvec(%y0_idx, %y0_val, %y0_count, %w0_recurrent, %b) {layer=0, role=recurrent}

After: the same IR, and ``graph.analyses.get(MacReport)`` (property ``macs``), whose ``to_json()`` is
``{"macs_per_token": {"dense", "static", "dynamic"}, "layers": [{"layer", "input", "recurrent",
"input_static", "recurrent_static", "activity", "input_density", "recurrent_density", ...}],
"activity": [...], "density": {label: d}, "matrices": [...], "decoder_macs_per_token", "calib_tokens"}``
(``decoder_macs_per_token``: the decoder's and projection's non-zeros), plus, for a model with a decoder
projection, ``"projection": {"label", "shape", "nnz", "static", "dynamic", "activation"}`` (its input is the last
layer's events, so its dynamic MACs are the active units' non-zero fan-out, like a layer matrix's);
with calibration tokens also ``graph.analyses.get(UnitActivity)`` (per-unit firing counts, not in JSON).

Works at any stage of the pipeline (``matmul`` with constant weights, ``sparse_matvec``, ``event_matvec``);
matrices are attributed to layers structurally (see `utils.fed_layers` / `utils.matvec_role`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir import Analysis, Graph, Node, Stepper, Value, observed_step
from .manager import PassOptions, register_pass, register_property
from .utils import (MATVEC_OPS, column_nnz, fed_layers, is_event_tensor, matvec_operands, matvec_role,
                    projection_activation, state_output, weight_matrix)

MACS = register_property("macs", "analysis: MacReport (+ UnitActivity with calibration tokens) in graph.analyses")


@dataclass
class MacsPerToken:
    dense: int                   # every weight, every input active
    static: int                  # non-zeros, every input active
    dynamic: float | None        # non-zeros of the active inputs, measured (None without calibration tokens)


@dataclass
class LayerMacs:
    layer: int
    input: float | None          # measured MACs per token of the layer's input / recurrent matrices
    recurrent: float | None
    input_static: int
    recurrent_static: int
    activity: float | None       # mean fraction of units with y != 0
    input_density: float | None
    recurrent_density: float | None
    input_dense: int
    recurrent_dense: int
    hidden_size: int | None


@dataclass
class MatrixMacs:
    label: str
    layer: int | None
    role: str                    # input / recurrent / projection / decoder
    shape: list[int]             # [n_out, n_in]
    op: str
    nnz: int
    density: float
    event_input: bool
    static: int | None           # RNN matrices and the projection only
    dynamic: float | None


@dataclass
class ProjectionMacs:
    """The decoder projection's MACs per token (not part of the RNN-layer totals)."""
    label: str
    shape: list[int]             # [emb, h_last]
    nnz: int
    static: int                  # every last-layer unit active
    dynamic: float | None        # active units' non-zero fan-out, measured
    activation: str = "identity"  # "identity" (EvNN >= 0.2.0) or "relu" (EvNN's 2023 code)


@dataclass
class MacReport(Analysis):
    """count-macs' result (property ``macs``); ``to_json()`` is the ``--report`` file."""
    property = MACS
    macs_per_token: MacsPerToken
    layers: list[LayerMacs]
    activity: list[float | None]
    density: dict[str, float]
    matrices: list[MatrixMacs]
    decoder_macs_per_token: int
    calib_tokens: int
    projection: ProjectionMacs | None = None

    def to_json(self) -> dict:
        d = super().to_json()
        if d["projection"] is None:       # models without a projection keep the documented keys
            del d["projection"]
        return d


@dataclass
class UnitActivity(Analysis):
    """Per-unit counts from count-macs' calibration run, for targets that place units: ``fires[l]`` = on
    how many tokens each unit of layer l had y != 0, ``last[l]`` = its active mask after the last token."""
    property = MACS
    tokens: np.ndarray
    fires: dict[int, np.ndarray] = field(default_factory=dict)
    last: dict[int, np.ndarray] = field(default_factory=dict)

    def measured_on(self, tokens) -> bool:
        return np.array_equal(self.tokens, np.asarray(tokens, np.int64).reshape(-1))

    def to_json(self) -> dict:
        return {"tokens": int(len(self.tokens)), "fires": {l: f.tolist() for l, f in self.fires.items()}}


@dataclass
class MatrixInfo:
    node: Node
    x: Value                     # the input vector (for event_matvec: the tensor that was compressed)
    layer: int | None
    role: str                    # input / recurrent / projection / decoder
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


def step_macs(mats: list[MatrixInfo], seen: dict) -> np.ndarray:
    """MACs of one step per matrix: an event input's active units' non-zero fan-out, all of a dense one's."""
    return np.array([int(m.colnnz[np.asarray(seen[m.x]).reshape(-1) != 0].sum()) if m.event else m.nnz
                     for m in mats], np.int64)


class ActivityCounter:
    """Accumulates, step by step, the total MACs per matrix, how many tokens each unit's y was active and
    the active mask of y after the last step (per layer)."""

    def __init__(self, graph: Graph, mats: list[MatrixInfo]):
        layer_ids = sorted({m.layer for m in mats if m.layer is not None} | {
            v.meta["layer"] for v in graph.outputs if v.meta.get("role") == "state_out"})
        ys = {l: state_output(graph, l, "y") for l in layer_ids}
        self.mats = mats
        self.ys = {l: v for l, v in ys.items() if v is not None}
        self.want = {m.x for m in mats if m.event} | set(self.ys.values())
        self.totals = np.zeros(len(mats), dtype=np.int64)
        self.active = {l: np.zeros(v.type.shape[-1], np.int64) for l, v in self.ys.items()}
        self.last: dict[int, np.ndarray] = {}

    def add(self, seen: dict) -> None:
        self.totals += step_macs(self.mats, seen)
        for l, v in self.ys.items():
            self.last[l] = np.asarray(seen[v]).reshape(-1) != 0
            self.active[l] += self.last[l]


def _measure(graph: Graph, mats: list[MatrixInfo], tokens: np.ndarray):
    """(total MACs per matrix over all tokens, per layer: how many tokens each unit's y was active, per layer:
    the active mask of y after the last token)."""
    counter = ActivityCounter(graph, mats)
    stepper = Stepper(graph)
    for tok in tokens:
        counter.add(observed_step(stepper, counter.want, tok)[1])
    return counter.totals, counter.active, counter.last


def graph_signature(graph: Graph) -> tuple[tuple, list]:
    """(key, refs): `key` identifies the graph's exact content — every node's op, operands, results and
    attribute objects (constants' data by identity) and the graph's inputs and outputs, in order; `refs`
    keeps those objects alive so that no id in `key` can be reused while it is held."""
    refs: list = [graph.inputs, graph.outputs]
    key = [tuple(map(id, graph.inputs)), tuple(map(id, graph.outputs))]
    for n in graph.nodes:
        refs.append(n)
        refs.extend(n.attrs.values())
        key.append((id(n), n.op, tuple(map(id, n.inputs)), tuple(map(id, n.outputs)),
                    tuple((k, id(v)) for k, v in n.attrs.items())))
    return tuple(key), refs


@dataclass(eq=False)
class ObservedActivity(Analysis):
    """What interpreting `graph` on `tokens` (zero initial state, state carried) showed, recorded by a pass
    that ran the interpreter anyway (quantize-int8's perplexity run): total MACs per matrix node, per-layer
    firing counts and last active masks. count-macs uses it instead of interpreting again only when
    `valid_for` the graph and tokens it is asked about (the graph's signature and the tokens are equal)."""
    property = MACS
    persistent = True        # validity is checked against the graph signature, not by invalidation
    tokens: np.ndarray
    key: tuple
    refs: list
    totals: dict             # matrix node -> total MACs over the tokens
    active: dict[int, np.ndarray]
    last: dict[int, np.ndarray]

    def valid_for(self, graph: Graph, tokens: np.ndarray) -> bool:
        return np.array_equal(self.tokens, tokens) and graph_signature(graph)[0] == self.key

    def to_json(self) -> dict:
        return {"tokens": int(len(self.tokens))}


def observed_activity(graph: Graph, tokens, runs) -> ObservedActivity | None:
    """The `ObservedActivity` of `graph` on `tokens` from `runs` (`ir.interpreter.trace_runs` records of a
    run that stepped ``tokens[:-1]`` from a zero state, as `runtime.evaluate` does), stepping the last token
    here; None when the records are not exactly that chain (other tokens, a non-zero start, a state not
    carried, a value not recorded)."""
    tokens = np.asarray(tokens, np.int64).reshape(-1)
    if len(tokens) < 1 or len(runs) != len(tokens) - 1:
        return None
    mats = collect_matrices(graph)
    counter = ActivityCounter(graph, mats)
    stepper = Stepper(graph)
    ti = graph.inputs.index(stepper.tokens_in)
    prev = None
    for t, r in enumerate(runs):
        if int(np.asarray(r.inputs[ti]).reshape(-1)[0]) != int(tokens[t]) or not counter.want <= set(r.seen) | {
                v for v in graph.inputs}:
            return None
        for i, j in stepper.pairs:
            x = r.inputs[i]
            ok = (not np.any(x)) if prev is None else (x is prev.outputs[j] or np.array_equal(x, prev.outputs[j]))
            if not ok:
                return None
        seen = {v: a for v, a in zip(graph.inputs, r.inputs) if v in counter.want} | r.seen
        counter.add(seen)
        prev = r
    if prev is not None:
        stepper.reset({i: prev.outputs[j] for i, j in stepper.pairs})
    counter.add(observed_step(stepper, counter.want, tokens[-1])[1])
    key, refs = graph_signature(graph)
    return ObservedActivity(tokens, key, refs, {m.node: int(counter.totals[k]) for k, m in enumerate(mats)},
                            counter.active, counter.last)


def measure_macs(graph: Graph, tokens=None) -> tuple[MacReport, UnitActivity | None]:
    """The MACs report of `graph`; with `tokens` (np.int64 ids) also the measured activity and dynamic MACs,
    and the per-unit counts of the same run. Reusable by any target: it only interprets the IR — or takes
    the `ObservedActivity` on the graph when it is valid for exactly this graph and these tokens."""
    mats = collect_matrices(graph)
    rnn = [m for m in mats if m.layer is not None]
    dec = [m for m in mats if m.layer is None]
    tokens = None if tokens is None else np.asarray(tokens, np.int64).reshape(-1)
    if tokens is not None and len(tokens) == 0:
        tokens = None
    T = 0 if tokens is None else len(tokens)
    totals = active = None
    units = None
    if tokens is not None:
        obs = graph.analyses.get(ObservedActivity)
        if obs is not None and obs.valid_for(graph, tokens):
            totals = np.array([obs.totals[m.node] for m in mats], np.int64)
            active, last = obs.active, obs.last
        else:
            totals, active, last = _measure(graph, mats, tokens)
        units = UnitActivity(tokens, {l: a.copy() for l, a in active.items()}, last)
    sizes = {v.meta["layer"]: v.type.shape[-1] for v in graph.outputs if v.meta.get("role") == "state_out"}
    layer_ids = sorted(set(sizes) | {m.layer for m in rnn})
    layers = []
    for l in layer_ids:
        row: dict = {}
        for role in ("input", "recurrent"):
            ms = [(k, m) for k, m in enumerate(mats) if m.layer == l and m.role == role]
            dense = sum(m.dense for _, m in ms)
            static = sum(m.nnz for _, m in ms)
            row[f"{role}_dense"] = dense
            row[f"{role}_static"] = static
            row[f"{role}_density"] = static / dense if dense else None
            row[role] = float(sum(int(totals[k]) for k, _ in ms)) / T if T else None
        row["activity"] = (int(active[l].sum()) / (T * sizes[l])) if T and sizes.get(l) else None
        layers.append(LayerMacs(layer=l, hidden_size=sizes.get(l), **row))
    density: dict[str, float] = {}
    for m in rnn:
        key = m.label if m.label not in density else f"{m.label}#{m.layer}.{m.role}"
        density[key] = m.density
    counted = [m.layer is not None or m.role == "projection" for m in mats]
    matrices = [MatrixMacs(m.label, m.layer, m.role, list(m.shape), m.node.op, m.nnz, m.density, m.event,
                           m.nnz if counted[k] else None, (int(totals[k]) / T) if T and counted[k] else None)
                for k, m in enumerate(mats)]
    proj = [k for k, m in enumerate(mats) if m.role == "projection"]
    projection = None
    if proj:
        projection = ProjectionMacs(
            "+".join(mats[k].label for k in proj), list(mats[proj[0]].shape), sum(mats[k].nnz for k in proj),
            sum(mats[k].nnz for k in proj), float(sum(int(totals[k]) for k in proj)) / T if T else None,
            projection_activation(graph, mats[proj[0]].node))
    decoder = 0
    for m in dec:
        decoder += m.dense if m.node.op in ("linear", "matmul") else m.nnz
    dyn = float(sum(int(totals[k]) for k, m in enumerate(mats) if m.layer is not None)) / T if T else None
    report = MacReport(MacsPerToken(sum(m.dense for m in rnn), sum(m.nnz for m in rnn), dyn), layers,
                       [r.activity for r in layers], density, matrices, decoder, T, projection)
    return report, units


def count_macs_for_tokens(graph: Graph, tokens=None) -> dict:
    """JSON form of `measure_macs` (the ``--report`` file's content)."""
    return measure_macs(graph, tokens)[0].to_json()


def macs_report(graph: Graph, calib_tokens=None) -> dict:
    """JSON form of the MacReport `count-macs` stored on `graph` (computed now — static only unless
    `calib_tokens` are given — when the pass has not run or `calib_tokens` are passed)."""
    stored = graph.analyses.get(MacReport)
    if calib_tokens is None and stored is not None:
        return stored.to_json()
    return count_macs_for_tokens(graph, calib_tokens)


@register_pass("count-macs", kind="analysis", establishes={MACS})
def run(graph: Graph, options: PassOptions) -> dict:
    rep, units = measure_macs(graph, options.calib_tokens)
    graph.analyses.discard(ObservedActivity)      # used (or stale): its content is in rep / units now
    graph.analyses.put(rep)
    if units is not None:
        graph.analyses.put(units)
    else:
        graph.analyses.discard(UnitActivity)
    mp = rep.macs_per_token
    st = {"dense": mp.dense, "static": mp.static}
    if mp.dynamic is not None:
        st["dynamic"] = round(mp.dynamic, 1)
    return st
