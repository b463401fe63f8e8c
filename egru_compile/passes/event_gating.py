"""event-gating: a ``sparse_matvec`` whose input is an event tensor (an EGRU layer's y = o * c~: a y state
input, or the y result of ``egru_cell`` / the value a layer emits as y) becomes
``compress_events(y) -> (idx, val, count)`` + ``event_matvec(idx, val, count, M_csc[, bias])``, so only the
columns of active units are touched. One ``compress_events`` is shared by every matvec reading the same
event tensor; a CSR matrix is converted to CSC. Dense inputs (the embedding output) keep ``sparse_matvec``.

Before::

    %gx0 = sparse_matvec(%embedding, %w0_input, %rnns_0_bias) {layer=0, role=input}
    %gh0 = sparse_matvec(%y0, %w0_recurrent, %rnns_0_recurrent_bias) {layer=0, role=recurrent}
    %c0_next, %y0_next = egru_cell(%gx0, %gh0, %c0, %rnns_0_thr_clamp) {layer=0}
    %gx1 = sparse_matvec(%y0_next, %w1_input, %rnns_1_bias) {layer=1, role=input}

After::

    %gx0 = sparse_matvec(%embedding, %w0_input, %rnns_0_bias) {layer=0, role=input}
    %y0_idx, %y0_val, %y0_count = compress_events(%y0)
    %gh0 = event_matvec(%y0_idx, %y0_val, %y0_count, %w0_recurrent, %rnns_0_recurrent_bias) {layer=0, role=recurrent}
    %c0_next, %y0_next = egru_cell(%gx0, %gh0, %c0, %rnns_0_thr_clamp) {layer=0}
    %y0_next_idx, %y0_next_val, %y0_next_count = compress_events(%y0_next)
    %gx1 = event_matvec(%y0_next_idx, %y0_next_val, %y0_next_count, %w1_input, %rnns_1_bias) {layer=1, role=input}
"""
from __future__ import annotations

from ..ir import Graph, SparseMatrix, Value
from .manager import PassOptions, register_pass, register_property
from .utils import is_event_tensor, remove_dead_nodes


def event_gating(graph: Graph) -> int:
    events: dict[Value, list[Value]] = {}
    csc: dict[int, Value] = {}
    n = 0
    for node in list(graph.nodes):
        if node.op != "sparse_matvec":
            continue
        x, m = node.inputs[0], node.inputs[1]
        if not is_event_tensor(graph, x) or x.type.shape[0] != 1 or len(x.type.shape) != 2:
            continue
        mp = m.producer
        if mp is None or not mp.is_const or not isinstance(mp.attrs["data"], SparseMatrix):
            continue
        idx = graph.index_of(node)
        if x not in events:
            events[x] = graph.multi_op("compress_events", x, names=[f"{x.name}_idx", f"{x.name}_val",
                                                                    f"{x.name}_count"], index=idx)
            idx += 1
        data: SparseMatrix = mp.attrs["data"]
        if data.fmt != "csc":
            if id(mp) not in csc:
                attrs = {k: v for k, v in mp.attrs.items() if k != "data"}
                csc[id(mp)] = graph.const(data.convert("csc"), name=m.name + "_csc",
                                          index=graph.index_of(mp) + 1, **attrs)
                idx += 1
            m = csc[id(mp)]
        args = [*events[x], m] + list(node.inputs[2:])
        out = graph.op("event_matvec", *args, name=node.output.name, index=idx, meta=dict(node.meta),
                       **node.attrs)
        graph.replace_all_uses(node.output, out)
        graph.remove_node(node)
        out.name = node.output.name          # the old value is gone: keep its (readable) name
        n += 1
    remove_dead_nodes(graph)
    return n


EVENT_GATED = register_property("event-gated", "matvecs of event tensors are compress_events + event_matvec")


@register_pass("event-gating", requires={"masks-folded"}, establishes={EVENT_GATED})
def run(graph: Graph, options: PassOptions) -> dict:
    return {"gated": event_gating(graph)}
