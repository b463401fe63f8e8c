"""Lowering of an IR step graph to an ONNX model (standard opset + the ``ai.egru`` function ops).

Works on the optimised IR (embedding -> ``sparse_matvec`` / ``compress_events`` + ``event_matvec`` ->
``egru_cell`` -> ``linear``) and on the un-optimised frontend graph (``matmul``, ``add``, ``sigmoid``, ...).
In both, a matrix-vector product whose input is an EGRU event tensor (a layer's ``y``) is event-gated:
``CompressEvents`` once per event tensor, then ``EventMatVec`` reads only the weight rows of the active units.

Constants: any value computable from constants alone (prune masks times weights, clamped thresholds, ...)
is evaluated at compile time. 2-D float constants are stored as CSR initializers (``indptr``/``indices``/
``values``) when that is smaller than dense and expanded by ``ai.egru.SparseWeight`` — a subgraph of
initializers only, which onnxruntime constant-folds once when the session is created.

Step signature (ONNX names)::

    tokens int64 [1], c{l} f32 [1,h_l], y{l} f32 [1,h_l]
      -> logits f32 [1,V], c{l}_out, y{l}_out, events{l} int64 [1] (active units of y{l}_out),
         macs int64 [1] (this step's multiply-accumulates: active units' non-zero fan-out over the RNN
         layers' input and recurrent matrices; a dense input counts fully active — as ``count-macs``)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...errors import EgruError
from ...ir import Graph, SparseMatrix, Value
from ...passes.count_macs import MacReport, collect_matrices
from ...passes.utils import eval_constant, fed_layers, is_event_tensor, matvec_operands
from . import functions as F

IR_VERSION = 10

ONNX_DTYPES = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "i64": TensorProto.INT64,
               "i32": TensorProto.INT32, "i16": TensorProto.INT16, "i8": TensorProto.INT8,
               "bool": TensorProto.BOOL}
NP_NAMES = {"f32": "float32", "f64": "float64", "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8",
            "bool": "bool"}


class OnnxLoweringError(EgruError):
    pass


@dataclass
class OnnxOptions:
    """Options of the ONNX target (keys of the compile `options` dict; others are ignored)."""

    #: runtime dtype of event-gated weight rows: "auto" (int8 rows + scale for the IR's int8 matrices —
    #: exact —, f32 otherwise), "f32" (everything dequantized to f32), "f16" (half the bytes, ~1e-3 relative),
    #: "int8" (as auto, but an error unless quantize-int8 ran: a quarter of the f32 bytes)
    weight_dtype: str = "auto"
    #: gate matrix-vector products of event tensors (False: every product is a dense MatMul)
    event_gating: bool = True
    #: also gate the decoder (its input is the last layer's events)
    event_decoder: bool = True
    #: lower an event tensor's products densely when its layer's activity measured by count-macs
    #: (``--calib-data``) exceeds this: gathering rows costs ~1.5-2x a dense read per byte
    gate_max_activity: float = 0.5
    #: fold embedding @ first input matrix into one [V, 3h] table at load time (None: when <= fold_max_mb)
    fold_embedding: bool | None = None
    fold_max_mb: float = 256.0
    #: store 2-D weights as CSR initializers when smaller than dense
    sparse_storage: bool = True
    #: extra outputs events{l} and macs
    extras: bool = True

    def __post_init__(self):
        if self.weight_dtype not in ("auto", "f32", "f16", "int8"):
            raise OnnxLoweringError(f"onnx weight_dtype must be 'auto', 'f32', 'f16' or 'int8', "
                                    f"not {self.weight_dtype!r}")

    @classmethod
    def from_options(cls, options) -> "OnnxOptions":
        if options is None:
            return cls()
        if isinstance(options, OnnxOptions):
            return options
        if not isinstance(options, Mapping):
            raise OnnxLoweringError(f"compile options must be a dict, not {type(options).__name__}")
        known = {f.name for f in fields(cls)}
        kw = {}
        for k, v in options.items():
            key = k[len("onnx_"):] if isinstance(k, str) and k.startswith("onnx_") else k
            if key in known and v is not None:
                kw[key] = v
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class IOSpec:
    name: str
    dtype: str                # numpy dtype name
    shape: list[int]
    role: str
    layer: int | None = None
    kind: str | None = None
    state_input: str | None = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "dtype": self.dtype, "shape": self.shape, "role": self.role}
        if self.layer is not None:
            d["layer"] = self.layer
        if self.kind is not None:
            d["kind"] = self.kind
        if self.state_input is not None:
            d["state_input"] = self.state_input
        return d


@dataclass
class Lowered:
    model: onnx.ModelProto
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    stats: dict


def _san(name: str) -> str:
    s = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in str(name))
    return s or "v"


def _idx_dtype(limit: int):
    return np.int16 if limit <= np.iinfo(np.int16).max else (np.int32 if limit <= np.iinfo(np.int32).max
                                                              else np.int64)


class _Lowering:
    def __init__(self, graph: Graph, opts: OnnxOptions):
        self.g = graph
        self.o = opts
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()
        self.vmap: dict[Value, str] = {}
        self.compact: dict[Value, tuple] = {}      # IR compress_events outputs -> (idx, val, count, n)
        self.compact_kind: dict[Value, str] = {}   # ... -> which of them ("idx", "val", "count")
        self.events: dict[Value, tuple[str, str, str]] = {}
        self.ccache: dict = {}
        self.stored: dict[int, str] = {}           # id(constant data) -> ONNX name
        self.keep: list = []                       # keep evaluated constants alive (ids stay unique)
        self.weights: dict[tuple, str] = {}
        self.stats = {"weights": [], "gated_matvecs": 0, "dense_matvecs": 0, "folded_embedding": False}

    # ------------------------------------------------------------------ naming / emission
    def fresh(self, hint: str) -> str:
        base = _san(hint)
        name, k = base, 1
        while name in self.names:
            name = f"{base}_{k}"
            k += 1
        self.names.add(name)
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, hint: str | None = None, domain: str = "",
             out_names: list[str] | None = None, **attrs) -> list[str]:
        outs = out_names or [self.fresh(f"{hint or op.lower()}" + (f"_{i}" if n_out > 1 else ""))
                             for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, domain=domain or None, **attrs))
        return outs

    def fn(self, op: str, inputs: list[str], n_out: int = 1, hint: str | None = None) -> list[str]:
        return self.node(op, inputs, n_out, hint=hint, domain=F.DOMAIN)

    def init(self, array: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value, dtype, hint="c") -> str:
        return self.init(np.array(value, dtype=dtype), hint)

    def ints(self, vals, hint="i") -> str:
        return self.init(np.asarray(vals, np.int64), hint)

    # ------------------------------------------------------------------ constants
    def const_of(self, v: Value):
        return eval_constant(v, self.ccache)

    def is_const(self, v: Value) -> bool:
        return self.const_of(v) is not None

    def const_name(self, v: Value) -> str:
        data = self.const_of(v)
        if data is None:
            raise OnnxLoweringError(f"%{v.name} is not constant")
        label = None
        if v.producer is not None and v.producer.is_const:
            label = v.producer.attrs.get("label")
        return self.store(data, label or v.name)

    def store(self, data, hint: str) -> str:
        """Initializer(s) holding constant `data`; 2-D float arrays sparse when smaller. Deduplicated."""
        key = id(data)
        if key in self.stored:
            return self.stored[key]
        self.keep.append(data)
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
        key = (id(data), layout, dtype)
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

    def weight_q8(self, w: Value) -> tuple[str, str]:
        """(WT int8 [n_in, n_out], scale f32 [n_out]) of an int8 SparseMatrix weight."""
        m = self.const_of(w)
        key = (id(m), "q8")
        if key not in self.weights:
            csc = m.convert("csc")
            n_out, n_in = m.shape
            hint = _san((w.producer.attrs.get("label") if w.producer is not None and w.producer.is_const else None)
                        or w.name)
            wt = self._csr_inits(csc.indptr, csc.indices, np.asarray(csc.data, np.int8), (n_in, n_out), hint,
                                 op="SparseWeightI8")
            self.stats["weights"].append({"name": hint, "shape": [n_out, n_in], "nnz": m.nnz, "stored": "csc",
                                          "dtype": "i8"})
            sc = self.init(np.asarray(m.scale, np.float32).reshape(-1), f"{hint}_scale")
            self.weights[key] = (wt, sc)
        return self.weights[key]

    def gated(self, node, w: Value, idx: str, val: str, hint: str, bias: Value | None = None) -> str:
        """Event-gated product of the active units (idx, val) with the constant weight `w`, plus `bias`."""
        data = self.const_of(w)
        mode = self.o.weight_dtype
        self.stats["gated_matvecs"] += 1
        if mode in ("auto", "int8") and isinstance(data, SparseMatrix) and data.scale is not None:
            wt, sc = self.weight_q8(w)
            r = self.fn("EventMatVecQ", [idx, val, wt, sc], hint=hint)[0]
        elif mode == "f16":
            r = self.fn("EventMatVecF16", [idx, val, self.weight_t(node, w, "f16")], hint=hint)[0]
        else:
            r = self.fn("EventMatVec", [idx, val, self.weight_t(node, w)], hint=hint)[0]
        if bias is not None:
            r = self.node("Add", [r, self.as_f32(bias)], hint=hint)[0]
        return r

    # ------------------------------------------------------------------ values
    def val(self, v: Value) -> str:
        if v in self.vmap:
            return self.vmap[v]
        if v in self.compact:
            return self.padded(v)
        if self.is_const(v):
            name = self.const_name(v)
            self.vmap[v] = name
            return name
        raise OnnxLoweringError(f"value %{v.name} used before it is defined")

    def as_f32(self, v: Value) -> str:
        name = self.val(v)
        if v.type.dtype != "f32":
            return self.node("Cast", [name], hint=f"{name}_f", to=TensorProto.FLOAT)[0]
        return name

    def events_of(self, y: Value) -> tuple[str, str, str]:
        """(idx, val, count) of the active units of event tensor `y` (one CompressEvents per tensor)."""
        if y not in self.events:
            self.events[y] = tuple(self.fn("CompressEvents", [self.as_f32(y)], 3, hint=f"{_san(y.name)}_ev"))
        return self.events[y]

    def padded(self, v: Value) -> str:
        """IR semantics of a compress_events result used by something other than event_matvec: idx (i32) /
        val padded with zeros to N, or count."""
        idx, val, count, n = self.compact[v]
        which = self.compact_kind[v]
        if which == "count":
            return count
        src = idx if which == "idx" else val
        pad_len = self.node("Sub", [self.ints([n], "n"), count], hint="pad_len")[0]
        pads = self.node("Concat", [self.ints([0], "zero"), pad_len], hint="pads", axis=0)[0]
        out = self.node("Pad", [src, pads], hint=f"{src}_pad")[0]
        if which == "idx":
            out = self.node("Cast", [out], hint=f"{out}_i32", to=TensorProto.INT32)[0]
        self.vmap[v] = out
        return out

    # ------------------------------------------------------------------ matvecs
    def _too_active(self, x: Value) -> bool:
        """Whether calibration (the graph's MacReport) measured the layer of event tensor `x` above
        `gate_max_activity`."""
        rep = self.g.analyses.get(MacReport)
        act = (rep.activity if rep else None) or []
        l = x.meta.get("layer")
        if l is None and x.producer is not None and x.producer.op == "egru_cell":
            l = x.producer.attrs.get("layer")
        if l is None or not 0 <= l < len(act) or act[l] is None:
            return False
        if act[l] > self.o.gate_max_activity:
            self.stats.setdefault("dense_by_activity", []).append(int(l))
            return True
        return False

    def _embedding_src(self, x: Value):
        """(table value, ids value) when `x` = embedding(constant table, ids)."""
        p = x.producer
        if p is not None and p.op == "embedding" and self.is_const(p.inputs[0]) and not self.is_const(p.inputs[1]):
            return p.inputs[0], p.inputs[1]
        return None

    def _fold_ok(self, node, x: Value, n_out: int) -> bool:
        src = self._embedding_src(x)
        if src is None or self.o.fold_embedding is False:
            return False
        table = np.asarray(self.const_of(src[0]))
        if table.ndim != 2 or x.type.shape[0] != 1:
            return False
        mb = table.shape[0] * n_out * 4 / 2 ** 20
        return self.o.fold_embedding is True or mb <= self.o.fold_max_mb

    def matvec(self, node, x: Value, w: Value, bias: Value | None, out: Value, layer) -> None:
        data = self.const_of(w)
        if data is None:          # not a constant weight: plain ops
            xs, ws = self.as_f32(x), self.as_f32(w)
            if node.op == "linear":
                ws = self.node("Transpose", [ws], perm=[1, 0])[0]
            r = self.node("MatMul", [xs, ws], hint=out.name)[0]
            if bias is not None:
                r = self.node("Add", [r, self.as_f32(bias)], hint=out.name)[0]
            self.vmap[out] = r
            return
        n_out = out.type.shape[-1]
        gate = (self.o.event_gating and x.type.shape[0] == 1 and len(x.type.shape) == 2
                and is_event_tensor(self.g, x) and (layer is not None or self.o.event_decoder)
                and not self._too_active(x))
        if gate:
            idx, v, _ = self.events_of(x)
            self.vmap[out] = self.gated(node, w, idx, v, out.name, bias)
            return
        elif self._fold_ok(node, x, n_out):
            table, ids = self._embedding_src(x)
            r = self.fn("EmbedMatVec", [self.val(ids), self.const_name(table), self.weight_t(node, w)],
                        hint=out.name)[0]
            self.stats["folded_embedding"] = True
        else:
            wt = self.weight_t(node, w)
            if node.op == "sparse_matvec" and x.type.shape[0] == 1:
                r = self.fn("SparseMatVec", [self.as_f32(x), wt], hint=out.name)[0]
            else:
                r = self.node("MatMul", [self.as_f32(x), wt], hint=out.name)[0]
            self.stats["dense_matvecs"] += 1
        if bias is not None:
            r = self.node("Add", [r, self.as_f32(bias)], hint=out.name)[0]
        self.vmap[out] = r

    # ------------------------------------------------------------------ main
    def lower_node(self, n, layer) -> None:
        op = n.op
        if op == "const":
            return
        if all(self.is_const(v) for v in n.outputs):
            return                                   # evaluated at compile time, materialised on use
        ins = n.inputs
        out = n.outputs[0]
        if op in ("matmul", "linear", "sparse_matvec"):
            self.matvec(n, ins[0], ins[1], ins[2] if len(ins) > 2 else None, out, layer)
        elif op == "compress_events":
            y = ins[0]
            idx, val, count = self.events_of(y)
            N = y.type.shape[-1]
            for v, kind in zip(n.outputs, ("idx", "val", "count")):
                self.compact[v] = (idx, val, count, N)
                self.compact_kind[v] = kind
        elif op == "event_matvec":
            idx_v, val_v, cnt_v, w = ins[:4]
            bias = ins[4] if len(ins) > 4 else None
            src = idx_v.producer.inputs[0] if idx_v in self.compact else None
            if src is not None and self._too_active(src):      # dense product of the event tensor
                r = self.fn("SparseMatVec", [self.as_f32(src), self.weight_t(n, w)], hint=out.name)[0]
                self.stats["dense_matvecs"] += 1
                if bias is not None:
                    r = self.node("Add", [r, self.as_f32(bias)], hint=out.name)[0]
                self.vmap[out] = r
                return
            if idx_v in self.compact and val_v in self.compact:
                idx, val = self.compact[idx_v][0], self.compact[val_v][1]
            else:                                    # padded arrays from elsewhere: take the first count
                cnt = self.val(cnt_v)
                z = self.ints([0], "zero")
                idx = self.node("Slice", [self.val(idx_v), z, cnt], hint="ev_idx")[0]
                idx = self.node("Cast", [idx], hint="ev_idx64", to=TensorProto.INT64)[0]
                val = self.node("Slice", [self.as_f32(val_v), z, cnt], hint="ev_val")[0]
            self.vmap[out] = self.gated(n, w, idx, val, out.name, bias)
        elif op == "egru_cell":
            gx, gh, c, thr = (self.as_f32(v) for v in ins)
            outs = self.fn("EGRUCell", [gx, gh, c, thr], 2, hint=f"{_san(out.name)}")
            self.vmap[n.outputs[0]], self.vmap[n.outputs[1]] = outs
        elif op == "embedding":
            self.vmap[out] = self.node("Gather", [self.val(ins[0]), self.val(ins[1])], hint=out.name, axis=0)[0]
        elif op in ("add", "sub", "mul"):
            self.vmap[out] = self.node({"add": "Add", "sub": "Sub", "mul": "Mul"}[op],
                                       [self.as_f32(ins[0]), self.as_f32(ins[1])], hint=out.name)[0]
        elif op in ("sigmoid", "tanh"):
            self.vmap[out] = self.node(op.capitalize(), [self.as_f32(ins[0])], hint=out.name)[0]
        elif op == "heaviside":
            gt = self.node("Greater", [self.as_f32(ins[0]), self.scalar(0.0, np.float32, "zero_f")],
                           hint=f"{out.name}_gt")[0]
            self.vmap[out] = self.node("Cast", [gt], hint=out.name, to=TensorProto.FLOAT)[0]
        elif op == "greater":
            a, b = ins
            if a.type.dtype != b.type.dtype:
                sa, sb = self.as_f32(a), self.as_f32(b)
            else:
                sa, sb = self.val(a), self.val(b)
            self.vmap[out] = self.node("Greater", [sa, sb], hint=out.name)[0]
        elif op == "cast":
            self.vmap[out] = self.node("Cast", [self.val(ins[0])], hint=out.name,
                                       to=ONNX_DTYPES[n.attrs["dtype"]])[0]
        elif op == "clamp":
            dt = np.dtype(NP_NAMES[ins[0].type.dtype])
            lo, hi = n.attrs.get("min"), n.attrs.get("max")
            args = [self.val(ins[0]), "" if lo is None else self.scalar(lo, dt, "lo"),
                    "" if hi is None else self.scalar(hi, dt, "hi")]
            while args[-1] == "":
                args.pop()
            self.vmap[out] = self.node("Clip", args, hint=out.name)[0]
        elif op == "split":
            outs = self.node("Split", [self.val(ins[0]), self.ints(n.attrs["sizes"], "sizes")], len(n.outputs),
                             hint=out.name, axis=int(n.attrs["axis"]))
            for v, s in zip(n.outputs, outs):
                self.vmap[v] = s
        elif op == "concat":
            self.vmap[out] = self.node("Concat", [self.val(v) for v in ins], hint=out.name,
                                       axis=int(n.attrs["axis"]))[0]
        elif op == "transpose":
            rank = len(ins[0].type.shape)
            self.vmap[out] = self.node("Transpose", [self.val(ins[0])], hint=out.name,
                                       perm=list(range(rank))[::-1])[0]
        else:
            raise OnnxLoweringError(f"the onnx target cannot lower IR op '{op}' (%{out.name})")

    def run(self) -> Lowered:
        g = self.g
        if self.o.weight_dtype == "int8" and not any(
                isinstance(w, SparseMatrix) and w.scale is not None
                for w in (self.const_of(matvec_operands(m.node)[1]) for m in collect_matrices(g))):
            raise OnnxLoweringError("onnx weight_dtype 'int8' needs int8 weights: run the quantize-int8 pass "
                                    "(egru-compile adds it with --onnx-weight-dtype int8)")
        # ---- inputs
        inputs: list[IOSpec] = []
        value_infos_in = []
        for i, v in enumerate(g.inputs):
            role = v.meta.get("role")
            if role == "tokens" or (role is None and i == 0 and v.type.dtype in ("i64", "i32")):
                name, spec = "tokens", IOSpec("tokens", NP_NAMES[v.type.dtype], list(v.type.shape), "tokens")
            elif role == "state_in":
                name = f"{v.meta['kind']}{v.meta['layer']}"
                spec = IOSpec(name, NP_NAMES[v.type.dtype], list(v.type.shape), "state_in", v.meta["layer"],
                              v.meta["kind"])
            else:
                name = _san(v.name)
                spec = IOSpec(name, NP_NAMES[v.type.dtype], list(v.type.shape), role or "input")
            if name in self.names:
                raise OnnxLoweringError(f"two graph inputs map to the ONNX name {name!r}")
            self.names.add(name)
            self.vmap[v] = name
            inputs.append(spec)
            value_infos_in.append(helper.make_tensor_value_info(name, ONNX_DTYPES[v.type.dtype], list(v.type.shape)))
        # ---- reserve the output names
        for i, v in enumerate(g.outputs):
            role = v.meta.get("role")
            if role == "state_out":
                self.names.add(f"{v.meta['kind']}{v.meta['layer']}_out")
            elif role == "logits" or (role is None and i == 0):
                self.names.add("logits")
            else:
                self.names.add(f"out{i}")
            if role == "state_out" and v.meta.get("kind") == "y":
                self.names.add(f"events{v.meta['layer']}")
        self.names.add("macs")
        # ---- nodes
        layers = fed_layers(g)
        for n in g.nodes:
            self.lower_node(n, layers.get(n))
        # ---- outputs
        outs: list[tuple[str, str, IOSpec]] = []
        for i, v in enumerate(g.outputs):
            role = v.meta.get("role")
            src = self.val(v)
            if role == "logits" or (role is None and i == 0):
                spec = IOSpec("logits", NP_NAMES[v.type.dtype], list(v.type.shape), "logits")
            elif role == "state_out":
                l, k = v.meta["layer"], v.meta["kind"]
                spec = IOSpec(f"{k}{l}_out", NP_NAMES[v.type.dtype], list(v.type.shape), "state_out", l, k,
                              state_input=f"{k}{l}")
            else:
                spec = IOSpec(f"out{i}", NP_NAMES[v.type.dtype], list(v.type.shape), role or "output")
            outs.append((src, ONNX_DTYPES[v.type.dtype], spec))
        if self.o.extras:
            ys = sorted((v.meta["layer"], v) for v in g.outputs
                        if v.meta.get("role") == "state_out" and v.meta.get("kind") == "y")
            for l, v in ys:
                cnt = self.events_of(v)[2]
                outs.append((cnt, TensorProto.INT64, IOSpec(f"events{l}", "int64", [1], "events", l)))
            # one CountMACs per event tensor, over the summed fan-out of every matrix it feeds
            parts, fanout, labels, dense_macs = [], {}, {}, 0
            for m in collect_matrices(g):
                if m.layer is None:
                    continue
                if m.event:
                    cn = np.asarray(m.colnnz, np.int64)
                    fanout[m.x] = fanout[m.x] + cn if m.x in fanout else cn
                    labels.setdefault(m.x, _san(m.label))
                else:
                    dense_macs += int(m.nnz)
            for x, fan in fanout.items():
                idx = self.events_of(x)[0]
                parts.append(self.fn("CountMACs", [idx, self.init(fan, f"{labels[x]}_fanout")],
                                     hint=f"{labels[x]}_macs")[0])
            if dense_macs:
                parts.append(self.ints([dense_macs], "dense_macs"))
            total = None
            for part in parts:
                total = part if total is None else self.node("Add", [total, part], hint="macs_sum")[0]
            if total is None:
                total = self.ints([0], "macs0")
            outs.append((total, TensorProto.INT64, IOSpec("macs", "int64", [1], "macs")))
        return self._finish(inputs, value_infos_in, outs)

    def _finish(self, inputs, value_infos_in, outs) -> Lowered:
        graph_inputs = {s.name for s in inputs}
        produced = {o for nd in self.nodes for o in nd.output}
        claimed: set[str] = set()
        rename: dict[str, str] = {}
        out_vis = []
        for src, dt, spec in outs:
            if src in produced and src not in graph_inputs and src not in claimed and src not in rename:
                rename[src] = spec.name
                claimed.add(src)
            else:
                self.nodes.append(helper.make_node("Identity", [rename.get(src, src)], [spec.name]))
            out_vis.append(helper.make_tensor_value_info(spec.name, dt, spec.shape))
        for nd in self.nodes:
            for i, s in enumerate(nd.input):
                if s in rename:
                    nd.input[i] = rename[s]
            for i, s in enumerate(nd.output):
                if s in rename:
                    nd.output[i] = rename[s]
        # dead-code elimination (nodes, then initializers)
        live = {spec.name for _, _, spec in outs}
        kept = []
        for nd in reversed(self.nodes):
            if any(o in live for o in nd.output):
                kept.append(nd)
                live.update(i for i in nd.input if i)
        kept.reverse()
        used_fns = {nd.op_type for nd in kept if nd.domain == F.DOMAIN}
        for k, nd in enumerate(kept):
            nd.name = f"n{k}_{nd.op_type}"
        inits = [t for t in self.inits if t.name in live]
        graph = helper.make_graph(kept, "egru_step", value_infos_in, out_vis, inits)
        model = helper.make_model(
            graph, ir_version=IR_VERSION, producer_name="egru-compile", producer_version=_version(),
            opset_imports=[helper.make_opsetid("", F.OPSET), helper.make_opsetid(F.DOMAIN, F.DOMAIN_VERSION)],
            functions=F.build_functions(used_fns))
        stats = dict(self.stats)
        stats["functions"] = sorted(used_fns)
        stats["nodes"] = len(kept)
        stats["initializer_bytes"] = int(sum(len(t.raw_data) for t in inits))
        return Lowered(model, inputs, [spec for _, _, spec in outs], stats)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("egru-compile")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0"


def lower_graph(graph: Graph, options=None) -> Lowered:
    """Lower a verified IR step graph to an ONNX model (`Lowered.model`) with its I/O description."""
    opts = OnnxOptions.from_options(options)
    return _Lowering(graph, opts).run()
