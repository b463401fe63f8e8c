"""Sparse weight constants.

A `SparseMatrix` holds the math-convention matrix M [n_out, n_in] (y = M @ x) of a weight with its zeros
removed. For a kernel W [in, out] used as `x @ W`, M = W.T.

* ``csr``: rows are output units — ``indptr`` has n_out + 1 entries, ``indices`` are input (column) ids.
* ``csc``: columns are presynaptic (input) units — ``indptr`` has n_in + 1 entries, ``indices`` are output
  (row) ids. This is the form event-driven code needs: an active input unit touches only its column.

Within each row/column indices are sorted ascending; explicit zeros are never stored.

Shapes of weight matrices print one way in every human-readable view (`inspect` of a checkpoint or an
artifact, report.txt, the compiled IR's ``tensor<RxC>`` of a sparse constant): `SHAPE_CONVENTION`, i.e.
``OUTxIN`` as M above (`fmt_matrix_shape`). A checkpoint stores EvNN's kernel W [in, out] (the transpose), as do
the dense ``tensor<INxOUT>`` constants of the IR imported before ``fuse-gates``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


#: the one convention of printed weight shapes (see the module docstring)
SHAPE_CONVENTION = "out x in (rows: output units, columns: input units, as y = M @ x)"


def fmt_matrix_shape(n_out: int, n_in: int) -> str:
    """A weight matrix's shape as every human-readable view prints it: ``OUTxIN`` (`SHAPE_CONVENTION`)."""
    return f"{int(n_out)}x{int(n_in)}"


@dataclass(eq=False)
class SparseMatrix:
    shape: tuple[int, int]          # (n_out, n_in)
    fmt: str                         # "csr" or "csc"
    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    scale: np.ndarray | None = field(default=None)  # per-output-row dequantisation scale (int8 data)

    def __post_init__(self):
        if self.fmt not in ("csr", "csc"):
            raise ValueError(f"unknown sparse format {self.fmt!r}")
        major = self.shape[0] if self.fmt == "csr" else self.shape[1]
        if len(self.indptr) != major + 1:
            raise ValueError(f"{self.fmt} indptr has {len(self.indptr)} entries, expected {major + 1}")
        if self.indptr[-1] != len(self.indices) or len(self.indices) != len(self.data):
            raise ValueError("sparse indptr/indices/data disagree")

    @property
    def nnz(self) -> int:
        return int(len(self.data))

    @property
    def density(self) -> float:
        total = self.shape[0] * self.shape[1]
        return self.nnz / total if total else 0.0

    @property
    def dtype(self) -> str:
        return "i8" if self.data.dtype == np.int8 else "f32"

    @classmethod
    def from_dense(cls, m: np.ndarray, fmt: str = "csc") -> "SparseMatrix":
        """Build from a dense M [n_out, n_in], dropping exact zeros."""
        m = np.asarray(m)
        major = np.ascontiguousarray(m if fmt == "csr" else m.T)   # (a view when m.T of a transposed array)
        flat = np.flatnonzero(major)            # row-major order: sorted by major, then minor
        n_minor = major.shape[1]
        rows = flat // n_minor if n_minor else flat
        cols = flat - rows * n_minor
        counts = np.bincount(rows, minlength=major.shape[0])
        indptr = np.zeros(major.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls((m.shape[0], m.shape[1]), fmt, indptr, cols.astype(np.int64),
                   major.reshape(-1)[flat].astype(m.dtype, copy=True))

    def dequantized_values(self) -> np.ndarray:
        """Values as float32 (applies the per-output-row scale of int8 data)."""
        if self.scale is None:
            return self.data.astype(np.float32)
        if self.fmt == "csr":
            rows = np.repeat(np.arange(self.shape[0]), np.diff(self.indptr))
        else:
            rows = self.indices
        return self.data.astype(np.float32) * self.scale[rows]

    def to_dense(self) -> np.ndarray:
        m = np.zeros(self.shape, dtype=np.float32)
        major = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        vals = self.dequantized_values()
        if self.fmt == "csr":
            m[major, self.indices] = vals
        else:
            m[self.indices, major] = vals
        return m

    def convert(self, fmt: str) -> "SparseMatrix":
        if fmt == self.fmt:
            return self
        out = SparseMatrix.from_dense(self.to_dense() if self.scale is None else self._raw_dense(), fmt)
        out.scale = self.scale
        return out

    def _raw_dense(self) -> np.ndarray:
        m = np.zeros(self.shape, dtype=self.data.dtype)
        major = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        if self.fmt == "csr":
            m[major, self.indices] = self.data
        else:
            m[self.indices, major] = self.data
        return m

    # Cached views for interpreters (a SparseMatrix is immutable once built).
    def cached_dense(self) -> np.ndarray:
        if getattr(self, "_dense", None) is None:
            self._dense = self.to_dense()
        return self._dense

    def cached_csc(self) -> "SparseMatrix":
        if self.fmt == "csc":
            return self
        if getattr(self, "_csc", None) is None:
            self._csc = self.convert("csc")
        return self._csc

    def cached_values(self) -> np.ndarray:
        if getattr(self, "_values", None) is None:
            self._values = self.dequantized_values()
        return self._values

    def cached_columns(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Column-block (ELL) layout of the CSC form for event-driven products: (rows int32 [n_in, L],
        values float32 [n_in, L]) with column i's row ids / dequantized values in its first nnz_i slots in
        CSC order, padded with row 0 / value 0 to L = the largest fan-out; None when the padding would
        exceed half the non-zeros (very uneven fan-outs: use the CSC arrays)."""
        if getattr(self, "_columns", False) is False:
            csc = self.cached_csc()
            lens = np.diff(csc.indptr)
            L = int(lens.max()) if len(lens) else 0
            self._columns = None
            if L and lens.size * L <= 1.5 * csc.nnz and self.shape[0] < 2 ** 31:
                col = np.repeat(np.arange(lens.size), lens)
                pos = np.arange(csc.nnz) - np.repeat(csc.indptr[:-1], lens)
                rows = np.zeros((lens.size, L), np.int32)
                vals = np.zeros((lens.size, L), np.float32)
                rows[col, pos] = csc.indices
                vals[col, pos] = csc.dequantized_values()
                self._columns = (rows, vals)
        return self._columns

    def column_nnz(self) -> np.ndarray:
        """Non-zero fan-out of each input unit (length n_in)."""
        if self.fmt == "csc":
            return np.diff(self.indptr)
        return np.bincount(self.indices, minlength=self.shape[1])

    def describe(self) -> str:
        q = ", scale" if self.scale is not None else ""
        return (f"sparse<{fmt_matrix_shape(*self.shape)}, {self.fmt}, nnz={self.nnz}, "
                f"density={self.density:.4f}{q}>")


# ------------------------------------------------------------------------------------------------ npz codec
#: the arrays of a sparse matrix in an .npz file, each stored as ``KEY{sep}PART`` (``scale``: int8 matrices
#: only); with its layout also ``KEY{sep}shape`` and ``KEY{sep}fmt``. The IR's resource files use sep ".",
#: the targets' weight files "_".
SPARSE_PARTS = ("indptr", "indices", "data", "scale")


def sparse_parts(m: SparseMatrix) -> list[tuple[str, np.ndarray]]:
    """(part, array) of `m` in `SPARSE_PARTS` order, ``scale`` only when `m` has one."""
    return [(p, a) for p, a in zip(SPARSE_PARTS, (m.indptr, m.indices, m.data, m.scale)) if a is not None]


def part_arrays(key: str, sep: str = "_", **parts) -> dict[str, np.ndarray]:
    """``{KEY{sep}PART: array}`` of the given parts (`SPARSE_PARTS`; None values left out)."""
    unknown = set(parts) - set(SPARSE_PARTS)
    if unknown:
        raise ValueError(f"unknown sparse part(s) {sorted(unknown)}")
    return {f"{key}{sep}{p}": np.asarray(parts[p]) for p in SPARSE_PARTS if parts.get(p) is not None}


def sparse_to_arrays(m: SparseMatrix, key: str, sep: str = "_", layout: bool = False) -> dict[str, np.ndarray]:
    """The npz arrays of `m` under `key`; `layout` adds its shape and format (files that do not say them
    elsewhere)."""
    out = part_arrays(key, sep, **dict(sparse_parts(m)))
    if layout:
        out[f"{key}{sep}shape"] = np.array(m.shape)
        out[f"{key}{sep}fmt"] = np.array(m.fmt)
    return out


def read_parts(z, key: str, sep: str = "_") -> dict[str, np.ndarray]:
    """The parts stored under `key` in `z` (an ``np.load``-ed npz or a dict): indptr, indices and data (a
    KeyError names a missing one), scale when present."""
    out = {p: z[f"{key}{sep}{p}"] for p in SPARSE_PARTS[:3]}
    if f"{key}{sep}scale" in z:
        out["scale"] = z[f"{key}{sep}scale"]
    return out


def sparse_from_arrays(z, key: str, sep: str = "_", shape=None, fmt: str | None = None) -> SparseMatrix:
    """The inverse of `sparse_to_arrays`: shape and format from the arguments, else from the file."""
    shape = tuple(int(s) for s in (shape if shape is not None else z[f"{key}{sep}shape"]))
    fmt = str(fmt if fmt is not None else z[f"{key}{sep}fmt"])
    return SparseMatrix(shape, fmt, **read_parts(z, key, sep))
