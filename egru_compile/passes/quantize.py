"""quantize-int8 (not in the default pipeline): per-row (per output unit) symmetric int8 quantization of
every float sparse weight matrix: ``scale[r] = max|M[r,:]| / 127``, ``q = round(M / scale[r])`` clipped to
[-127, 127]; the `SparseMatrix` keeps int8 ``data`` plus the float32 ``scale`` per output row (see
`SparseMatrix.dequantized_values`). Entries that round to 0 are dropped (they contribute nothing), so a
matrix's nnz can fall slightly; the const attrs record ``nnz``, ``density``, ``quantized`` and ``dropped``.

Before::

    %w0_recurrent = const @rnns.0.recurrent_kernel sparse<36x12, csc, nnz=216, density=0.5000> : tensor<36x12xf32>

After::

    %w0_recurrent = const @rnns.0.recurrent_kernel sparse<36x12, csc, nnz=216, density=0.5000, scale> : tensor<36x12xi8>

Requires ``masks-folded`` (it quantizes the SparseMatrix constants fold-masks makes); establishes
``int8-weights``. It stores a `QuantizeReport` in ``graph.analyses`` (a record of the pass: it survives later
transforms). With ``PassOptions.calib_tokens`` and ``PassOptions.perplexity`` (a callable
``fn(graph, tokens) -> float``, the runtime's `graph_perplexity` — injected, so the passes never import the
runtime), the report holds the perplexity before and after on those tokens (`quantize_report` does the
same for any two graphs). The activity that perplexity run observed on the int8 graph is left as an
`ObservedActivity` for count-macs (see `count_macs.observed_activity`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir import Analysis, Graph, SparseMatrix
from ..ir.interpreter import trace_runs
from .count_macs import ActivityCounter, collect_matrices, observed_activity
from .manager import PassError, PassOptions, register_pass, register_property
from .utils import remove_dead_nodes


def _all_int8(graph: Graph) -> bool:
    mats = [n.attrs["data"] for n in graph.const_nodes() if isinstance(n.attrs["data"], SparseMatrix)]
    return bool(mats) and all(m.data.dtype == np.int8 for m in mats)


INT8_WEIGHTS = register_property("int8-weights", "sparse weight matrices hold int8 values + per-row float scales",
                                 detect=_all_int8)


@dataclass
class QuantizeReport(Analysis):
    """What quantize-int8 did; the perplexity fields are None (the last three absent from the JSON) when
    it was not measured."""
    property = INT8_WEIGHTS
    persistent = True
    method: str
    matrices: int
    dropped: int
    ppl_before: float | None = None
    ppl_after: float | None = None
    ppl_delta: float | None = None
    ppl_rel_change: float | None = None
    tokens: int | None = None

    def to_json(self) -> dict:
        d = super().to_json()
        if self.tokens is None:
            for k in ("ppl_delta", "ppl_rel_change", "tokens"):
                del d[k]
        return d


def quantize_matrix(m: SparseMatrix) -> SparseMatrix:
    """Per-output-row symmetric int8 version of a float SparseMatrix (same format; computed in it, no
    conversion: the result equals quantizing the CSR form and converting back)."""
    vals = m.data.astype(np.float32)
    n_major = len(m.indptr) - 1
    major = np.repeat(np.arange(n_major), np.diff(m.indptr))
    rows = major if m.fmt == "csr" else np.asarray(m.indices)
    absmax = np.zeros(m.shape[0], np.float32)
    np.maximum.at(absmax, rows, np.abs(vals))
    scale = (absmax / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(vals / scale[rows]), -127, 127).astype(np.int8)
    keep = q != 0
    counts = np.bincount(major[keep], minlength=n_major)
    indptr = np.zeros(n_major + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return SparseMatrix(m.shape, m.fmt, indptr, np.asarray(m.indices)[keep].astype(np.int64), q[keep], scale)


def quantize_int8(graph: Graph) -> dict:
    n = dropped = 0
    for node in list(graph.nodes):
        if not node.is_const:
            continue
        data = node.attrs["data"]
        if not isinstance(data, SparseMatrix) or data.scale is not None or data.data.dtype == np.int8:
            continue
        q = quantize_matrix(data)
        attrs = {k: v for k, v in node.attrs.items() if k != "data"}
        attrs.update(nnz=q.nnz, density=round(float(q.density), 6), quantized="int8-per-row",
                     dropped=data.nnz - q.nnz)
        new = graph.const(q, name=node.output.name + "_q", index=graph.index_of(node), **attrs)
        graph.replace_all_uses(node.output, new)
        graph.remove_node(node)
        graph.rename(new, node.output.name)
        n += 1
        dropped += data.nnz - q.nnz
    remove_dead_nodes(graph)
    return {"matrices": n, "dropped": dropped}


def quantize_report(graph_before: Graph, graph_after: Graph, tokens,
                    perplexity: Callable[[Graph, np.ndarray], float]) -> dict:
    """PPL of both graphs on `tokens` with `perplexity(graph, tokens)` (e.g. `runtime.graph_perplexity`):
    {"ppl_before", "ppl_after", "ppl_delta", "ppl_rel_change", "tokens"}."""
    if perplexity is None:
        raise PassError("quantize_report needs a perplexity function (e.g. egru_compile.runtime.graph_perplexity)")
    a = float(perplexity(graph_before, tokens))
    b = float(perplexity(graph_after, tokens))
    return {"ppl_before": a, "ppl_after": b, "ppl_delta": b - a, "ppl_rel_change": (b - a) / a,
            "tokens": int(np.asarray(tokens).size)}


@register_pass("quantize-int8", requires={"masks-folded"}, establishes={INT8_WEIGHTS})
def run(graph: Graph, options: PassOptions) -> dict:
    measure = (options.calib_tokens is not None and len(options.calib_tokens) >= 2
               and options.quantize_measure_ppl and options.perplexity is not None)
    before = graph.clone() if measure else None
    stats = quantize_int8(graph)
    rep = QuantizeReport("int8 symmetric per output row", **stats)
    if before is not None:
        # the int8 graph's perplexity run interprets it on the calibration tokens: keep what it observed
        # for count-macs (`ObservedActivity`, reused only while valid for exactly this graph and tokens)
        want = ActivityCounter(graph, collect_matrices(graph)).want
        with trace_runs(graph, want) as runs:
            ppl = quantize_report(before, graph, options.calib_tokens, options.perplexity)
        rep = QuantizeReport(rep.method, rep.matrices, rep.dropped, **ppl)
        obs = observed_activity(graph, options.calib_tokens, runs)
        if obs is not None:
            graph.analyses.put(obs)
    graph.analyses.put(rep)
    out = dict(stats)
    if rep.ppl_before is not None:
        out["ppl"] = f"{rep.ppl_before:.3f}->{rep.ppl_after:.3f}"
    return out
