"""The precision of the event decoder's rows in the ONNX target (option ``decoder_dtype``, as the tvm target's).

The decoder (``linear`` of the last layer's events with the — usually tied — embedding [V, H]) is the largest
gathered product of a token: 20 % of 750 units x 10,000 float32 logits = 6 MB of rows at PTB size, read by
Gather + MatMul (`benchmarks/profile_onnx.py`: the heaviest nodes of the int8 artifact). int8 rows (quantize-int8's
rule, one scale per vocabulary row; then EventMatVecQ, the integer product in `bodies`) read a quarter of it.

* ``auto``: int8 rows when the layers gather int8 rows (``weight_dtype`` int8, or auto with quantize-int8's
  matrices) and the calibration perplexity (``--calib-data``, the IR interpreter: the graph as compiled against
  the same graph with the decoder's dequantized int8 rows) changes by at most :data:`DECODER_PPL_LIMIT`; else
  the rows the weight-precision pass chose (f32, or f16 with ``weight_dtype`` f16). Without calibration
  tokens it changes nothing.
* ``int8``: int8 rows, unchecked (the choice of the user); ``f32`` / ``f16``: those rows.
"""
from __future__ import annotations

import numpy as np

from ...ir import Graph, SparseMatrix
from ...passes.quantize import quantize_matrix
from ...passes.utils import eval_constant

#: largest relative calibration-perplexity change that keeps int8 decoder rows under ``decoder_dtype auto``
#: (the tvm target's limit)
DECODER_PPL_LIMIT = 1e-3


def _decoder(g: Graph):
    """The gated decoder ``linear`` node of `g` (None when there is not exactly one)."""
    lin = [n for n in g.nodes if n.op == "linear"]
    return lin[0] if len(lin) == 1 else None


def quantized_rows(weight) -> SparseMatrix:
    """quantize-int8's per-row rule on the dense decoder weight [V, H] (one scale per vocabulary row)."""
    return quantize_matrix(SparseMatrix.from_dense(np.asarray(weight, np.float32), "csr"))


def _with_weight(graph: Graph, data) -> Graph:
    """A copy of `graph` whose decoder reads constant `data` (the embedding, even if tied, is untouched)."""
    g = graph.clone()
    dec = _decoder(g)
    w = g.const(data, name="decoder_weight_q8", index=g.index_of(dec))
    dec.inputs = [dec.inputs[0], w, *dec.inputs[2:]]
    return g


def choose(graph: Graph, prepared: Graph, opts) -> tuple[Graph, dict | None]:
    """(`prepared` with the decoder rows of ``opts.decoder_dtype``, a record ``{"dtype", "note", ...}`` or None
    when there is no gated decoder). `graph` is the graph as compiled (the calibration runs on it)."""
    dec = _decoder(prepared)
    if dec is None or not dec.attrs.get("gated"):
        return prepared, None
    weight = eval_constant(dec.inputs[1], {})
    if weight is None or isinstance(weight, SparseMatrix) or np.ndim(weight) != 2:
        return prepared, None
    chosen, req = dec.attrs.get("weight_dtype", "f32"), opts.decoder_dtype
    rec: dict = {}
    if req in ("f32", "f16", "int8"):
        dtype, rec["note"] = req, f"decoder rows {req} (decoder_dtype)"
    else:
        int8_layers = any(n.attrs.get("weight_dtype") == "i8" for n in prepared.nodes if n is not dec)
        calib, ppl = opts.calib_token_ids, opts.perplexity
        dtype, rec["note"] = chosen, f"decoder rows {chosen}" + ("" if int8_layers else " (as the layers' weights)")
        if int8_layers and (calib is None or len(calib) < 2 or ppl is None):
            rec["note"] += " (int8 rows need --calib-data to check the perplexity change)"
        elif int8_layers:
            q = quantized_rows(weight)
            before = float(ppl(graph, calib))
            after = float(ppl(_with_weight(graph, q.to_dense()), calib))
            change = (after - before) / before
            dtype = "int8" if change <= DECODER_PPL_LIMIT else chosen
            rec.update(ppl_before=before, ppl_after=after, ppl_rel_change=change, tokens=int(np.asarray(calib).size),
                       limit=DECODER_PPL_LIMIT)
            rec["note"] = (f"int8 decoder rows: calibration perplexity {before:.3f} -> {after:.3f} "
                           f"({100 * change:+.3f} %, limit {100 * DECODER_PPL_LIMIT:.1f} %): decoder rows {dtype}")
    rec["dtype"] = dtype
    if dtype == "int8":
        q = quantized_rows(weight)
        w = prepared.const(q, name="decoder_weight", index=prepared.index_of(dec))      # traffic.py reads the name
        dec.inputs = [dec.inputs[0], w, *dec.inputs[2:]]
        dec.attrs["weight_dtype"] = "i8"
    else:
        dec.attrs["weight_dtype"] = dtype
    return prepared, rec
