"""The value dtypes a tvm artifact's kernels read: the layers' W / R (``--weight-dtype``) and the decoder rows
(``--decoder-dtype``), resolved at compile time.

* layers: ``auto`` is int8 when the graph's sparse matrices are int8 (quantize-int8 ran), else f32; ``int8``
  uses quantize-int8's values and per-output-row scales as they are in the IR (the compile adds the pass), so the
  tvm and onnx int8 artifacts compute the same numbers up to float32 rounding; ``f16`` / ``f32`` read float
  values (int8 matrices dequantized).
* events (``--event-dtype``): ``f32``, or ``u8`` with int8 layers on a CPU with AVX512-VNNI (`u8_events.py`); its
  effect is measured on ``--calib-data`` by :func:`event_precision`: the artifact's kernels against the same
  kernels with float events.
* decoder: ``auto`` follows f16 layers, and with int8 layers takes int8 rows (quantize-int8's rule, one scale
  per vocabulary row, `layout.quantize_dense_rows`) only when the calibration perplexity changes by at most
  :data:`DECODER_PPL_LIMIT` (measured on ``--calib-data`` with the IR interpreter: the graph as compiled
  against the same graph with the decoder's dequantized int8 rows); without calibration text it stays f32.
"""
from __future__ import annotations

import numpy as np

from ...errors import EgruError, UsageError, option
from ...ir import SparseMatrix
from .layout import quantize_dense_rows

__all__ = ["DECODER_PPL_LIMIT", "resolve_weight_dtype", "decoder_precision", "resolve_event_dtype",
           "event_precision"]

#: largest relative calibration-perplexity change that keeps int8 decoder rows under ``--decoder-dtype auto``
DECODER_PPL_LIMIT = 1e-3


def resolve_weight_dtype(stack, requested: str | None) -> str:
    """f32 / f16 / int8 for the layers' W and R (see the module doc)."""
    mats = [m for lw in stack.layers for m in (lw.W, lw.R)]
    all_int8 = all(isinstance(m, SparseMatrix) and m.scale is not None for m in mats)
    req = requested or "auto"
    if req == "auto":
        return "int8" if all_int8 else "f32"
    if req == "int8" and not all_int8:
        raise EgruError("tvm weight_dtype 'int8' needs int8 weights: run the quantize-int8 pass "
                        f"(egru-compile adds it with {option('weight_dtype', 'int8')})")
    return req


def _with_decoder(graph, weight: np.ndarray):
    """A copy of `graph` whose decoder ``linear`` reads `weight` (the embedding, even if tied, is untouched)."""
    g = graph.clone()
    (dec,) = [n for n in g.nodes if n.op == "linear"]
    w = g.const(np.asarray(weight, np.float32), name="decoder_weight_q8", index=g.index_of(dec))
    dec.inputs = [dec.inputs[0], w, *dec.inputs[2:]]
    return g


def decoder_precision(graph, stack, weight_dtype: str, requested: str | None, calib,
                      perplexity=None) -> tuple[str, dict]:
    """(decoder dtype, record): the record says what was measured (``ppl_before``, ``ppl_after``,
    ``ppl_rel_change``, ``tokens``, ``limit``) and ``note`` is a line for the compile summary. `perplexity`
    (graph, tokens) -> float measures the change (the compile driver passes the runtime's `graph_perplexity`)."""
    req = requested or "auto"
    if req != "auto":
        return req, {"note": f"decoder rows {req} (--decoder-dtype)"}
    if weight_dtype != "int8":
        dt = "f16" if weight_dtype == "f16" else "f32"
        return dt, {"note": f"decoder rows {dt}"}
    if calib is None or len(calib) < 2 or perplexity is None:
        return "f32", {"note": "decoder rows f32 (int8 rows need --calib-data to check the perplexity change)"}
    graph_perplexity = perplexity
    q, scale = quantize_dense_rows(stack.decoder_weight)
    before = float(graph_perplexity(graph, calib))
    after = float(graph_perplexity(_with_decoder(graph, q.astype(np.float32) * scale[:, None]), calib))
    change = (after - before) / before
    dt = "int8" if change <= DECODER_PPL_LIMIT else "f32"
    note = (f"int8 decoder rows: calibration perplexity {before:.3f} -> {after:.3f} ({100 * change:+.3f} %, "
            f"limit {100 * DECODER_PPL_LIMIT:.1f} %): decoder rows {dt}")
    return dt, {"note": note, "ppl_before": before, "ppl_after": after, "ppl_rel_change": change,
                "tokens": int(np.asarray(calib).size), "limit": DECODER_PPL_LIMIT}


def resolve_event_dtype(requested: str | None, weight_dtype: str, target) -> str:
    """f32 / u8 for the event values of the int8 products; u8 needs int8 layers and AVX512-VNNI."""
    req = requested or "f32"
    if req not in ("f32", "u8"):
        raise UsageError(f"tvm event_dtype must be 'f32' or 'u8', not {req!r}")
    if req == "u8":
        if weight_dtype != "int8":
            raise UsageError(f"{option('event_dtype', 'u8')} needs int8 weights, not {weight_dtype} "
                             f"(leave {option('weight_dtype', 'auto')} or give int8)")
        from .spec import has_vnni
        if not has_vnni(target):
            raise EgruError(f"{option('event_dtype', 'u8')} needs a CPU with AVX512-VNNI; {target} has none")
    return req


def _products(spec) -> str:
    """Which products read uint8 events (the compile report's words)."""
    if spec.u8_decoder:
        return "the layers' products and the decoder's"
    return ("the layers' products (the decoder's float rows read float events; int8 decoder rows, and with them "
            "uint8 events, need --calib-data or --decoder-dtype int8)")


def event_precision(spec, module, stack, layers, calib) -> dict:
    """What uint8 events change, measured: the calibration perplexity of this artifact's kernels (`module`, the
    weights of `stack`; `layers`: its int8 layer arrays, `target.stack_layer_arrays`) against the same kernels
    with float events (the spec with ``event_dtype`` f32, through the compile cache): nothing else differs. A
    record ``{"note", "ppl_before", "ppl_after", "ppl_rel_change", "tokens"}`` (no numbers without calibration
    text)."""
    if not spec.u8_events:
        return {"note": "event values f32"}
    if calib is None or len(calib) < 2:
        return {"note": f"uint8 events in {_products(spec)}; the perplexity change is not measured (give "
                        "--calib-data)"}
    from dataclasses import replace
    from .cache import load_step_module
    from .step_runner import TVMStepRunner
    toks = np.asarray(calib, np.int64).reshape(-1)

    def perplexity(sp, mod) -> float:
        rt = TVMStepRunner(stack.embedding, layers, stack.decoder_bias, stack.decoder_weight, module=mod, spec=sp)
        nll, _ = rt.score(toks[:-1], toks[1:])
        return float(np.exp(np.mean(nll)))
    float_events = replace(spec, event_dtype="f32")
    before = perplexity(float_events, load_step_module(float_events))
    after = perplexity(spec, module)
    change = (after - before) / before
    return {"note": f"uint8 events in {_products(spec)}: calibration perplexity {before:.3f} (the same int8 kernels "
                    f"with float events) -> {after:.3f} ({100 * change:+.4f} %)",
            "ppl_before": before, "ppl_after": after, "ppl_rel_change": change, "tokens": int(toks.size)}
