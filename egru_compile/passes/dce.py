"""dce: remove operations whose results are never used (and constants nobody reads any more).

Before::

    %rnns_0_kernel_mask = const @rnns.0.kernel_mask : tensor<8x36xf32>
    %to = cast(%rnns_0_kernel_mask) {dtype=f32} : tensor<8x36xf32>      // %to is never used
    %sigmoid = sigmoid(%add_2) : tensor<1x12xf32>

After::

    %sigmoid = sigmoid(%add_2) : tensor<1x12xf32>

Graph inputs are kept (the step signature is fixed); a multi-output op stays while any result is used.
"""
from __future__ import annotations

from ..ir import Graph
from .manager import PassOptions, register_pass
from .utils import remove_dead_nodes


@register_pass("dce")
def run(graph: Graph, options: PassOptions) -> dict:
    return {"removed": remove_dead_nodes(graph)}
