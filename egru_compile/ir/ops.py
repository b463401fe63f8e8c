"""Op definitions: for each IR op, its type rule, its reference (numpy) semantics and its signature.

Frontend ops mirror the ATen subset an EGRU step uses; compiler ops (``sparse_matvec``,
``compress_events``, ``event_matvec``, ``egru_cell``) are introduced by passes. The numpy functions here
*define* what each op means; every target must agree with them.

The signature of an op is its number of operands (``arity``: least and most) and the attributes it takes
(``attrs``: name -> checker of the value, required or optional); the annotation attributes passes attach
to any op (`ANNOTATIONS`: ``label``, ``layer``, ``role``, ...) are allowed everywhere. `infer_types` checks
the signature before the type rule, so the parser, the verifier and `Graph.op` all refuse a unary op given
two operands, an unknown attribute, or a value out of range (``clamp {max=nan}``, a split axis beyond the
rank). The signature machinery (`Attr`, `OpDef`, `ANNOTATIONS`, `OpError`) lives in `op_signature` and is
re-exported here.
"""
from __future__ import annotations

import numpy as np

from .op_signature import (  # noqa: F401  (ANNOTATIONS, Attr, OpDef, OpError: re-exported)
    ANNOTATIONS, Attr, OpDef, OpError, _data, _dtype, _finite_or_none, _int, _sizes,
)
from .sparse import SparseMatrix
from .types import TensorType

__all__ = ["ANNOTATIONS", "Attr", "OPS", "OpDef", "OpError", "infer_types"]


OPS: dict[str, OpDef] = {}


def _op(name: str, arity: tuple[int, int | None], doc: str = "", **attrs: Attr):
    def wrap(cls):
        OPS[name] = OpDef(name, cls.infer, cls.compute, doc or (cls.__doc__ or "").strip(), arity, dict(attrs))
        return cls
    return wrap


def infer_types(op: str, in_types: list[TensorType], attrs: dict) -> list[TensorType]:
    """The result types of `op` on operands of `in_types` with `attrs`; OpError when the op is unknown, its
    signature (operand count, attribute names and values) does not fit, or the types break its rule."""
    if op not in OPS:
        raise OpError(f"unknown IR op {op!r}")
    OPS[op].check_signature(len(in_types), attrs)
    return OPS[op].infer(in_types, attrs)


def _axis(axis: int, rank: int, op: str) -> int:
    if not -rank <= axis < rank:
        raise OpError(f"{op} axis {axis} is out of range for rank {rank}")
    return axis % rank


def _broadcast(a: tuple, b: tuple) -> tuple:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError as e:
        raise OpError(f"shapes {a} and {b} do not broadcast") from e


def _sigmoid(x):
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


# ------------------------------------------------------------------------------------------------ frontend ops
@_op("const", (0, 0), data=Attr(_data, required=True))
class _Const:
    """A constant tensor (``data``: numpy array or SparseMatrix)."""
    infer = staticmethod(lambda t, a: [TensorType(a["data"].shape, a["data"].dtype if isinstance(
        a["data"], SparseMatrix) else TensorType.of(a["data"]).dtype)])
    compute = staticmethod(lambda attrs: [attrs["data"]])


@_op("embedding", (2, 2))
class _Embedding:
    """embedding(table [V,E], ids [B] i64) -> [B,E]."""
    @staticmethod
    def infer(t, a):
        table, ids = t
        if len(table.shape) != 2 or ids.dtype not in ("i64", "i32"):
            raise OpError("embedding expects table [V,E] and integer ids")
        return [TensorType(ids.shape + (table.shape[1],), table.dtype)]

    @staticmethod
    def compute(attrs, table, ids):
        return [np.asarray(table)[np.asarray(ids)]]


@_op("matmul", (2, 2))
class _MatMul:
    """matmul(a [B,K], b [K,N]) -> [B,N]."""
    @staticmethod
    def infer(t, a):
        x, w = t
        if len(x.shape) != 2 or len(w.shape) != 2 or x.shape[1] != w.shape[0]:
            raise OpError(f"matmul shapes {x.shape} @ {w.shape} do not agree")
        return [TensorType((x.shape[0], w.shape[1]), "f32")]

    @staticmethod
    def compute(attrs, x, w):
        return [(x.astype(np.float32) @ w.astype(np.float32)).astype(np.float32)]


@_op("linear", (2, 3))
class _Linear:
    """linear(x [B,K], w [N,K], b [N]) -> x @ w.T + b, [B,N] (torch.nn.Linear; keeps a tied decoder tied)."""
    @staticmethod
    def infer(t, a):
        x, w = t[0], t[1]
        if len(x.shape) != 2 or len(w.shape) != 2 or x.shape[1] != w.shape[1]:
            raise OpError(f"linear shapes {x.shape} and weight {w.shape} do not agree")
        if len(t) == 3 and t[2].shape[-1] != w.shape[0]:
            raise OpError(f"linear bias {t[2].shape} does not match weight {w.shape}")
        return [TensorType((x.shape[0], w.shape[0]), "f32")]

    @staticmethod
    def compute(attrs, x, w, b=None):
        out = np.asarray(x, np.float32) @ np.asarray(w, np.float32).T
        if b is not None:
            out = out + b
        return [out.astype(np.float32)]


@_op("transpose", (1, 1))
class _Transpose:
    """transpose(a [M,N]) -> [N,M]."""
    infer = staticmethod(lambda t, a: [TensorType(t[0].shape[::-1], t[0].dtype)])
    compute = staticmethod(lambda attrs, x: [np.ascontiguousarray(np.asarray(x).T)])


def _binary(name, fn):
    class _B:
        @staticmethod
        def infer(t, a):
            return [TensorType(_broadcast(t[0].shape, t[1].shape), "f32")]

        @staticmethod
        def compute(attrs, x, y):
            return [fn(np.asarray(x, np.float32), np.asarray(y, np.float32)).astype(np.float32)]
    _B.__doc__ = f"{name}(a, b): elementwise with numpy broadcasting."
    _op(name, (2, 2))(_B)


_binary("add", np.add)
_binary("sub", np.subtract)
_binary("mul", np.multiply)


def _unary(name, fn, doc):
    class _U:
        infer = staticmethod(lambda t, a: [TensorType(t[0].shape, "f32")])
        compute = staticmethod(lambda attrs, x: [fn(np.asarray(x, np.float32)).astype(np.float32)])
    _U.__doc__ = doc
    _op(name, (1, 1))(_U)


_unary("sigmoid", _sigmoid, "sigmoid(x) = 1 / (1 + exp(-x))")
_unary("tanh", np.tanh, "tanh(x)")
_unary("relu", lambda x: np.maximum(x, 0.0), "relu(x) = max(x, 0)")
_unary("heaviside", lambda x: (x > 0).astype(np.float32), "heaviside(x) = 1 where x > 0 else 0 (f32)")


@_op("greater", (2, 2))
class _Greater:
    """greater(a, b) -> bool, broadcasting."""
    infer = staticmethod(lambda t, a: [TensorType(_broadcast(t[0].shape, t[1].shape), "bool")])
    compute = staticmethod(lambda attrs, x, y: [np.greater(x, y)])


@_op("cast", (1, 1), dtype=Attr(_dtype, required=True))
class _Cast:
    """cast(x, dtype=...)."""
    infer = staticmethod(lambda t, a: [TensorType(t[0].shape, a["dtype"])])
    compute = staticmethod(lambda attrs, x: [np.asarray(x).astype(TensorType((), attrs["dtype"]).np_dtype)])


@_op("clamp", (1, 1), min=Attr(_finite_or_none), max=Attr(_finite_or_none))
class _Clamp:
    """clamp(x, min=..., max=...) (either bound may be None; finite, min <= max)."""
    @staticmethod
    def infer(t, a):
        lo, hi = a.get("min"), a.get("max")
        if lo is not None and hi is not None and lo > hi:
            raise OpError(f"clamp min={lo} is above max={hi}")
        return [TensorType(t[0].shape, t[0].dtype)]

    @staticmethod
    def compute(attrs, x):
        lo, hi = attrs.get("min"), attrs.get("max")
        return [np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi).astype(x.dtype)]


@_op("split", (1, 1), sizes=Attr(_sizes, required=True), axis=Attr(_int, required=True))
class _Split:
    """split(x, sizes=[...], axis=k) -> one output per size."""
    @staticmethod
    def infer(t, a):
        shape = list(t[0].shape)
        axis = _axis(a["axis"], len(shape), "split")
        if sum(a["sizes"]) != shape[axis]:
            raise OpError(f"split sizes {a['sizes']} do not add up to {shape[axis]}")
        outs = []
        for s in a["sizes"]:
            shape[axis] = s
            outs.append(TensorType(tuple(shape), t[0].dtype))
        return outs

    @staticmethod
    def compute(attrs, x):
        idx = np.cumsum(attrs["sizes"])[:-1]
        return [np.ascontiguousarray(p) for p in np.split(x, idx, axis=attrs["axis"])]


@_op("concat", (1, None), axis=Attr(_int, required=True))
class _Concat:
    """concat(x0, x1, ..., axis=k)."""
    @staticmethod
    def infer(t, a):
        shape = list(t[0].shape)
        axis = _axis(a["axis"], len(shape), "concat")
        for x in t[1:]:
            other = list(x.shape)
            if len(other) != len(shape) or x.dtype != t[0].dtype or \
                    other[:axis] + other[axis + 1:] != shape[:axis] + shape[axis + 1:]:
                raise OpError(f"concat operands {t[0]} and {x} do not join along axis {a['axis']}")
        shape[axis] = sum(x.shape[axis] for x in t)
        return [TensorType(tuple(shape), t[0].dtype)]

    compute = staticmethod(lambda attrs, *xs: [np.concatenate(xs, axis=attrs["axis"])])


# ------------------------------------------------------------------------------------------------ compiler ops
def _sparse_type(t: TensorType, what: str):
    if len(t.shape) != 2:
        raise OpError(f"{what} expects a 2-D sparse matrix")


@_op("sparse_matvec", (2, 3))
class _SparseMatVec:
    """sparse_matvec(x [B,K], M sparse [N,K], bias [N]?) -> x @ M.T (+ bias), [B,N]. Dense input (every
    input unit counted active)."""
    @staticmethod
    def infer(t, a):
        x, m = t[0], t[1]
        _sparse_type(m, "sparse_matvec")
        if x.shape[-1] != m.shape[1]:
            raise OpError(f"sparse_matvec input {x.shape} does not match matrix {m.shape}")
        if len(t) == 3 and t[2].shape[-1] != m.shape[0]:
            raise OpError(f"sparse_matvec bias {t[2].shape} does not match matrix {m.shape}")
        return [TensorType((x.shape[0], m.shape[0]), "f32")]

    @staticmethod
    def compute(attrs, x, m: SparseMatrix, bias=None):
        out = (np.asarray(x, np.float32) @ m.cached_dense().T).astype(np.float32)
        if bias is not None:
            out = (out + bias).astype(np.float32)
        return [out]


@_op("compress_events", (1, 1))
class _CompressEvents:
    """compress_events(y [1,N]) -> (idx [N] i32, val [N] f32, count [1] i64): the first `count` entries of
    idx/val are the active (non-zero) units of y in ascending order; the rest are zero padding."""
    @staticmethod
    def infer(t, a):
        (y,) = t
        if len(y.shape) != 2 or y.shape[0] != 1:
            raise OpError("compress_events expects a batch-1 vector [1,N]")
        n = y.shape[1]
        return [TensorType((n,), "i32"), TensorType((n,), "f32"), TensorType((1,), "i64")]

    @staticmethod
    def compute(attrs, y):
        y = np.asarray(y, np.float32)[0]
        act = np.nonzero(y)[0]
        idx = np.zeros(y.shape[0], np.int32)
        val = np.zeros(y.shape[0], np.float32)
        idx[:len(act)] = act
        val[:len(act)] = y[act]
        return [idx, val, np.array([len(act)], np.int64)]


@_op("event_matvec", (4, 5))
class _EventMatVec:
    """event_matvec(idx, val, count, M sparse csc [N,K], bias [N]?) -> [1,N]: (bias +) the sum over the
    `count` active input units i of val_i * M[:, i], touching only the columns of active units."""
    @staticmethod
    def infer(t, a):
        idx, val, count, m = t[:4]
        _sparse_type(m, "event_matvec")
        if idx.shape[0] != m.shape[1]:
            raise OpError(f"event_matvec events over {idx.shape[0]} units, matrix {m.shape}")
        if len(t) == 5 and t[4].shape[-1] != m.shape[0]:
            raise OpError(f"event_matvec bias {t[4].shape} does not match matrix {m.shape}")
        return [TensorType((1, m.shape[0]), "f32")]

    @staticmethod
    def compute(attrs, idx, val, count, m: SparseMatrix, bias=None):
        # float64 products of the float32 values (exact), accumulated in float64 column by column in
        # ascending row order within a column, then rounded to float32 once
        out = np.zeros(m.shape[0], np.float64)
        n = int(count[0])
        ell = m.cached_columns() if n else None
        if ell is not None:
            act = np.asarray(idx[:n], np.intp)
            rows, vals = ell
            contrib = np.multiply(vals[act], np.asarray(val[:n], np.float64)[:, None], dtype=np.float64)
            out += np.bincount(rows[act].reshape(-1), weights=contrib.reshape(-1), minlength=m.shape[0])
        elif n:
            csc = m.cached_csc()
            vals = csc.cached_values()
            act = np.asarray(idx[:n], np.int64)
            starts, ends = csc.indptr[act], csc.indptr[act + 1]
            lens = ends - starts
            total = int(lens.sum())
            if total:
                offs = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens) + np.arange(total)
                contrib = vals[offs].astype(np.float64) * np.repeat(np.asarray(val[:n], np.float64), lens)
                out += np.bincount(csc.indices[offs], weights=contrib, minlength=m.shape[0])
        if bias is not None:
            out += np.asarray(bias, np.float64).reshape(-1)
        return [out.astype(np.float32)[None, :]]


@_op("egru_cell", (4, 4))
class _EGRUCell:
    """egru_cell(gx [1,3h], gh [1,3h], c [1,h], thr [h]) -> (c_next, y_next), gate order z, r, g:
    z=σ(gx_z+gh_z), r=σ(gx_r+gh_r), g=tanh(gx_g + r*gh_g), c~=z*c+(1-z)*g, o=H(c~-thr),
    y_next=o*c~, c_next=c~-o*thr. gx and gh include their biases."""
    @staticmethod
    def infer(t, a):
        gx, gh, c, thr = t
        h = c.shape[-1]
        if gx.shape[-1] != 3 * h or gh.shape[-1] != 3 * h or thr.shape[-1] != h:
            raise OpError(f"egru_cell shapes gx {gx.shape} gh {gh.shape} c {c.shape} thr {thr.shape}")
        return [TensorType(c.shape, "f32"), TensorType(c.shape, "f32")]

    @staticmethod
    def compute(attrs, gx, gh, c, thr):
        h = c.shape[-1]
        gx = np.asarray(gx, np.float32)
        gh = np.asarray(gh, np.float32)
        z = _sigmoid(gx[:, :h] + gh[:, :h])
        r = _sigmoid(gx[:, h:2 * h] + gh[:, h:2 * h])
        g = np.tanh(gx[:, 2 * h:] + r * gh[:, 2 * h:]).astype(np.float32)
        ct = (z * c + (np.float32(1.0) - z) * g).astype(np.float32)
        o = ((ct - thr) > 0).astype(np.float32)
        return [(ct - o * thr).astype(np.float32), (o * ct).astype(np.float32)]
