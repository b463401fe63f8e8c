"""select-gating: decide, per matrix-vector product of an event tensor (an EGRU layer's y), whether it is
event-gated (only the weight columns of the active units are read) or dense, and rewrite it accordingly.

A product is gated when gating is on (target option ``event_gating``), it feeds a layer or decoder gating
is on (``event_decoder``), and the layer whose events it reads was not measured more active than
``gate_max_activity`` by ``count-macs`` with calibration (``the MacReport's activity``): gathering
scattered rows costs ~1.5-2x a dense read per byte, so a busy layer is cheaper dense. Then:

* ``sparse_matvec`` of an event tensor -> ``compress_events`` + ``event_matvec`` (as ``event-gating``);
* ``event_matvec`` that must not be gated -> ``sparse_matvec`` of the compressed tensor (same result);
* ``matmul`` / ``linear`` with a constant dense weight (the tied decoder, an un-optimised graph) get the
  attribute ``gated=True``: the target gathers the active units' rows of that dense weight. The decoder
  behind EvNN's 2023 projection reads ``relu(projection)``, whose zeros are skipped the same way (its
  non-zeros act as the events; gated when decoder gating is on); behind EvNN >= 0.2.0's linear projection
  (identity) the decoder's input is graded and signed, not events, so it stays dense.

Before (``the MacReport's activity = [0.9, 0.1]``, threshold 0.5)::

    %y0_idx, %y0_val, %y0_count = compress_events(%y0)
    %gh0 = event_matvec(%y0_idx, %y0_val, %y0_count, %w0_recurrent, %b) {layer=0, role=recurrent}
    %gh1 = sparse_matvec(%y1, %w1_recurrent, %b1) {layer=1, role=recurrent}
    %logits = linear(%y1_next, %embeddings_weight, %decoder_bias)

After::

    %gh0 = sparse_matvec(%y0, %w0_recurrent, %b) {layer=0, role=recurrent}
    %y1_idx, %y1_val, %y1_count = compress_events(%y1)
    %gh1 = event_matvec(%y1_idx, %y1_val, %y1_count, %w1_recurrent_csc, %b1) {layer=1, role=recurrent}
    %logits = linear(%y1_next, %embeddings_weight, %decoder_bias) {gated=True}

Options (`target_options.target_option`): ``event_gating`` (default True), ``event_decoder`` (True),
``gate_max_activity`` (0.5).
"""
from __future__ import annotations

from ..ir import Graph, Node, Value
from .event_gating import event_gating
from .manager import PassOptions, register_pass
from .target_options import target_option
from .utils import eval_constant, event_source, fed_layers, is_event_tensor, remove_dead_nodes

#: ops on dense constant weights that are gated by an attribute (no sparse form to rewrite into)
DENSE_WEIGHT_OPS = ("matmul", "linear")


def event_layer(x: Value) -> int | None:
    """The layer whose events `x` is (a y state, or the y result of that layer's ``egru_cell``)."""
    layer = x.meta.get("layer")
    if layer is None and x.producer is not None and x.producer.op == "egru_cell":
        layer = x.producer.attrs.get("layer")
    return layer


def too_active(graph: Graph, x: Value, max_activity: float) -> bool:
    """Whether calibration (``the MacReport's activity``) measured the layer of event tensor `x`
    above `max_activity`."""
    from .count_macs import MacReport
    rep = graph.analyses.get(MacReport)
    act = (rep.activity if rep is not None else None) or []
    layer = event_layer(x)
    return layer is not None and 0 <= layer < len(act) and act[layer] is not None and act[layer] > max_activity


def _is_batch1_events(graph: Graph, x: Value) -> bool:
    return len(x.type.shape) == 2 and x.type.shape[0] == 1 and is_event_tensor(graph, x)


def _is_projection_relu(x: Value) -> bool:
    """`x` = relu(the decoder projection's product), batch 1."""
    p = x.producer
    if p is None or p.op != "relu" or len(x.type.shape) != 2 or x.type.shape[0] != 1:
        return False
    q = p.inputs[0].producer
    return q is not None and q.op in ("sparse_matvec", "event_matvec") and q.attrs.get("role") == "projection"


def _densify(graph: Graph, node: Node) -> None:
    """event_matvec(idx, val, count, M[, b]) -> sparse_matvec(y, M[, b]) with y the compressed tensor."""
    y = event_source(node.inputs[0])
    out = graph.op("sparse_matvec", y, *node.inputs[3:], name=node.output.name, index=graph.index_of(node),
                   meta=dict(node.meta), **node.attrs)
    graph.replace_all_uses(node.output, out)
    graph.remove_node(node)
    out.name = node.output.name


def select_gating(graph: Graph, enabled: bool = True, decoder: bool = True, max_activity: float = 0.5) -> dict:
    """Rewrite `graph` in place (see the module docstring); returns statistics."""
    busy: list[int] = []

    def wanted(x: Value, layer: int | None) -> bool:
        if not enabled or (layer is None and not decoder):
            return False
        if too_active(graph, x, max_activity):
            busy.append(int(event_layer(x)))
            return False
        return True

    if enabled:
        event_gating(graph)            # every sparse_matvec of an event tensor; undone below where unwanted
    layers = fed_layers(graph)
    cache: dict = {}
    gated = dense = 0
    for node in list(graph.nodes):
        if node.op == "event_matvec":
            y = event_source(node.inputs[0])
            if y is node.inputs[0] or wanted(y, layers.get(node)):     # (padded arrays from elsewhere: kept)
                gated += 1
                continue
            _densify(graph, node)
            dense += 1
        elif node.op in DENSE_WEIGHT_OPS and len(node.inputs) >= 2:
            x, w = node.inputs[0], node.inputs[1]
            if eval_constant(w, cache) is None or not (_is_batch1_events(graph, x) or _is_projection_relu(x)):
                continue
            if wanted(x, layers.get(node)):
                node.attrs["gated"] = True
                gated += 1
            else:
                node.attrs.pop("gated", None)
                dense += 1
    remove_dead_nodes(graph)
    return {"gated": gated, "dense": dense, "dense_by_activity": busy}


@register_pass("select-gating", invalidates=())        # same math, same MACs
def run(graph: Graph, options: PassOptions) -> dict:
    return select_gating(graph, enabled=bool(target_option(options, "event_gating", True)),
                         decoder=bool(target_option(options, "event_decoder", True)),
                         max_activity=float(target_option(options, "gate_max_activity", 0.5)))
