"""The EGRU stack as the targets see it: per-layer sparse weights recovered from the optimised IR.

`extract_stack` reads a graph after the default pipeline (embedding -> per layer
``sparse_matvec``/``event_matvec`` (with bias) feeding ``egru_cell`` -> [EvNN's projection
``event_matvec(y_last, P, p) {role=projection}``, followed by ``relu`` in EvNN's 2023 code] -> ``linear``
decoder) and returns the
weights in one place, so the TVM and chip targets share one reading of the IR instead of each
pattern-matching it again.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EgruError
from ..ir import Graph, SparseMatrix


class StackError(EgruError):
    pass


@dataclass
class LayerWeights:
    index: int
    n_in: int
    hidden: int
    W: SparseMatrix          # [3h, n_in] input matrix (math convention), possibly int8 + scale
    b: np.ndarray            # [3h]
    R: SparseMatrix          # [3h, h] recurrent matrix
    br: np.ndarray           # [3h]
    thr: np.ndarray          # [h], already clamped to [0, 1]
    events_in: bool          # True when the input is an event tensor (layers > 0)


@dataclass
class EGRUStack:
    embedding: np.ndarray    # [V, E]
    layers: list[LayerWeights]
    decoder_weight: np.ndarray   # [V, E_last]  (E_last = E with a projection, else h_last)
    decoder_bias: np.ndarray     # [V]
    projection: SparseMatrix | None = None        # P [E, h_last] of a(P · y_last + p), possibly int8
    projection_bias: np.ndarray | None = None     # p [E]
    projection_activation: str | None = None      # a: "identity" (EvNN >= 0.2.0) or "relu" (2023); None: none

    @property
    def vocab_size(self) -> int:
        return int(self.decoder_weight.shape[0])

    @property
    def hidden_sizes(self) -> list[int]:
        return [l.hidden for l in self.layers]


def _const(v, what: str):
    p = v.producer
    if p is None or not p.is_const:
        raise StackError(f"expected a constant {what}, found %{v.name}")
    return p.attrs["data"]


def _matvec(v, what: str):
    """(matrix, bias, events_in, input value) of the matvec producing `v`."""
    p = v.producer
    bias = None
    if p is not None and p.op == "add":
        a, b = p.inputs
        if b.producer is not None and b.producer.is_const:
            bias = np.asarray(_const(b, "bias"), np.float32).reshape(-1)
            p = a.producer
        elif a.producer is not None and a.producer.is_const:
            bias = np.asarray(_const(a, "bias"), np.float32).reshape(-1)
            p = b.producer
    if p is None or p.op not in ("sparse_matvec", "event_matvec"):
        raise StackError(f"{what} is not a sparse matvec (run the default pass pipeline)")
    if p.op == "sparse_matvec":
        m, src, events = _const(p.inputs[1], "matrix"), p.inputs[0], False
        extra = p.inputs[2:]
    else:
        m, events = _const(p.inputs[3], "matrix"), True
        comp = p.inputs[0].producer
        src = comp.inputs[0] if comp is not None and comp.op == "compress_events" else None
        extra = p.inputs[4:]
    if extra:
        b2 = np.asarray(_const(extra[0], "bias"), np.float32).reshape(-1)
        bias = b2 if bias is None else bias + b2
    if bias is None:
        bias = np.zeros(m.shape[0], np.float32)
    return m, bias, events, src


def extract_stack(graph: Graph) -> EGRUStack:
    cells = [n for n in graph.nodes if n.op == "egru_cell"]
    if not cells:
        raise StackError("no egru_cell in the IR: this target needs the default pass pipeline")
    layers = []
    for n in cells:
        gx, gh, c, thr = n.inputs
        if c.meta.get("role") != "state_in" or c.meta.get("kind") != "c":
            raise StackError("egru_cell's state input is not a layer's c state")
        l = c.meta["layer"]
        W, b, ev_in, _ = _matvec(gx, f"layer {l} input")
        R, br, _, _ = _matvec(gh, f"layer {l} recurrent")
        h = c.type.shape[-1]
        layers.append(LayerWeights(l, W.shape[1], h, W, b, R, br,
                                   np.asarray(_const(thr, "threshold"), np.float32).reshape(-1), ev_in))
    layers.sort(key=lambda x: x.index)
    emb = [n for n in graph.nodes if n.op == "embedding"]
    dec = [n for n in graph.nodes if n.op == "linear"]
    if len(emb) != 1 or len(dec) != 1:
        raise StackError("expected one embedding and one linear decoder in the IR")
    table = np.asarray(_const(emb[0].inputs[0], "embedding table"), np.float32)
    P = pb = None
    x = dec[0].inputs[0]
    act = None
    if x.producer is not None and x.producer.op == "relu":        # EvNN's projection decoder, 2023 code
        act, x = "relu", x.producer.inputs[0]
    elif _is_projection(x):                                        # EvNN >= 0.2.0: linear projection
        act = "identity"
    if act is not None:
        P, pb, _, src = _matvec(x, "decoder projection")
        last = layers[-1].index
        if not (src is not None and src.meta.get("role") == "state_out" and src.meta.get("layer") == last
                or src is not None and src.producer is not None and src.producer.op == "egru_cell"):
            raise StackError("the decoder projection does not read the last layer's events")
        if not isinstance(P, SparseMatrix):
            raise StackError("the decoder projection is not a sparse matrix (run the default pass pipeline)")
    dw = np.asarray(_const(dec[0].inputs[1], "decoder weight"), np.float32)
    db = (np.asarray(_const(dec[0].inputs[2], "decoder bias"), np.float32) if len(dec[0].inputs) > 2
          else np.zeros(dw.shape[0], np.float32))
    return EGRUStack(table, layers, dw, db, P, pb, act)


def _is_projection(x) -> bool:
    """`x` is the decoder projection's product (possibly + a bias constant): ``role=projection``."""
    p = x.producer
    if p is not None and p.op == "add":
        p = next((i.producer for i in p.inputs if i.producer is not None and not i.producer.is_const), None)
    return p is not None and p.op in ("sparse_matvec", "event_matvec") and p.attrs.get("role") == "projection"
