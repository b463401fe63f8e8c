"""How the ONNX lowering stores constants: initializers deduplicated by content (`content_key`), 2-D float arrays as CSR
initializers when smaller than dense (expanded at load time by ``ai.egru.SparseWeight*``), a weight matrix M
[n_out, n_in] as its transpose WT [n_in, n_out] (the rows an event-gated product gathers), int8 weights with
their per-output-row scale. A mixin of `lower._Lowering`, which provides ``init``, ``ints``, ``node``, ``fn``,
``const_of``, ``const_name`` and the ``stored`` / ``weights`` / ``stats`` tables."""
from __future__ import annotations

import hashlib

import numpy as np
from onnx import TensorProto, helper

from ...ir import SparseMatrix, Value
from ...passes.utils import sanitize
from .options import ONNX_DTYPES


def _san(name) -> str:
    return sanitize(str(name))


def _idx_dtype(limit: int):
    return np.int16 if limit <= np.iinfo(np.int16).max else (np.int32 if limit <= np.iinfo(np.int32).max
                                                              else np.int64)


def content_key(data) -> tuple:
    """A key equal for two constants exactly when they hold the same values: kind, dtype, shape and a digest
    of the bytes of every array (a SparseMatrix: its format, shape, index / value / scale arrays)."""
    if isinstance(data, SparseMatrix):
        parts = [data.indptr, data.indices, data.data] + ([] if data.scale is None else [data.scale])
        return ("sparse", data.fmt, tuple(data.shape), data.scale is None) + tuple(content_key(a) for a in parts)
    a = np.ascontiguousarray(data)
    return ("array", a.dtype.str, a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest())


class WeightStorage:
    """Constant and weight storage of one lowering (see the module doc)."""

    def store(self, data, hint: str) -> str:
        """Initializer(s) holding constant `data`; 2-D float arrays sparse when smaller. Deduplicated by
        content."""
        key = content_key(data)
        if key in self.stored:
            return self.stored[key]
        if isinstance(data, SparseMatrix):
            name = self._store_sparse_matrix_as_wt(data, hint)
        else:
            a = np.asarray(data)
            if a.dtype == np.float64:
                a = a.astype(np.float32)
            if a.ndim == 2 and a.dtype == np.float32 and self.o.sparse_storage and a.size >= 64:
                name = self._maybe_sparse_dense(a, hint)
            else:
                name = self.init(a, hint)
        self.stored[key] = name
        return name

    def _csr_inits(self, indptr, indices, values, shape, hint, scale=None, op=None) -> str:
        """Initializers of a CSR matrix [shape] and the ``SparseWeight*`` op expanding it at load time
        (`op` default: SparseWeightQ with `scale`, else SparseWeight); an all-zero matrix is a
        ConstantOfShape of the values' dtype."""
        values = np.asarray(values)
        nnz = int(len(values))
        if nnz == 0:
            zero = helper.make_tensor("v", ONNX_DTYPES["i8" if op == "SparseWeightI8" else "f32"], [1], [0])
            return self.node("ConstantOfShape", [self.ints(list(shape), f"{hint}_shape")], hint=hint, value=zero)[0]
        ip = np.asarray(indptr).astype(_idx_dtype(max(nnz, 1)))
        ix = np.asarray(indices).astype(_idx_dtype(max(int(shape[1]) - 1, 1)))
        args = [self.init(ip, f"{hint}_indptr"), self.init(ix, f"{hint}_indices"), self.init(values, f"{hint}_values")]
        if scale is not None:
            args.append(self.init(np.asarray(scale, np.float32), f"{hint}_scale"))
        args.append(self.ints(list(shape), f"{hint}_shape"))
        op = op or ("SparseWeightQ" if scale is not None else "SparseWeight")
        return self.fn(op, args, hint=f"{hint}_dense")[0]

    def _maybe_sparse_dense(self, a: np.ndarray, hint: str) -> str:
        rows, cols = a.shape
        nnz = int(np.count_nonzero(a))
        ib = np.dtype(_idx_dtype(max(cols - 1, 1))).itemsize
        sparse_bytes = nnz * (4 + ib) + (rows + 1) * np.dtype(_idx_dtype(max(nnz, 1))).itemsize + 16
        self.stats["weights"].append({"name": hint, "shape": [rows, cols], "nnz": nnz,
                                      "stored": "csr" if sparse_bytes < a.nbytes else "dense"})
        if sparse_bytes >= a.nbytes:
            return self.init(a, hint)
        r, c = np.nonzero(a)
        indptr = np.zeros(rows + 1, np.int64)
        np.cumsum(np.bincount(r, minlength=rows), out=indptr[1:])
        return self._csr_inits(indptr, c, a[r, c].astype(np.float32), (rows, cols), hint)

    def _store_sparse_matrix_as_wt(self, m: SparseMatrix, hint: str) -> str:
        """A SparseMatrix M [n_out, n_in] -> the name of WT = Mᵀ [n_in, n_out] (dense f32 at load time)."""
        csc = m.convert("csc")
        n_out, n_in = m.shape
        self.stats["weights"].append({"name": hint, "shape": [n_out, n_in], "nnz": m.nnz, "stored": "csc",
                                      "dtype": m.dtype})
        data = csc.data if csc.scale is not None else np.asarray(csc.data, np.float32)
        return self._csr_inits(csc.indptr, csc.indices, data, (n_in, n_out), hint, scale=csc.scale)

    def weight_t(self, node, w: Value, dtype: str = "f32") -> str:
        """WT [n_in, n_out] of the matvec `node`'s constant weight `w`, as dtype ("f32"/"f16")."""
        data = self.const_of(w)
        layout = "wt" if (isinstance(data, SparseMatrix) or node.op == "matmul") else "m"
        key = (content_key(data), layout, dtype)
        if key in self.weights:
            return self.weights[key]
        base = self.const_name(w)
        name = base
        if layout == "m":
            name = self.node("Transpose", [base], hint=f"{base}_T", perm=[1, 0])[0]
        if dtype == "f16":
            name = self.node("Cast", [name], hint=f"{name}_f16", to=TensorProto.FLOAT16)[0]
        self.weights[key] = name
        return name

    def weight_q8(self, w: Value, allow_dense: bool = False) -> tuple[str, str]:
        """(WT int8 [n_in, n_out], scale f32 [n_out]) of an int8 SparseMatrix weight; with `allow_dense` (the
        int8 decoder: a dense matrix) a plain int8 initializer when that is smaller than its CSR."""
        m = self.const_of(w)
        key = (content_key(m), "q8")
        if key not in self.weights:
            csc = m.convert("csc")
            n_out, n_in = m.shape
            hint = _san((w.producer.attrs.get("label") if w.producer is not None and w.producer.is_const else None)
                        or w.name)
            ib = np.dtype(_idx_dtype(max(n_out - 1, 1))).itemsize
            if not allow_dense or m.nnz * (1 + ib) < n_in * n_out:     # CSR of WT, expanded at load
                wt = self._csr_inits(csc.indptr, csc.indices, np.asarray(csc.data, np.int8), (n_in, n_out), hint,
                                     op="SparseWeightI8")
                stored = "csc"
            else:
                dense = np.zeros((n_in, n_out), np.int8)
                dense[np.repeat(np.arange(n_in), np.diff(csc.indptr)), csc.indices] = csc.data
                wt, stored = self.init(dense, f"{hint}_dense"), "dense"
            self.stats["weights"].append({"name": hint, "shape": [n_out, n_in], "nnz": m.nnz, "stored": stored,
                                          "dtype": "i8"})
            sc = self.init(np.asarray(m.scale, np.float32).reshape(-1), f"{hint}_scale")
            self.weights[key] = (wt, sc)
        return self.weights[key]
