"""Weight layouts of the TVM kernels (numpy only, no TVM needed).

* input-major CSR (= CSC of the math matrix W^T): for input unit i, ``indptr[i]:indptr[i+1]`` are the output
  indices (0..n_out) and values of row i of ``W [n_in, n_out]`` (:func:`to_input_major`, :func:`from_input_major`);
* the packed layer of the fused step (:func:`pack_layer`): one accumulator ``acc[4h]`` per layer,
  ``[0:2h)`` = z, r pre-activations (gx + gh share them), ``[2h:3h)`` = gx_g, ``[3h:4h)`` = gh_g; W's indices
  stay in 0..3h, R's g-indices are moved by +h, the packed bias is ``[b_z+br_z, b_r+br_r, b_g, br_g]``;
* the index dtype (:func:`choose_index_dtype`): int16 when every index fits, else uint16, else int32;
* the value dtype (``weight_dtype``): ``f32``, ``f16`` (values stored float16, widened in the kernel) or ``int8``
  (quantize-int8's per-output-row symmetric int8 values, :func:`~egru_compile.passes.quantize.quantize_matrix`,
  read as int8; the scale is applied after the sum). int8 layers pack a 6h accumulator instead:
  ``[0:3h)`` = the W sums (z, r, g), ``[3h:6h)`` = the R sums (R's indices moved by +3h), with ``bias6 =
  [b, br]`` and ``scale6 = [scale_W, scale_R]``: gx = bias6[:3h] + scale6[:3h] * acc[:3h], gh likewise — the
  sums of W and R cannot share an accumulator because their per-output scales differ.

The kernels trust their indices (no bounds checks in the inner loops): :func:`pack_layer` validates them once.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_input_major", "from_input_major", "choose_index_dtype", "pack_layer", "quantize_rows",
           "quantize_dense_rows", "fold_table", "WEIGHT_DTYPES", "NP_DTYPES", "TIR_DTYPES"]

#: value dtypes of the packed weights and their numpy / TIR dtype
WEIGHT_DTYPES = ("f32", "f16", "int8")
NP_DTYPES = {"f32": np.float32, "f16": np.float16, "int8": np.int8}
TIR_DTYPES = {"f32": "float32", "f16": "float16", "int8": "int8"}


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


def fold_table(emb, w_ptr, w_idx, w_val, n_out: int, bias=None, chunk: int = 1024) -> np.ndarray:
    """The folded embedding table ``E @ W0 (+ bias)`` [V, n_out] float32 of layer 0's packed input matrix
    (input-major CSR; int8 values: the integer values, the per-output scale comes after the sum in the kernel).

    Computed in float64 from the stored values (float32 / float16 / int8: all exact in float64) and rounded to
    float32 once per element, so every entry is the correctly rounded float32 of the float64 sum (float64's own
    accumulation error, ~n_in * 2^-53 relative, is far below float32's half ulp). `bias` [n_out] is added in
    float64 before the rounding. Rows are done `chunk` at a time (float64 scratch of chunk x n_out)."""
    emb = np.asarray(emb)
    W = np.zeros((len(w_ptr) - 1, n_out), np.float64)
    rows = np.repeat(np.arange(len(w_ptr) - 1), np.diff(np.asarray(w_ptr)))
    W[rows, np.asarray(w_idx).astype(np.int64)] = np.asarray(w_val).astype(np.float64)
    b = None if bias is None else np.asarray(bias, np.float64).reshape(-1)
    out = np.empty((emb.shape[0], n_out), np.float32)
    for v0 in range(0, emb.shape[0], chunk):
        t = emb[v0:v0 + chunk].astype(np.float64) @ W
        if b is not None:
            t += b
        out[v0:v0 + chunk] = t
    return out


def choose_index_dtype(max_index_exclusive: int, requested: str = "auto") -> str:
    """int16 when every index fits, else uint16, else int32 (``requested`` overrides ``auto``)."""
    if requested != "auto":
        return requested
    if max_index_exclusive <= 32767:
        return "int16"
    if max_index_exclusive <= 65535:
        return "uint16"
    return "int32"


def _as_csr(M, n_out: int, index_dtype, keep_int8: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accept a dense [n_in, n_out] array or an (indptr, indices, data) triple (int8 data kept with
    `keep_int8`, else float32)."""
    if isinstance(M, (tuple, list)) and len(M) == 3:
        p, i, d = M
        d = np.asarray(d)
        return (np.ascontiguousarray(p, dtype=np.int32), np.asarray(i).astype(index_dtype),
                np.ascontiguousarray(d, dtype=np.int8 if keep_int8 and d.dtype == np.int8 else np.float32))
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


def quantize_rows(p, i, d, n_out: int, scale=None):
    """int8 values + per-output scale [n_out] of an input-major CSR triple: as given when `d` is int8 (with
    `scale`), else quantize-int8's per-output-row quantization of the float values (entries that round to 0
    dropped). Returns ((indptr, indices, int8 data), scale f32[n_out])."""
    d = np.asarray(d)
    if d.dtype == np.int8:
        if scale is None:
            raise ValueError("int8 weight values need their per-output scale")
        scale = np.ascontiguousarray(scale, dtype=np.float32).reshape(-1)
        if scale.shape != (n_out,):
            raise ValueError(f"int8 scale must have {n_out} entries, got {scale.shape}")
        return (p, i, d), scale
    if scale is not None:
        raise ValueError(f"a per-output scale was given with {d.dtype} weight values: pass the int8 values it "
                         "scales (as an input-major CSR triple)")
    from ...ir import SparseMatrix
    from ...passes.quantize import quantize_matrix
    n_in = len(p) - 1
    # the input-major CSR of W [n_in, n_out] is the CSC of the math matrix W^T [n_out, n_in]
    m = SparseMatrix((n_out, n_in), "csc", np.asarray(p, np.int64), np.asarray(i, np.int64),
                     np.asarray(d, np.float32))
    q = quantize_matrix(m)
    return (q.indptr.astype(np.int32), q.indices, np.asarray(q.data, np.int8)), np.asarray(q.scale, np.float32)


def quantize_dense_rows(M) -> tuple[np.ndarray, np.ndarray]:
    """quantize-int8's rule on a dense matrix M [n_out, n_in] (e.g. the decoder [V, H], one scale per
    vocabulary row): (q int8 [n_out, n_in], scale f32 [n_out]), M ~= q * scale[:, None]."""
    from ...ir import SparseMatrix
    from ...passes.quantize import quantize_matrix
    M = np.asarray(M, np.float32)
    q = quantize_matrix(SparseMatrix.from_dense(M, "csr"))
    dense = np.zeros(M.shape, np.int8)
    dense[np.repeat(np.arange(M.shape[0]), np.diff(q.indptr)), q.indices] = q.data
    return dense, np.asarray(q.scale, np.float32)


def pack_layer(W, R, b, br, thr, index_dtype: str = "auto", weight_dtype: str = "f32",
               W_scale=None, R_scale=None) -> dict[str, np.ndarray]:
    """Pack one layer for the fused step (see the module doc for the 4h / 6h accumulator layouts).

    W: dense [n_in, 3h] or input-major CSR triple; R: dense [h, 3h] or triple; b, br: [3h]; thr: [h];
    weight_dtype: f32 / f16 / int8 (int8: triples with int8 data and their W_scale / R_scale [3h], or float
    weights quantized here with quantize-int8's rule). Returns dict with w_ptr, w_idx, w_val, r_ptr, r_idx
    (shifted as the layout says), r_val, bias4 [4h] (f32 / f16) or bias6 + scale6 [6h] (int8), thr."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got {weight_dtype!r}")
    q8 = weight_dtype == "int8"
    thr = np.ascontiguousarray(thr, dtype=np.float32).reshape(-1)
    h = thr.shape[0]
    idt = choose_index_dtype((6 if q8 else 4) * h, index_dtype)
    wp, wi, wv = _as_csr(W, 3 * h, np.int64, keep_int8=q8)
    rp, ri, rv = _as_csr(R, 3 * h, np.int64, keep_int8=q8)
    if len(rp) != h + 1:
        raise ValueError(f"R has {len(rp) - 1} inputs, expected h={h}")
    _check_csr(wp, wi, wv, 3 * h, "W")
    _check_csr(rp, ri, rv, 3 * h, "R")
    b = np.asarray(b, dtype=np.float32).reshape(-1)
    br = np.asarray(br, dtype=np.float32).reshape(-1)
    out = {"thr": thr}
    if q8:
        (wp, wi, wv), sw = quantize_rows(wp, wi, wv, 3 * h, W_scale)
        (rp, ri, rv), sr = quantize_rows(rp, ri, rv, 3 * h, R_scale)
        ri = np.asarray(ri, np.int64) + 3 * h
        out.update(bias6=np.concatenate([b, br]).astype(np.float32),
                   scale6=np.concatenate([sw, sr]).astype(np.float32))
    else:
        ri = np.asarray(ri, np.int64)
        ri = np.where(ri >= 2 * h, ri + h, ri)
        out["bias4"] = np.concatenate([b[:2 * h] + br[:2 * h], b[2 * h:], br[2 * h:]]).astype(np.float32)
    vdt = NP_DTYPES[weight_dtype]
    out.update(w_ptr=np.asarray(wp, np.int32), w_idx=np.asarray(wi).astype(idt), w_val=np.asarray(wv).astype(vdt),
               r_ptr=np.asarray(rp, np.int32), r_idx=ri.astype(idt), r_val=np.asarray(rv).astype(vdt))
    return out
