"""One sparse codec (`ir.sparse`: SparseMatrix <-> npz arrays) for the IR resource files and the targets'
weight files: round trips through a real .npz (csr / csc, float and int8 with scales), the key layout each file
format documents (``NAME.indptr`` ... in an IR resource file; ``KEY_indptr`` ... plus ``KEY_shape`` /
``KEY_fmt`` with the layout), and an IR file whose large sparse constant lives in its resource file."""
from __future__ import annotations

import numpy as np
import pytest

from egru_compile.ir import SparseMatrix
from egru_compile.ir.sparse import SPARSE_PARTS, part_arrays, read_parts, sparse_from_arrays, sparse_to_arrays


def _matrix(fmt: str, int8: bool) -> SparseMatrix:
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(7, 5)) * (rng.random((7, 5)) < 0.4)
    if not int8:
        return SparseMatrix.from_dense(dense.astype(np.float32), fmt)
    q = np.clip(np.round(dense * 40), -127, 127).astype(np.int8)
    m = SparseMatrix.from_dense(q.astype(np.float32), fmt)
    return SparseMatrix(m.shape, fmt, m.indptr, m.indices, m.data.astype(np.int8),
                        rng.uniform(0.01, 0.1, 7).astype(np.float32))


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("sep", ["_", "."])
def test_round_trip_through_npz(tmp_path, fmt, int8, sep):
    m = _matrix(fmt, int8)
    with open(tmp_path / "w.npz", "wb") as f:
        np.savez(f, **sparse_to_arrays(m, "l0_W", sep=sep, layout=True), other=np.arange(3))
    with np.load(tmp_path / "w.npz", allow_pickle=False) as z:
        keys = set(z.files)
        back = sparse_from_arrays(z, "l0_W", sep=sep)
    want = {f"l0_W{sep}{p}" for p in SPARSE_PARTS if p != "scale" or int8} | {f"l0_W{sep}shape", f"l0_W{sep}fmt"}
    assert keys == want | {"other"}
    assert back.shape == m.shape and back.fmt == fmt and back.data.dtype == m.data.dtype
    np.testing.assert_array_equal(back.to_dense(), m.to_dense())      # dequantized when int8
    for p in SPARSE_PARTS:
        a, b = getattr(m, p), getattr(back, p)
        assert (a is None and b is None) or np.array_equal(a, b)


def test_parts_without_layout_and_missing_part():
    arrays = part_arrays("projection", indptr=[0, 1], indices=[0], data=np.array([2.0], np.float32), scale=None)
    assert sorted(arrays) == ["projection_data", "projection_indices", "projection_indptr"]
    assert sorted(read_parts(arrays, "projection")) == ["data", "indices", "indptr"]
    del arrays["projection_indices"]
    with pytest.raises(KeyError):
        read_parts(arrays, "projection")
    with pytest.raises(ValueError, match="unknown sparse part"):
        part_arrays("x", values=[1.0])


def test_ir_resource_file_uses_the_codec(tmp_path):
    """A sparse constant too large to print inline goes to FILE.npz as NAME.indptr/.indices/.data/.scale and
    reads back equal."""
    from egru_compile.frontend.ir_source import write_ir
    from egru_compile.ir.parser import parse_ir
    rng = np.random.default_rng(1)
    dense = (rng.normal(size=(40, 30)) * (rng.random((40, 30)) < 0.5)).astype(np.float32)
    m0 = SparseMatrix.from_dense(dense, "csr")
    fmt = lambda a: "[" + ", ".join(repr(float(v)) if isinstance(v, np.floating) else str(int(v)) for v in a) + "]"
    text = ("// egru-ir v1\n"
            "graph @step(%x: tensor<1x30xf32>) {\n"
            f"  %w = const sparse<csr, indptr={fmt(m0.indptr)}, indices={fmt(m0.indices)}, data={fmt(m0.data)}> "
            ": tensor<40x30xf32>\n"
            "  %y = sparse_matvec(%x, %w) : tensor<1x40xf32>\n"
            "  return %y: tensor<1x40xf32> {logits}\n}\n")
    g = parse_ir(text).graph
    write_ir(tmp_path / "m.egir", g)
    assert "sparse_resource<w, csr" in (tmp_path / "m.egir").read_text()
    with np.load(tmp_path / "m.egir.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["w.data", "w.indices", "w.indptr"]
        m = sparse_from_arrays(z, "w", sep=".", shape=dense.shape, fmt="csr")
    np.testing.assert_array_equal(m.to_dense(), dense)
    (node,) = [n for n in parse_ir((tmp_path / "m.egir").read_text(), np.load(tmp_path / "m.egir.npz")).graph.nodes
               if n.is_const]
    np.testing.assert_array_equal(node.attrs["data"].to_dense(), dense)
