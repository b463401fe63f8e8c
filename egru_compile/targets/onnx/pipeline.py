"""The passes the ONNX target needs on the graph it receives, and how it runs them.

`ONNX_PIPELINE_NEEDS` names them in order (a target descriptor's "pipeline needs"); `prepare_graph` runs them
on a copy of the graph with the target's options (`OnnxOptions`, read by the passes through
``PassOptions.target_options``). After them the lowering is a straight op-by-op translation:

* ``select-gating``    which products of event tensors are event-gated (``event_matvec`` / ``gated=True``)
                       and which dense (``sparse_matvec``): options event_gating, event_decoder,
                       gate_max_activity (+ the activity ``count-macs`` measured)
* ``fold-embedding``   ``fold_embedding=True`` on the embedding x first-layer product (fold_embedding,
                       fold_max_mb)
* ``weight-precision`` ``weight_dtype`` (i8 / f16 / f32) of every gated product's rows (weight_dtype)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...ir import Graph
from ...passes import PassError, PassManager, PassOptions
from .options import OnnxLoweringError, OnnxOptions

#: The target-specific passes `compile_onnx` / `lower_graph` run before lowering, in this order.
ONNX_PIPELINE_NEEDS: tuple[str, ...] = ("select-gating", "fold-embedding", "weight-precision")


@dataclass
class TargetPassOptions(PassOptions):
    """`PassOptions` plus the options of the target whose passes run (see `passes.target_options`)."""
    target_options: dict = field(default_factory=dict)


def prepare_graph(graph: Graph, opts: OnnxOptions) -> tuple[Graph, dict[str, dict]]:
    """(`graph` after `ONNX_PIPELINE_NEEDS` — a copy —, the passes' statistics by pass name).
    A pass error is an `OnnxLoweringError` with the same one-line message."""
    pm = PassManager(list(ONNX_PIPELINE_NEEDS), TargetPassOptions(target_options=opts.to_dict()))
    try:
        prepared = pm.run(graph)
    except PassError as e:
        raise OnnxLoweringError(str(e)) from e
    return prepared, dict(pm.stats)
