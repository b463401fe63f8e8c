"""The chip program codec: program.npz — every weight as the chip holds it (int8 values + per-row scales, or
float16 / float32 values) and where every unit sits (`model.CoreMap`). `save_program` and `load_program`
are each other's inverse over one key table; a sparse matrix is always stored the same way (`_put_sparse`,
`_get_sparse`)."""
from __future__ import annotations

import numpy as np

from ...ir import SparseMatrix
from ..stack import EGRUStack, LayerWeights
from .model import CoreMap

def _put_sparse(arrays: dict, key: str, m: SparseMatrix) -> None:
    arrays.update({f"{key}_shape": np.array(m.shape), f"{key}_fmt": np.array(m.fmt), f"{key}_indptr": m.indptr,
                   f"{key}_indices": m.indices, f"{key}_data": m.data})
    if m.scale is not None:
        arrays[f"{key}_scale"] = m.scale


def _get_sparse(z, key: str) -> SparseMatrix:
    return SparseMatrix(tuple(int(s) for s in z[f"{key}_shape"]), str(z[f"{key}_fmt"]), z[f"{key}_indptr"],
                        z[f"{key}_indices"], z[f"{key}_data"], z[f"{key}_scale"] if f"{key}_scale" in z else None)


def save_program(path, stack: EGRUStack, cores: CoreMap) -> None:
    """Everything the simulator needs, as the chip holds it. With the decoder on chip, ``slot_of_core`` covers
    the decoder cores too and ``decoder_core_of`` maps each output to its core."""
    arrays = {"embedding": stack.embedding, "decoder_weight": stack.decoder_weight,
              "decoder_bias": stack.decoder_bias, "slot_of_core": cores.slot_of_core,
              "n_rnn_cores": np.array(cores.n_cores), "n_layers": np.array(len(stack.layers))}
    if cores.decoder_core_of is not None:
        arrays["decoder_core_of"] = cores.decoder_core_of
    if stack.projection is not None:        # EvNN's decoder projection (host), as stored (int8 + scales or f32)
        _put_sparse(arrays, "projection", stack.projection)
        arrays["projection_bias"] = np.asarray(stack.projection_bias, np.float32)
    for l, lw in enumerate(stack.layers):
        arrays[f"l{l}_core_of"] = cores.core_of[l]
        sp = cores.splits[l] if cores.splits else None
        if sp is not None:                  # partial-sum fan-in split (`split.SplitLayer`)
            arrays[f"l{l}_split_bounds"], arrays[f"l{l}_part_core"] = sp.bounds, sp.part_core
        _put_sparse(arrays, f"l{l}_W", lw.W)
        _put_sparse(arrays, f"l{l}_R", lw.R)
        arrays.update({f"l{l}_b": lw.b, f"l{l}_br": lw.br, f"l{l}_thr": lw.thr,
                       f"l{l}_events_in": np.array(lw.events_in)})
    with open(path, "wb") as f:
        np.savez(f, **arrays)          # uncompressed: zlib took longer than the whole placement at 27M synapses


def load_program(path, with_decoder: bool = False):
    """(EGRUStack, CoreMap) from program.npz; with_decoder: (stack, cores, decoder_core_of or None).
    ``cores.slot_of_core`` covers every core (decoder cores included)."""
    from .split import SplitLayer
    with np.load(path, allow_pickle=False) as z:          # closed after reading (every array is read here)
        layers, core_of, splits = [], [], []
        for l in range(int(z["n_layers"])):
            splits.append(SplitLayer(z[f"l{l}_split_bounds"], z[f"l{l}_part_core"])
                          if f"l{l}_split_bounds" in z else None)
            W, R = _get_sparse(z, f"l{l}_W"), _get_sparse(z, f"l{l}_R")
            thr = z[f"l{l}_thr"]
            layers.append(LayerWeights(l, W.shape[1], int(thr.shape[0]), W, z[f"l{l}_b"], R, z[f"l{l}_br"], thr,
                                       bool(z[f"l{l}_events_in"])))
            core_of.append(z[f"l{l}_core_of"])
        stack = EGRUStack(z["embedding"], layers, z["decoder_weight"], z["decoder_bias"])
        if "projection_indptr" in z:
            stack.projection = _get_sparse(z, "projection")
            stack.projection_bias = z["projection_bias"]
        n = int(z["n_rnn_cores"]) if "n_rnn_cores" in z else len(z["slot_of_core"])
        dec = z["decoder_core_of"] if "decoder_core_of" in z else None
        cores = CoreMap(core_of, z["slot_of_core"], n, dec, splits if any(s is not None for s in splits) else None)
    return (stack, cores, dec) if with_decoder else (stack, cores)
