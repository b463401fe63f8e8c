"""Synaptic weight dtype of a chip program (``--weight-dtype {int8,f16,f32}``; ``--float-weights`` = f32).

Establishes: `resolve_weight_dtype` turns the target options into one of ``int8`` (default: int8 values with a
per-output-row float scale applied after the sum, as quantize-int8 defines them), ``f16`` (every sparse weight
matrix rounded to float16 and stored as 16-bit words in program.npz) or ``f32`` (the float reference), or
raises a one-line `EgruError` — f16 needs a profile whose synapse word holds 16-bit weights
(``memory.weight_bits`` >= 16: the built-in profiles store 8-bit weights). `round_f16` rounds a graph's
sparse weight matrices to float16 values (held as float32 so the reference interpreter runs unchanged) and
`to_f16_storage` gives the stack's matrices float16 data — values identical, half the bytes.
`weights_info` is the ``weights`` object of mapping.json: dtype, bits per weight, synapse word (weight +
index bits) and the synaptic memory the placed cores need with that word.
"""
from __future__ import annotations

import numpy as np

from ...errors import EgruError, option
from ...ir import SparseMatrix
from .capacity import core_memory_bytes
from .profile import ChipProfile

WEIGHT_DTYPES = ("int8", "f16", "f32")
BITS = {"int8": 8, "f16": 16, "f32": 32}


def resolve_weight_dtype(options: dict, profile: ChipProfile) -> str:
    wd = options.get("weight_dtype") or "auto"
    float_weights = bool(options.get("float_weights"))
    if wd == "auto":
        return "f32" if float_weights else "int8"
    if wd not in WEIGHT_DTYPES:
        raise EgruError(f"{option('weight_dtype')} for chip targets must be one of {', '.join(WEIGHT_DTYPES)} "
                        f"(got {wd!r})")
    if float_weights and wd != "f32":
        raise EgruError(f"{option('float_weights', True)} means {option('weight_dtype', 'f32')}; it contradicts "
                        f"{option('weight_dtype', wd)}")
    if wd == "f16" and profile.memory.weight_bits < 16:
        raise EgruError(f"{option('weight_dtype', 'f16')} needs 16-bit synaptic weights, but profile {profile.name} "
                        f"stores {profile.memory.weight_bits}-bit weights (memory.weight_bits = "
                        f"{profile.memory.weight_bits}); use int8, f32 (the float reference) or a profile with "
                        "weight_bits >= 16")
    return wd


def _f16(m: SparseMatrix, dtype) -> SparseMatrix:
    vals = np.asarray(m.data, np.float32).astype(np.float16).astype(dtype)
    return SparseMatrix(m.shape, m.fmt, m.indptr, m.indices, vals, None)


def round_f16(graph) -> int:
    """Round every float sparse weight matrix of `graph` to float16 values in place; returns how many."""
    n = 0
    for node in graph.nodes:
        data = node.attrs.get("data") if node.is_const else None
        if isinstance(data, SparseMatrix) and data.scale is None and data.data.dtype != np.int8:
            node.attrs["data"] = _f16(data, np.float32)
            n += 1
    return n


def to_f16_storage(stack) -> None:
    """The stack's sparse matrices (already float16 values) with float16 data: what program.npz stores."""
    for lw in stack.layers:
        lw.W, lw.R = _f16(lw.W, np.float16), _f16(lw.R, np.float16)
    if stack.projection is not None and stack.projection.scale is None:
        stack.projection = _f16(stack.projection, np.float16)


def weights_info(dtype: str, profile: ChipProfile, costs, quantize: dict | None, decoder_cores: int = 0) -> dict:
    """mapping.json ``weights``: dtype, bits, synapse word, synaptic memory of the placed RNN cores with that
    word (synapses x (weight + index bits) + one pointer per input axon + unit state, per core, rounded up to
    bytes) and, where it differs, the profile's word the placement was sized for (f32 on an 8-bit profile).
    With `decoder_cores` (``--decoder chip``) the summary says the figure is the RNN cores' alone."""
    m = profile.memory
    bits = BITS[dtype]
    mem = int(core_memory_bytes(profile, costs.synapses, costs.input_axons, costs.units,
                                bits + m.index_bits).sum())
    line = {"int8": "weights int8 per-row", "f16": "weights float16 (16-bit synaptic words)",
            "f32": "weights float32 (the float reference: --weight-dtype f32 / --float-weights)"}[dtype]
    whose = f"RNN cores' synaptic memory (the {decoder_cores} decoder cores not included)" if decoder_cores \
        else "synaptic memory"
    line += f": {whose} {mem / 2**20:.2f} MiB with {bits + m.index_bits}-bit synapse words"
    if bits > m.weight_bits:
        line += f" (the placement is sized for the profile's {m.weight_bits}-bit weights)"
    if dtype != "f32" and quantize and quantize.get("ppl_before") is not None:
        line += (f"; calibration PPL {quantize['ppl_before']:.3f} (float) -> {quantize['ppl_after']:.3f} "
                 f"({dtype}), change {100 * quantize['ppl_rel_change']:+.3f} %")
    elif dtype != "f32":
        line += " (no calibration data: PPL change not measured)"
    return {"dtype": dtype, "bits": bits, "synapse_bits": bits + m.index_bits, "synaptic_memory_bytes": mem,
            "placement_weight_bits": m.weight_bits, "quantize": quantize, "summary": line}


def round_graph_f16(graph, calib, perplexity=None) -> dict:
    """`round_f16` on `graph`, with the calibration perplexity before and after (reference interpreter) when
    there are at least two calibration tokens and a `perplexity` (graph, tokens) -> float (the compile driver
    passes the runtime's `graph_perplexity`) — the f16 counterpart of quantize-int8's report."""
    before = graph.clone() if calib is not None and len(calib) >= 2 and perplexity is not None else None
    rep: dict = {"method": "float16 rounding", "matrices": round_f16(graph)}
    # the MACs and per-unit activity count-macs measured on the float32 weights no longer describe this graph:
    # placement, energy and mapping.json must use the float16 model's own
    from ...passes import MacReport, UnitActivity, measure_macs
    for kind in (UnitActivity, MacReport):
        graph.analyses.discard(kind)
    if calib is not None and len(calib) > 0:
        for result in measure_macs(graph, np.asarray(calib, np.int64)):
            if result is not None:
                graph.analyses.put(result)
    if before is not None:
        graph_perplexity = perplexity
        tokens = np.asarray(calib, np.int64)
        a, b = float(graph_perplexity(before, tokens)), float(graph_perplexity(graph, tokens))
        rep.update(ppl_before=a, ppl_after=b, ppl_delta=b - a, ppl_rel_change=(b - a) / a, tokens=int(len(tokens)))
    return rep
