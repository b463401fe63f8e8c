"""Content checks of the numbers that reach a runner: one validator for every load path.

Checksums only say a file is the one that was sealed; anyone can reseal a forged artifact. So every array a
runner computes with is checked for what it holds, whatever brought it in (project checkpoint, EvNN
state_dict, IR resource file, tvm ``weights.npz``, chip ``program.npz``, onnx initializers):

* `check_array` — a real numeric array (no objects, strings or complex numbers) of the expected kind
  (floating point / integer), shape or rank, with every floating-point value finite in float32, the
  precision every target computes in (a float64 1e39 is finite as stored but infinite once cast).
* `check_sparse` — a `SparseMatrix`'s structure (indptr non-decreasing from 0 to nnz, indices in range,
  per-row scale of int8 data) and values.
* `check_stack` — the weights of an EGRU stack: shapes that fit together, thresholds, and the overflow
  bound: every EGRU state stays in [-1, 1] (c~ is a convex combination of c and tanh, a spike subtracts
  thr in [0, 1] from a c~ above it), so a layer's input is bounded by the embedding's largest entry (layer 0)
  or 1, and output j of ``M·x + b`` by ``sum_i |M_ji|·max|x| + |b_j|``; a bound above `PREACT_LIMIT`
  (float32 max / 16, so a sum of a few such terms stays finite) is refused — e.g. a decoder bias of 3e38,
  which otherwise turns every logit into the same huge number and eval into perplexity 1.

Every problem is a `ContentError` (an `EgruError`: one ``error:`` line) naming the array.
"""
from __future__ import annotations

import numpy as np

from ..errors import EgruError
from .sparse import SparseMatrix

F32_MAX = float(np.finfo(np.float32).max)
#: largest pre-activation bound accepted (see the module docstring)
PREACT_LIMIT = F32_MAX / 16


class ContentError(EgruError):
    """An array holds something no runner may compute with (wrong type or shape, NaN, Inf, overflow)."""


def check_array(a, name: str, *, kind: str = "float", shape: tuple | None = None,
                ndim: int | None = None) -> np.ndarray:
    """`a` as a numpy array after checking it; `kind` is "float" (any floating-point dtype), "int" (any
    integer dtype), "index" (integers >= 0) or "any" (any real numeric or bool dtype); `shape` / `ndim` as
    given (None: any)."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:  # noqa: BLE001 - anything that is not array-like
            raise ContentError(f"{name} is not an array ({type(e).__name__})") from None
    k = a.dtype.kind
    if k == "c":
        raise ContentError(f"{name} holds complex numbers ({a.dtype})")
    if k not in "fiub":
        raise ContentError(f"{name} has dtype {a.dtype}, not a real numeric type")
    want = {"float": "f", "int": "iu", "index": "iu", "any": "fiub"}[kind]
    if k not in want:
        raise ContentError(f"{name} has dtype {a.dtype}, expected "
                           + {"float": "floating point", "int": "integers", "index": "integers"}.get(kind, kind))
    if ndim is not None and a.ndim != ndim:
        raise ContentError(f"{name} has {a.ndim} dimensions {a.shape}, expected {ndim}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ContentError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
    if k == "f" and a.size:
        # finite once rounded to float32: a float64 above float32's max becomes Inf in every target
        if not np.isfinite(a).all() or float(np.abs(a).max()) > F32_MAX:
            raise ContentError(f"{name} contains NaN or Inf (in float32)")
    if kind == "index" and a.size and int(a.min()) < 0:
        raise ContentError(f"{name} holds negative indices")
    return a


def check_sparse(m, name: str, shape: tuple[int, int] | None = None) -> SparseMatrix:
    """`m` as a well-formed `SparseMatrix` (of `shape` when given) with finite values."""
    if not isinstance(m, SparseMatrix):
        raise ContentError(f"{name} is a {type(m).__name__}, not a sparse matrix")
    if shape is not None and tuple(m.shape) != tuple(shape):
        raise ContentError(f"{name} has shape {tuple(m.shape)}, expected {tuple(shape)}")
    n_out, n_in = m.shape
    major, minor = (n_out, n_in) if m.fmt == "csr" else (n_in, n_out)
    indptr = check_array(m.indptr, f"{name} indptr", kind="index", shape=(major + 1,))
    indices = check_array(m.indices, f"{name} indices", kind="index", ndim=1)
    data = check_array(m.data, f"{name} values", kind="any", shape=indices.shape)
    if int(indptr[0]) != 0 or int(indptr[-1]) != len(indices) or np.any(np.diff(indptr) < 0):
        raise ContentError(f"{name}: malformed {m.fmt} (indptr must rise from 0 to nnz)")
    if len(indices) and int(indices.max()) >= minor:
        raise ContentError(f"{name}: index {int(indices.max())} out of range [0, {minor})")
    if data.dtype.kind in "iub" and data.dtype != np.int8:
        raise ContentError(f"{name} values have dtype {data.dtype} (float or int8 with a scale)")
    if data.dtype == np.int8:
        if m.scale is None:
            raise ContentError(f"{name}: int8 values without their per-row scale")
        check_array(m.scale, f"{name} scale", kind="float", shape=(n_out,))
    elif m.scale is not None:
        raise ContentError(f"{name}: a per-row scale given with {data.dtype} values")
    return m


def _abs_row_sums(m, n_out: int) -> np.ndarray:
    """sum_i |M_ji| per output row j of M [n_out, n_in] (dense array or SparseMatrix), in float64."""
    if isinstance(m, SparseMatrix):
        vals = np.abs(m.dequantized_values().astype(np.float64))
        rows = np.repeat(np.arange(n_out), np.diff(m.indptr)) if m.fmt == "csr" else m.indices
        return np.bincount(np.asarray(rows, np.int64), weights=vals, minlength=n_out)
    return np.abs(np.asarray(m, np.float64)).sum(1)


def output_bound(m, bias, x_max: float, n_out: int) -> float:
    """max_j sum_i |M_ji|·x_max + |b_j| (0 for no outputs)."""
    if not n_out:
        return 0.0
    sums = _abs_row_sums(m, n_out) * x_max
    if bias is not None:
        sums = sums + np.abs(np.asarray(bias, np.float64)).reshape(-1)
    return float(sums.max())


def check_bound(name: str, bound: float) -> None:
    if not bound <= PREACT_LIMIT:
        raise ContentError(f"{name} can overflow float32 (|M·x + b| up to {bound:.3g} > {PREACT_LIMIT:.3g}); "
                           "rescale the weights")


def _matrix(m, name: str, shape: tuple[int, int]):
    if isinstance(m, SparseMatrix):
        return check_sparse(m, name, shape)
    return check_array(m, name, kind="float", shape=shape)


def check_stack(where: str, embedding, layers, decoder_weight, decoder_bias, projection=None,
                projection_bias=None) -> None:
    """Check the weights of an EGRU stack (see the module docstring). `layers`: per layer a mapping with
    ``W`` [3h, n_in] and ``R`` [3h, h] (math convention: dense arrays or SparseMatrix), ``b``, ``br`` [3h]
    and ``thr`` [h]; `projection` P [E, h_last] with `projection_bias` [E] (EvNN's projection decoder) or
    None; `decoder_weight` [V, E] (E = h_last without a projection), `decoder_bias` [V]."""
    emb = check_array(embedding, f"{where}: embedding", kind="float", ndim=2)
    if not layers:
        raise ContentError(f"{where}: no layers")
    n_in, x_max = emb.shape[1], float(np.abs(emb).max()) if emb.size else 0.0
    for l, L in enumerate(layers):
        thr = check_array(L["thr"], f"{where}: layer {l} thr", kind="float", ndim=1)
        h = thr.shape[0]
        if h == 0:
            raise ContentError(f"{where}: layer {l} has no units")
        if thr.min() < 0 or thr.max() > 1:
            raise ContentError(f"{where}: layer {l} thresholds lie outside [0, 1]")
        for key, size in (("W", n_in), ("R", h)):
            bias = check_array(L["b" if key == "W" else "br"], f"{where}: layer {l} {key} bias", kind="float",
                               shape=(3 * h,))
            m = _matrix(L[key], f"{where}: layer {l} {key}", (3 * h, size))
            check_bound(f"{where}: layer {l} {key}", output_bound(m, bias, x_max if key == "W" else 1.0, 3 * h))
        n_in, x_max = h, 1.0
    if projection is not None:
        pb = check_array(projection_bias, f"{where}: projection bias", kind="float", ndim=1)
        p = _matrix(projection, f"{where}: projection", (pb.shape[0], n_in))
        x_max = output_bound(p, pb, 1.0, pb.shape[0])          # relu(P·y + p) is bounded by the same sum
        check_bound(f"{where}: projection", x_max)
        n_in = pb.shape[0]
        if n_in != emb.shape[1]:
            raise ContentError(f"{where}: projection gives {n_in} values, the embedding has {emb.shape[1]}")
    db = check_array(decoder_bias, f"{where}: decoder bias", kind="float", ndim=1)
    dw = check_array(decoder_weight, f"{where}: decoder weight", kind="float", shape=(db.shape[0], n_in))
    if dw.shape[0] != emb.shape[0]:
        raise ContentError(f"{where}: decoder predicts {dw.shape[0]} words, the embedding has {emb.shape[0]}")
    check_bound(f"{where}: decoder", output_bound(dw, db, x_max, dw.shape[0]))


# ------------------------------------------------------------------------------------------------ IR graphs
def _data_max(data) -> float:
    if isinstance(data, SparseMatrix):
        vals = data.dequantized_values()
        return float(np.abs(vals).max()) if vals.size else 0.0
    a = np.asarray(data)
    return float(np.abs(a.astype(np.float64)).max()) if a.size and a.dtype.kind in "fiub" else 0.0


def _weight_rows(w, n_out: int, transposed: bool):
    """Per-output abs row sums of the constant weight `w` (a Value) in math convention, or None."""
    p = w.producer
    if p is None or not p.is_const:
        return None
    data = p.attrs["data"]
    if isinstance(data, SparseMatrix):
        return _abs_row_sums(data, n_out) if data.shape[0] == n_out else None
    a = np.asarray(data, np.float64)
    if a.ndim != 2:
        return None
    m = a.T if transposed else a
    return np.abs(m).sum(1) if m.shape[0] == n_out else None


def check_graph_bounds(graph, where: str) -> None:
    """Refuse a step graph (an IR file) in which a value can overflow float32: interval bounds of
    max|value| through the graph from the recurrent states (in [-1, 1], see the module docstring) and
    the constants; a matrix product is bounded by its weight's abs row sums (constant weights) or
    inner size × max|w| × max|x|. Any bound above `PREACT_LIMIT` is a ContentError naming the value."""
    bound: dict = {}
    for v in graph.inputs:
        bound[v] = 1.0 if v.meta.get("role") == "state_in" else 0.0
    for n in graph.nodes:
        b = [bound.get(v, 0.0) for v in n.inputs]
        op = n.op
        if op == "const":
            out = [_data_max(n.attrs["data"])]
        elif op in ("sigmoid", "tanh", "heaviside", "greater", "egru_cell"):
            out = [1.0] * len(n.outputs)
        elif op in ("add", "sub"):
            out = [b[0] + b[1]]
        elif op == "mul":
            out = [b[0] * b[1]]
        elif op in ("matmul", "linear", "sparse_matvec", "event_matvec"):
            x_b = b[1] if op == "event_matvec" else b[0]
            w = n.inputs[3] if op == "event_matvec" else n.inputs[1]
            bias_b = b[-1] if len(n.inputs) == {"matmul": 3, "linear": 3, "sparse_matvec": 3, "event_matvec": 5}[op] \
                else 0.0
            n_out = n.outputs[0].type.shape[-1]
            rows = _weight_rows(w, n_out, transposed=op == "matmul")
            if rows is not None and rows.size:
                out = [float(rows.max()) * x_b + bias_b]
            else:
                inner = n.inputs[0].type.shape[-1] if op != "event_matvec" else n.inputs[1].type.shape[-1]
                out = [inner * bound.get(w, 0.0) * x_b + bias_b]
        elif op == "clamp":
            lo, hi = n.attrs.get("min"), n.attrs.get("max")
            out = [b[0] if lo is None or hi is None else min(b[0], max(abs(lo), abs(hi)))]
        elif op == "compress_events":
            out = [0.0, b[0], 0.0]
        else:        # embedding, relu, cast, transpose, split, concat (and ops of extensions): the largest input
            out = [max(b, default=0.0)] * len(n.outputs)
        for v, x in zip(n.outputs, out):
            if v.type.dtype in ("f32", "f64") and not x <= PREACT_LIMIT:
                raise ContentError(f"{where}: %{v.name} ({op}) can overflow float32 (|value| up to {x:.3g} > "
                                   f"{PREACT_LIMIT:.3g}); rescale the weights")
            bound[v] = x


def check_graph_content(graph, where: str) -> None:
    """Every constant of `graph` through `check_array` / `check_sparse`, then `check_graph_bounds`: the check
    a graph from any source (IR file, traced checkpoint, pickled module, exported program) passes before a
    target compiles it or a runner evaluates it."""
    for n in graph.nodes:
        if n.is_const:
            data, name = n.attrs.get("data"), f"{where}: constant %{n.outputs[0].name}"
            if isinstance(data, SparseMatrix):
                check_sparse(data, name)
            else:
                check_array(data, name, kind="any")
    check_graph_bounds(graph, where)
