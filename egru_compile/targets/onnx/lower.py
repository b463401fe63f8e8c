"""Lowering of an IR step graph to an ONNX model (standard opset + the ``ai.egru`` function ops).

A straight op-by-op translation: each IR op kind has one handler in `handlers.HANDLERS`; an op without one is
an `OnnxLoweringError` naming it. What to do with the graph is decided before, by the target's passes
(`pipeline.ONNX_PIPELINE_NEEDS`: ``select-gating``, ``fold-embedding``, ``weight-precision``), which
`lower_graph` runs on a copy of its input. Works on the optimised IR (embedding -> ``sparse_matvec`` /
``compress_events`` + ``event_matvec`` -> ``egru_cell`` -> ``linear``) and on the un-optimised frontend
graph (``matmul``, ``add``, ``sigmoid``, ...). An event-gated product compresses its event tensor once
(``CompressEvents``), then ``EventMatVec`` reads only the weight rows of the active units.

This module holds the lowering context the handlers use: naming and emission of ONNX nodes, constants
(weight storage: `weights.WeightStorage`), value lookup, the step's inputs/outputs (with the ``events{l}`` / ``macs`` extras) and the
final model assembly.

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

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...ir import Graph, SparseMatrix, Value
from ...passes.count_macs import collect_matrices
from ...passes.utils import eval_constant
from . import functions as F
from . import decoder
from .handlers import HANDLERS
from .options import NP_NAMES, ONNX_DTYPES, IOSpec, Lowered, OnnxLoweringError, OnnxOptions
from .pipeline import prepare_graph
from .weights import WeightStorage, _san

IR_VERSION = 10


class _Lowering(WeightStorage):
    """State of one lowering: the ONNX nodes / initializers emitted so far, the ONNX name of each IR value
    (`vmap`), compressed event tensors, stored constants; the handlers (`handlers.HANDLERS`) call its
    methods. `run` translates the graph node by node and assembles the model."""

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
        self.stored: dict[tuple, str] = {}         # weights.content_key(constant data) -> ONNX name
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

    def gated(self, node, w: Value, idx: str, val: str, hint: str, bias: Value | None = None) -> str:
        """Event-gated product of the active units (idx, val) with the constant weight `w`, plus `bias`;
        the rows are gathered in the node's ``weight_dtype`` (set by ``weight-precision``; default f32)."""
        dtype = node.attrs.get("weight_dtype", "f32")
        self.stats["gated_matvecs"] += 1
        if dtype == "i8":
            data = self.const_of(w)
            if not (isinstance(data, SparseMatrix) and data.scale is not None):
                raise OnnxLoweringError(f"%{node.outputs[0].name}: weight_dtype i8 needs an int8 sparse matrix")
            wt, sc = self.weight_q8(w, allow_dense=node.op == "linear")
            r = self.fn("EventMatVecQ", [idx, val, wt, sc], hint=hint)[0]
        elif dtype == "f16":
            r = self.fn("EventMatVecF16", [idx, val, self.weight_t(node, w, "f16")], hint=hint)[0]
        else:
            r = self.fn("EventMatVec", [idx, val, self.weight_t(node, w)], hint=hint)[0]
        return self.add_bias(r, bias, hint)

    def add_bias(self, r: str, bias: Value | None, hint: str) -> str:
        return r if bias is None else self.node("Add", [r, self.as_f32(bias)], hint=hint)[0]

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

    # ------------------------------------------------------------------ main
    def lower_node(self, n) -> None:
        """Translate one IR node through its handler (`handlers.HANDLERS`); constant results are not
        translated: they are evaluated at compile time and stored where they are used."""
        if n.op == "const" or all(self.is_const(v) for v in n.outputs):
            return
        handler = HANDLERS.get(n.op)
        if handler is None:
            raise OnnxLoweringError(f"the onnx target cannot lower IR op '{n.op}' (%{n.outputs[0].name})")
        handler(self, n)

    def run(self) -> Lowered:
        g = self.g
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
        for n in g.nodes:
            self.lower_node(n)
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
        stats["functions"] = sorted(F.with_callees(used_fns))
        stats["nodes"] = len(kept)
        stats["initializer_bytes"] = int(sum(len(t.raw_data) for t in inits))
        return Lowered(model, inputs, [spec for _, _, spec in outs], stats)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("egru-compile")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "0"


def lower_graph(graph: Graph, options=None, prepare: bool = True) -> Lowered:
    """Lower a verified IR step graph to an ONNX model (`Lowered.model`) with its I/O description.
    With `prepare` (default) the target's passes (`pipeline.ONNX_PIPELINE_NEEDS`) run first, on a copy of
    `graph`; without it `graph` is translated as it is."""
    opts = OnnxOptions.from_options(options)
    pass_stats: dict = {}
    record = None
    if prepare:
        prepared, pass_stats = prepare_graph(graph, opts)
        graph, record = decoder.choose(graph, prepared, opts)
    lowered = _Lowering(graph, opts).run()
    if record is not None:
        lowered.stats["decoder_precision"] = record
    busy = (pass_stats.get("select-gating") or {}).get("dense_by_activity")
    if busy:
        lowered.stats["dense_by_activity"] = list(busy)
    return lowered
