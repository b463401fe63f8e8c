"""The chip program codec: program.npz — every weight as the chip holds it (int8 values + per-row scales, or
float16 / float32 values) and where every unit sits (`model.CoreMap`). `save_program` and `load_program`
are each other's inverse over one key table; a sparse matrix is always stored the same way (`_put_sparse`,
`_get_sparse`: the shared codec `ir.sparse.sparse_to_arrays` / `sparse_from_arrays`, with its layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...ir import SparseMatrix
from ...ir.sparse import sparse_from_arrays, sparse_to_arrays
from ...model import LEGACY_PROJECTION_ACTIVATION
from ..stack import EGRUStack, LayerWeights
from .model import CoreMap


def _put_sparse(arrays: dict, key: str, m: SparseMatrix) -> None:
    arrays.update(sparse_to_arrays(m, key, layout=True))


def _get_sparse(z, key: str) -> SparseMatrix:
    return sparse_from_arrays(z, key)


def save_program(path, stack: EGRUStack, cores: CoreMap) -> None:
    """Everything the simulator needs, as the chip holds it. With the decoder on chip, ``slot_of_core`` covers
    the decoder cores too and ``decoder_core_of`` maps each output to its core."""
    arrays = {"embedding": stack.embedding, "decoder_weight": stack.decoder_weight,
              "decoder_bias": stack.decoder_bias, "slot_of_core": cores.slot_of_core,
              "n_rnn_cores": np.array(cores.n_cores), "n_layers": np.array(len(stack.layers))}
    if cores.decoder_core_of is not None:
        arrays["decoder_core_of"] = cores.decoder_core_of
    if cores.projection_core_of is not None:    # EvNN's projection on graded-event cores (`projection`)
        arrays["projection_core_of"] = cores.projection_core_of
    if stack.projection is not None:        # EvNN's decoder projection, as stored (int8 + scales or f32)
        _put_sparse(arrays, "projection", stack.projection)
        arrays["projection_bias"] = np.asarray(stack.projection_bias, np.float32)
        arrays["projection_activation"] = np.array(stack.projection_activation or "identity")   # str, no pickle
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


def _check_content(path, stack, core_of, z) -> None:
    """program.npz's weights through the content validator every runner's weights go through
    (`ir.content`), its placement tables as non-negative integers: a resealed program with NaN, Inf,
    complex or overflowing weights is refused."""
    from ...ir.content import check_array, check_stack
    check_stack(str(path), stack.embedding,
                [{"W": lw.W, "b": lw.b, "R": lw.R, "br": lw.br, "thr": lw.thr} for lw in stack.layers],
                stack.decoder_weight, stack.decoder_bias, stack.projection, stack.projection_bias)
    for l, (c, lw) in enumerate(zip(core_of, stack.layers)):
        check_array(c, f"{path}: l{l}_core_of", kind="index", shape=(lw.hidden,))
    check_array(z["slot_of_core"], f"{path}: slot_of_core", kind="index", ndim=1)
    for key in ("decoder_core_of", "projection_core_of"):
        if key in z:
            check_array(z[key], f"{path}: {key}", kind="index", ndim=1)


def load_program(path, with_decoder: bool = False):
    """(EGRUStack, CoreMap) from program.npz; with_decoder: (stack, cores, decoder_core_of or None).
    ``cores.slot_of_core`` covers every core (decoder cores included)."""
    import io

    from ...fsio import BoundedNpz
    # program.npz is stored uncompressed: its arrays can never inflate past the file's own size
    size = len(path.getbuffer()) if isinstance(path, io.BytesIO) else Path(path).stat().st_size
    with BoundedNpz(path, size, "program.npz" if isinstance(path, io.BytesIO) else path) as z:   # closed after
        return _read_program(z, path, with_decoder)


def _read_program(z, path, with_decoder: bool):
    import io
    from .split import SplitLayer
    layers, core_of, splits = [], [], []
    for l in range(int(z["n_layers"])):
        if f"l{l}_split_bounds" in z:          # partial-sum fan-in split (`split.SplitLayer`)
            from ...ir.content import check_array
            bounds = check_array(z[f"l{l}_split_bounds"], f"program.npz: l{l}_split_bounds", kind="index", ndim=1)
            part = check_array(z[f"l{l}_part_core"], f"program.npz: l{l}_part_core", kind="int", ndim=2)
            if part.size and int(part.min()) < -1:          # -1: the unit has no synapses in that range
                raise ValueError(f"l{l}_part_core holds indices below -1")
            splits.append(SplitLayer(bounds, part))
        else:
            splits.append(None)
        W, R = _get_sparse(z, f"l{l}_W"), _get_sparse(z, f"l{l}_R")
        thr = z[f"l{l}_thr"]
        layers.append(LayerWeights(l, W.shape[1], int(thr.shape[0]), W, z[f"l{l}_b"], R, z[f"l{l}_br"], thr,
                                   bool(z[f"l{l}_events_in"])))
        core_of.append(z[f"l{l}_core_of"])
    stack = EGRUStack(z["embedding"], layers, z["decoder_weight"], z["decoder_bias"])
    if "projection_indptr" in z:
        stack.projection = _get_sparse(z, "projection")
        stack.projection_bias = z["projection_bias"]
        # written before the activation was recorded: egru-compile then always applied relu
        stack.projection_activation = (str(z["projection_activation"]) if "projection_activation" in z
                                       else LEGACY_PROJECTION_ACTIVATION)
        if stack.projection_activation not in ("identity", "relu"):
            raise ValueError(f"projection_activation {stack.projection_activation[:20]!r} is neither identity nor relu")
    _check_content(path if not isinstance(path, io.BytesIO) else "program.npz", stack, core_of, z)
    n = int(z["n_rnn_cores"]) if "n_rnn_cores" in z else len(z["slot_of_core"])
    dec = z["decoder_core_of"] if "decoder_core_of" in z else None
    proj = z["projection_core_of"] if "projection_core_of" in z else None
    if proj is not None and (stack.projection is None or dec is None or len(proj) != stack.projection.shape[0]
                             or (len(proj) and int(proj.max()) >= len(z["slot_of_core"]))):
        raise ValueError("projection_core_of does not match the projection and decoder of program.npz")
    cores = CoreMap(core_of, z["slot_of_core"], n, dec, splits if any(s is not None for s in splits) else None,
                    proj)
    return (stack, cores, dec) if with_decoder else (stack, cores)
