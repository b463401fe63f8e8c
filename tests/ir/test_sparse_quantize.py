"""SparseMatrix.from_dense and quantize_matrix against dense numpy references (both formats, any layout)."""
from __future__ import annotations

import numpy as np
import pytest

from egru_compile.ir import SparseMatrix
from egru_compile.passes import quantize_matrix


def _dense(seed, shape=(37, 23), density=0.3):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal(shape).astype(np.float32)
    m[rng.random(shape) > density] = 0
    m[3] = 0                                   # an empty row and column
    m[:, 5] = 0
    return m


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("transposed", [False, True])
def test_from_dense_roundtrip_and_order(fmt, transposed):
    d = _dense(1)
    src = np.ascontiguousarray(d.T).T if transposed else d     # a non-contiguous view of the same matrix
    m = SparseMatrix.from_dense(src, fmt)
    np.testing.assert_array_equal(m.to_dense(), d)
    assert m.nnz == np.count_nonzero(d) and m.data.dtype == np.float32
    major = d if fmt == "csr" else d.T
    for i in range(major.shape[0]):
        idx = m.indices[m.indptr[i]:m.indptr[i + 1]]
        np.testing.assert_array_equal(idx, np.flatnonzero(major[i]))          # ascending, exact non-zeros
        np.testing.assert_array_equal(m.data[m.indptr[i]:m.indptr[i + 1]], major[i][idx])


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_quantize_matrix_matches_dense_reference(fmt):
    d = _dense(2)
    d[7, 2] = 1e-4                             # rounds to 0 against its row's max: dropped
    d[7, 4] = 3.0
    q = quantize_matrix(SparseMatrix.from_dense(d, fmt))
    absmax = np.abs(d).max(axis=1)
    scale = (absmax / np.float32(127.0)).astype(np.float32)
    scale[scale == 0] = 1.0
    ref = np.clip(np.rint(d / scale[:, None]), -127, 127).astype(np.int8)
    assert q.fmt == fmt and q.data.dtype == np.int8
    np.testing.assert_array_equal(q.scale, scale)
    np.testing.assert_array_equal(q._raw_dense(), ref)
    assert q.nnz == np.count_nonzero(ref) < np.count_nonzero(d)
    np.testing.assert_array_equal(q.to_dense(), ref.astype(np.float32) * scale[:, None])
