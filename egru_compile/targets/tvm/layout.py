"""Weight layouts of the TVM kernels (numpy only, no TVM needed).

* input-major CSR (= CSC of the math matrix W^T): for input unit i, ``indptr[i]:indptr[i+1]`` are the output
  indices (0..n_out) and values of row i of ``W [n_in, n_out]`` (:func:`to_input_major`, :func:`from_input_major`);
* the packed layer of the fused step (:func:`pack_layer`): one accumulator ``acc[4h]`` per layer,
  ``[0:2h)`` = z, r pre-activations (gx + gh share them), ``[2h:3h)`` = gx_g, ``[3h:4h)`` = gh_g; W's indices
  stay in 0..3h, R's g-indices are moved by +h, the packed bias is ``[b_z+br_z, b_r+br_r, b_g, br_g]``;
* the index dtype (:func:`choose_index_dtype`): int16 when every index fits, else uint16, else int32.

The kernels trust their indices (no bounds checks in the inner loops): :func:`pack_layer` validates them once.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_input_major", "from_input_major", "choose_index_dtype", "pack_layer"]


def to_input_major(W_dense: np.ndarray, index_dtype: str | np.dtype = np.int32):
    """Dense ``W [n_in, n_out]`` -> input-major CSR ``(indptr int32[n_in+1], indices[nnz], data f32[nnz])``.

    Row i of W (= column i of the math matrix W^T) becomes ``indices/data[indptr[i]:indptr[i+1]]``,
    output indices ascending.  Exact zeros are dropped."""
    W = np.asarray(W_dense, dtype=np.float32)
    if W.ndim != 2:
        raise ValueError("W must be 2-D [n_in, n_out]")
    rows, cols = np.nonzero(W)  # row-major order: grouped by row, cols ascending
    indptr = np.zeros(W.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=W.shape[0]), out=indptr[1:])
    return indptr, cols.astype(index_dtype), W[rows, cols].astype(np.float32)


def from_input_major(indptr, indices, data, n_out: int) -> np.ndarray:
    """Inverse of :func:`to_input_major`: back to dense ``W [n_in, n_out]``."""
    indptr = np.asarray(indptr)
    W = np.zeros((len(indptr) - 1, n_out), dtype=np.float32)
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    W[rows, np.asarray(indices).astype(np.int64)] = data
    return W


def choose_index_dtype(max_index_exclusive: int, requested: str = "auto") -> str:
    """int16 when every index fits, else uint16, else int32 (``requested`` overrides ``auto``)."""
    if requested != "auto":
        return requested
    if max_index_exclusive <= 32767:
        return "int16"
    if max_index_exclusive <= 65535:
        return "uint16"
    return "int32"


def _as_csr(M, n_out: int, index_dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept a dense [n_in, n_out] array or an (indptr, indices, data) triple."""
    if isinstance(M, (tuple, list)) and len(M) == 3:
        p, i, d = M
        return (np.ascontiguousarray(p, dtype=np.int32), np.asarray(i).astype(index_dtype),
                np.ascontiguousarray(d, dtype=np.float32))
    M = np.asarray(M, dtype=np.float32)
    if M.shape[1] != n_out:
        raise ValueError(f"weight has {M.shape[1]} outputs, expected {n_out}")
    return to_input_major(M, index_dtype)


def _check_csr(p, i, d, n_out: int, name: str):
    """The kernels trust their indices (no bounds checks in the inner loops): validate once here."""
    if p.ndim != 1 or len(p) < 1 or p[0] != 0 or np.any(np.diff(p) < 0) or p[-1] != len(i) or len(i) != len(d):
        raise ValueError(f"{name}: malformed input-major CSR (indptr must start at 0, be non-decreasing "
                         f"and end at nnz; indices and data must have nnz entries)")
    if len(i) and (int(np.min(i)) < 0 or int(np.max(i)) >= n_out):
        raise ValueError(f"{name}: output index out of range [0, {n_out})")
    if len(p) - 1 > 2 ** 31 - 1 or len(i) > 2 ** 31 - 1:
        raise ValueError(f"{name}: too large for int32 offsets")


def pack_layer(W, R, b, br, thr, index_dtype: str = "auto") -> dict[str, np.ndarray]:
    """Pack one layer for the fused step (see the module doc for the 4h accumulator layout).

    W: dense [n_in, 3h] or input-major CSR triple; R: dense [h, 3h] or triple; b, br: [3h]; thr: [h].
    Returns dict with w_ptr, w_idx, w_val, r_ptr, r_idx (g-part shifted by +h), r_val, bias4 [4h], thr."""
    thr = np.ascontiguousarray(thr, dtype=np.float32).reshape(-1)
    h = thr.shape[0]
    idt = choose_index_dtype(4 * h, index_dtype)
    wp, wi, wv = _as_csr(W, 3 * h, np.int64)
    rp, ri, rv = _as_csr(R, 3 * h, np.int64)
    if len(rp) != h + 1:
        raise ValueError(f"R has {len(rp) - 1} inputs, expected h={h}")
    _check_csr(wp, wi, wv, 3 * h, "W")
    _check_csr(rp, ri, rv, 3 * h, "R")
    ri = ri.astype(np.int64)
    ri = np.where(ri >= 2 * h, ri + h, ri)
    b = np.asarray(b, dtype=np.float32).reshape(-1)
    br = np.asarray(br, dtype=np.float32).reshape(-1)
    bias4 = np.concatenate([b[:2 * h] + br[:2 * h], b[2 * h:], br[2 * h:]]).astype(np.float32)
    return {"w_ptr": wp, "w_idx": wi.astype(idt), "w_val": wv, "r_ptr": rp, "r_idx": ri.astype(idt),
            "r_val": rv, "bias4": bias4, "thr": thr}
