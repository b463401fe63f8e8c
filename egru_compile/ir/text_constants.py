"""Constants in the IR text (the parser's half; `printer.py` writes them): inline ``dense<[...]>`` /
``sparse<fmt, indptr=[...], ...>`` payloads, and ``dense_resource<NAME>`` / ``sparse_resource<NAME, fmt,
nnz=N[, scale]>`` references into the resource file. Every array is checked against the declared type:
dtype (no silent casts), shape, finite values, and for sparse matrices a consistent structure (indptr
non-decreasing from 0 to nnz, indices in range, one scale per output row).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .content import ContentError, check_array, check_sparse
from .sparse import SPARSE_PARTS, SparseMatrix
from .types import TensorType


class ConstantReader:
    """Reads constant payloads from a parser line (`lexer.Line`) and the resource arrays."""

    def __init__(self, resources: Mapping | None, resource_file: str | None):
        self.resources = resources
        self.resource_file = resource_file or "the resource file"
        self.uses_resources = False

    def resource(self, ln, key: str, col: int) -> np.ndarray:
        self.uses_resources = True
        if self.resources is None:
            ln.fail(f"refers to resource {key!r}, but there is no resource file"
                    + (f" ({self.resource_file})" if self.resource_file != "the resource file" else ""), col)
        try:
            arr = self.resources[key]
        except KeyError:
            ln.fail(f"resource {key!r} is missing from {self.resource_file}", col)
        except Exception as e:  # noqa: BLE001 - a corrupt member of the archive
            ln.fail(f"resource {key!r} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                    col)
        return np.asarray(arr)

    @staticmethod
    def values(ln, items, dtype, col) -> np.ndarray:
        """A flat list of numbers from the text as a 1-D array of `dtype` (no truncation, no overflow)."""
        kind = np.dtype(dtype).kind
        ok = {"f": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
              "i": lambda x: isinstance(x, int) and not isinstance(x, bool),
              "b": lambda x: isinstance(x, bool)}[kind]
        bad = [x for x in items if not ok(x)][:1] if isinstance(items, list) else [items]
        if bad:
            want = {"f": "numbers", "i": "integers", "b": "true/false"}[kind]
            found = "none" if bad[0] is None else repr(bad[0])
            ln.fail(f"expected a flat list of {want} for {np.dtype(dtype).name}, found {found}", col)
        try:
            return np.array(items, dtype=dtype)
        except (OverflowError, ValueError) as e:
            ln.fail(f"values do not fit {np.dtype(dtype).name}: {e}", col)

    def check_array(self, ln, key, arr, dtype, shape, col):
        if arr.dtype != np.dtype(dtype):
            ln.fail(f"{key}: dtype {arr.dtype} does not match the declared {np.dtype(dtype).name}", col)
        if shape is not None and tuple(arr.shape) != tuple(shape):
            ln.fail(f"{key}: shape {tuple(arr.shape)} does not match the declared {tuple(shape)}", col)
        try:
            check_array(arr, key, kind="any")
        except ContentError as e:
            ln.fail(str(e), col)

    def payload(self, ln, name: str):
        """Returns a callable type -> data (the type comes after the payload)."""
        col = ln.peek()[2]
        kind = ln.take("word", what="a constant payload (dense, dense_resource, sparse, sparse_resource)")
        ln.take("punct", "<")
        if kind == "dense":
            lcol = ln.peek()[2]
            if not ln.at("["):
                ln.fail("expected a [list] of values")
            items = ln.attr_value()
            ln.take("punct", ">")

            def build(t: TensorType):
                flat = self.values(ln, items, t.np_dtype, lcol)
                if len(flat) != t.numel:
                    ln.fail(f"dense constant has {len(flat)} values, type {t} needs {t.numel}", lcol)
                arr = flat.reshape(t.shape)
                self.check_array(ln, "dense constant", arr, t.np_dtype, t.shape, lcol)
                return arr
            return build
        if kind == "dense_resource":
            kcol = ln.peek()[2]
            key = ln.take("word", what="a resource name")
            ln.take("punct", ">")
            if key != name:
                ln.fail(f"resource name {key!r} must be the constant's name {name!r}", kcol)

            def build(t: TensorType):
                arr = self.resource(ln, key, kcol)
                self.check_array(ln, key, arr, t.np_dtype, t.shape, kcol)
                return arr
            return build
        if kind in ("sparse", "sparse_resource"):
            parts: dict = {}
            nnz = None
            if kind == "sparse_resource":
                kcol = ln.peek()[2]
                key = ln.take("word", what="a resource name")
                if key != name:
                    ln.fail(f"resource name {key!r} must be the constant's name {name!r}", kcol)
                ln.take("punct", ",")
            fcol = ln.peek()[2]
            fmt = ln.take("word", what="csr or csc")
            if fmt not in ("csr", "csc"):
                ln.fail(f"sparse format must be csr or csc, found {fmt!r}", fcol)
            want_scale = False
            while ln.accept(","):
                pcol = ln.peek()[2]
                pk = ln.take("word", what="a sparse field")
                if kind == "sparse" and pk in SPARSE_PARTS and pk not in parts:
                    ln.take("punct", "=")
                    parts[pk] = (ln.attr_value(), pcol)
                elif kind == "sparse_resource" and pk == "nnz" and nnz is None:
                    ln.take("punct", "=")
                    nnz = ln.scalar()
                    if not isinstance(nnz, int):
                        ln.fail("nnz must be an integer", pcol)
                elif kind == "sparse_resource" and pk == "scale" and not want_scale:
                    want_scale = True
                else:
                    ln.fail(f"unexpected sparse field {pk!r}", pcol)
            ln.take("punct", ">")
            if kind == "sparse" and not {"indptr", "indices", "data"} <= set(parts):
                ln.fail("sparse constant needs indptr, indices and data", fcol)
            if kind == "sparse_resource" and nnz is None:
                ln.fail("sparse_resource needs nnz=N", fcol)

            def build(t: TensorType):
                if len(t.shape) != 2 or t.dtype not in ("f32", "i8"):
                    ln.fail(f"a sparse constant's type must be a 2-D f32 or i8 tensor, found {t}", fcol)
                dt = {"indptr": np.int64, "indices": np.int64, "data": t.np_dtype, "scale": np.float32}
                arrs = {}
                for pk in SPARSE_PARTS:
                    if kind == "sparse":
                        if pk not in parts:
                            continue
                        vals, pcol = parts[pk]
                        arrs[pk] = self.values(ln, vals, dt[pk], pcol)
                    else:
                        if pk == "scale" and not want_scale:
                            continue
                        arr = self.resource(ln, f"{name}.{pk}", kcol)
                        if pk in ("indptr", "indices") and arr.dtype.kind in "iu":
                            arr = arr.astype(np.int64)
                        self.check_array(ln, f"{name}.{pk}", arr, dt[pk], None, kcol)
                        if arr.ndim != 1:
                            ln.fail(f"{name}.{pk} must be 1-D", kcol)
                        arrs[pk] = arr
                return self.sparse(ln, t, fmt, arrs, nnz, fcol)
            return build
        ln.fail(f"unknown constant payload {kind!r} (dense, dense_resource, sparse, sparse_resource)", col)

    def sparse(self, ln, t, fmt, a, nnz, col) -> SparseMatrix:
        n_out, n_in = t.shape
        major, minor = (n_out, n_in) if fmt == "csr" else (n_in, n_out)
        indptr, indices, data = a["indptr"], a["indices"], a["data"]
        if len(indptr) != major + 1 or indptr[0] != 0 or np.any(np.diff(indptr) < 0) \
                or indptr[-1] != len(indices) or len(indices) != len(data):
            ln.fail(f"sparse {fmt} structure does not fit {t} (indptr, indices, data disagree)", col)
        if len(indices) and (indices.min() < 0 or indices.max() >= minor):
            ln.fail(f"sparse indices out of range for {t}", col)
        if nnz is not None and nnz != len(data):
            ln.fail(f"nnz={nnz} but the resource holds {len(data)} values", col)
        scale = a.get("scale")
        if scale is not None:
            if scale.shape != (n_out,):
                ln.fail(f"scale has {scale.shape[0]} entries, the matrix has {n_out} rows", col)
        m = SparseMatrix((n_out, n_in), fmt, indptr, indices, data, scale)
        try:
            return check_sparse(m, "sparse data")
        except ContentError as e:
            ln.fail(str(e), col)
