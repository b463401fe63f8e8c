"""Trace a model's single-step function with torch.export and pattern-match the ATen graph into IR ops.

The importer knows ATen ops, not parameter names: any module whose step computes the EGRU math with the
supported ops traces, whatever its attribute names or gate layout. Step signature (flat):

    (tokens [1] i64, c_0, y_0, c_1, y_1, ...) -> (logits [1,V], c_0', y_0', c_1', y_1', ...)

Parameters and buffers become ``const`` nodes (tensors shared by several parameters, like a tied decoder,
become one constant). Each node records ``loc``: the module path it came from.
"""
from __future__ import annotations

import operator
import warnings

import numpy as np
import torch

from ..errors import EgruError
from ..ir import Graph, TensorType, verify
from ..ir.ops import OpError


class FrontendError(EgruError):
    """The model cannot be imported; the message names the op and where it came from."""


_TORCH_DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.int64: "i64", torch.int32: "i32",
                 torch.int16: "i16", torch.int8: "i8", torch.bool: "bool"}


def export_step(module: torch.nn.Module, hidden_sizes: list[int]) -> torch.export.ExportedProgram:
    """torch.export the flat step of `module` (an `EGRULanguageModel` or anything with the same `step`)."""
    from ..model import StepModule
    was_training = module.training
    module.eval()
    args = [torch.zeros(1, dtype=torch.long)]
    for h in hidden_sizes:
        args += [torch.zeros(1, h), torch.zeros(1, h)]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(StepModule(module), tuple(args))
    except Exception as e:  # torch raises many exception types for untraceable code
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FrontendError(f"torch.export could not trace the step function: {first}") from e
    finally:
        module.train(was_training)


def _loc(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = ""
    if stack:
        path = list(stack.values())[-1][0]
        if path.startswith("model."):
            path = path[len("model."):]
        elif path == "model":
            path = ""
    return path


def _where(node) -> str:
    loc = _loc(node) or "<top>"
    trace = (node.meta.get("stack_trace") or "").strip().splitlines()
    src = ""
    for i, line in enumerate(trace):
        if line.strip().startswith("File "):
            src = line.strip()
            if i + 1 < len(trace):
                src += ": " + trace[i + 1].strip()
    return f"module '{loc}'" + (f" ({src})" if src else "")


class _Importer:
    def __init__(self, ep: torch.export.ExportedProgram):
        self.ep = ep
        self.g = Graph("step")
        self.env: dict = {}
        self.const_by_storage: dict = {}
        self.loc = ""

    # ------------------------------------------------------------------ helpers
    def value(self, arg, like=None):
        """Map an fx argument to an IR value; Python scalars become 0-d f32 constants."""
        if isinstance(arg, torch.fx.Node):
            v = self.env[arg]
            if isinstance(v, list):
                raise FrontendError(f"multi-output value {arg.name} used without indexing")
            return v
        if isinstance(arg, (bool, int, float)):
            return self.g.const(np.array(arg, dtype=np.float32), name="scalar")
        raise FrontendError(f"unsupported argument {arg!r} at {self.where}")

    def emit(self, op, *inputs, **attrs):
        try:
            return self.g.op(op, *inputs, name=self.name, meta={"loc": self.loc} if self.loc else None, **attrs)
        except OpError as e:
            raise FrontendError(f"{self.target_name}: {e} at {self.where}") from e

    def tensor_const(self, tensor: torch.Tensor, label: str):
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
               tuple(tensor.stride()), tensor.dtype)
        if key in self.const_by_storage:
            return self.const_by_storage[key]
        data = tensor.detach().cpu().contiguous().numpy().copy()
        if data.dtype == np.float64:
            data = data.astype(np.float32)
        label = label[len("model."):] if label.startswith("model.") else label
        v = self.g.const(data, name=label.replace(".", "_"), label=label)
        self.const_by_storage[key] = v
        return v

    # ------------------------------------------------------------------ main
    def run(self) -> Graph:
        ep = self.ep
        sig = ep.graph_signature
        params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                  **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
        state = {**ep.state_dict, **ep.constants}
        user_inputs = list(sig.user_inputs)
        if len(user_inputs) < 1 or len(user_inputs) % 2 != 1:
            raise FrontendError(f"step must take (tokens, c_0, y_0, ...): got {len(user_inputs)} inputs")
        n_layers = (len(user_inputs) - 1) // 2
        for node in ep.graph.nodes:
            self.name, self.loc, self.where = node.name, _loc(node), _where(node)
            self.target_name = str(node.target)
            if node.op == "placeholder":
                if node.name in params:
                    self.env[node] = self.tensor_const(state[params[node.name]], params[node.name])
                    continue
                k = user_inputs.index(node.name)
                val = node.meta.get("val")
                t = TensorType(tuple(val.shape), _TORCH_DTYPES.get(val.dtype, "f32"))
                if k == 0:
                    self.env[node] = self.g.add_input("tokens", t, role="tokens")
                else:
                    layer, kind = (k - 1) // 2, "cy"[(k - 1) % 2]
                    self.env[node] = self.g.add_input(f"{kind}{layer}", t, role="state_in", layer=layer, kind=kind)
            elif node.op == "call_function":
                self.call(node)
            elif node.op == "output":
                outs = node.args[0]
                outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
                if len(outs) != 1 + 2 * n_layers:
                    raise FrontendError(f"step returns {len(outs)} values, expected logits + 2 per layer")
                values = [self.value(o) for o in outs]
                values[0].meta.update(role="logits")
                for i, v in enumerate(values[1:]):
                    layer, kind = i // 2, "cy"[i % 2]
                    if v.meta.get("role") == "state_in":   # state passed through unchanged
                        v = self.g.op("add", v, self.g.const(np.array(0.0, np.float32), name="zero"))
                    v.meta.update(role="state_out", layer=layer, kind=kind)
                    values[i + 1] = v
                self.g.outputs = values
            else:
                raise FrontendError(f"unsupported fx node kind {node.op} ({node.name})")
        return self.g

    def call(self, node):
        tgt = node.target
        a = node.args
        kw = node.kwargs
        name = self.target_name
        if tgt is operator.getitem:
            self.env[node] = self.env[a[0]][a[1]]
            return
        ident = {"aten.detach.default", "aten.alias.default", "aten.clone.default", "aten.contiguous.default",
                 "aten.lift_fresh_copy.default"}
        skip = {"aten._assert_tensor_metadata.default", "aten._assert_scalar.default",
                "aten.sym_constrain_range_for_size.default", "aten.sym_constrain_range.default"}
        if name in skip:
            return
        if name in ident:
            self.env[node] = self.value(a[0])
            return
        if name == "aten.dropout.default":
            if a[2] if len(a) > 2 else kw.get("train", False):
                raise FrontendError(f"dropout in training mode at {self.where}")
            self.env[node] = self.value(a[0])
            return
        v = self.value
        e = self.emit
        if name == "aten.embedding.default":
            out = e("embedding", v(a[0]), v(a[1]))
        elif name in ("aten.matmul.default", "aten.mm.default"):
            out = e("matmul", v(a[0]), v(a[1]))
        elif name == "aten.addmm.default":
            out = e("add", e("matmul", v(a[1]), v(a[2])), v(a[0]))
        elif name == "aten.linear.default":
            args = [v(a[0]), v(a[1])] + ([v(a[2])] if len(a) > 2 and a[2] is not None else [])
            out = e("linear", *args)
        elif name in ("aten.t.default", "aten.numpy_T.default"):
            out = e("transpose", v(a[0]))
        elif name == "aten.transpose.int" or name == "aten.permute.default":
            out = e("transpose", v(a[0]))
        elif name in ("aten.add.Tensor", "aten.add.Scalar", "aten.sub.Tensor", "aten.sub.Scalar"):
            alpha = kw.get("alpha", a[2] if len(a) > 2 else 1)
            rhs = v(a[1])
            if alpha != 1:
                rhs = e("mul", rhs, v(float(alpha)))
            out = e("add" if "add" in name else "sub", v(a[0]), rhs)
        elif name in ("aten.rsub.Scalar", "aten.rsub.Tensor"):
            out = e("sub", v(a[1]), v(a[0]))
        elif name in ("aten.mul.Tensor", "aten.mul.Scalar"):
            out = e("mul", v(a[0]), v(a[1]))
        elif name == "aten.neg.default":
            out = e("mul", v(a[0]), v(-1.0))
        elif name == "aten.sigmoid.default":
            out = e("sigmoid", v(a[0]))
        elif name == "aten.tanh.default":
            out = e("tanh", v(a[0]))
        elif name == "aten.relu.default":
            out = e("relu", v(a[0]))
        elif name in ("aten.gt.Scalar", "aten.gt.Tensor"):
            out = e("greater", v(a[0]), v(a[1]))
        elif name in ("aten.lt.Scalar", "aten.lt.Tensor"):
            out = e("greater", v(a[1]), v(a[0]))
        elif name == "aten.heaviside.default":
            vals = a[1]
            val_const = self.env.get(vals) if isinstance(vals, torch.fx.Node) else None
            ok = val_const is not None and val_const.producer is not None and val_const.producer.is_const \
                and not np.any(np.asarray(val_const.producer.attrs["data"]))
            if not ok:
                raise FrontendError(f"heaviside with non-zero or non-constant 'values' at {self.where}")
            out = e("heaviside", v(a[0]))
        elif name in ("aten.to.dtype", "aten._to_copy.default", "aten.to.dtype_layout", "aten.type_as.default"):
            dt = kw.get("dtype") if name != "aten.to.dtype" else a[1]
            if name == "aten.type_as.default":
                dt = a[1].meta["val"].dtype
            if dt is None:
                out = v(a[0])
            else:
                if dt not in _TORCH_DTYPES:
                    raise FrontendError(f"cast to unsupported dtype {dt} at {self.where}")
                out = e("cast", v(a[0]), dtype=_TORCH_DTYPES[dt])
        elif name in ("aten.clamp.default", "aten.clamp_min.default", "aten.clamp_max.default"):
            lo = a[1] if name != "aten.clamp_max.default" and len(a) > 1 else kw.get("min")
            hi = (a[2] if len(a) > 2 else kw.get("max")) if name == "aten.clamp.default" else (
                a[1] if name == "aten.clamp_max.default" else None)
            if name == "aten.clamp_min.default":
                hi = None
            if isinstance(lo, torch.fx.Node) or isinstance(hi, torch.fx.Node):
                raise FrontendError(f"clamp with tensor bounds at {self.where}")
            out = e("clamp", v(a[0]), min=None if lo is None else float(lo), max=None if hi is None else float(hi))
        elif name in ("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default",
                      "aten.unbind.int"):
            self.env[node] = self.split(node, name)
            return
        elif name in ("aten.zeros.default", "aten.ones.default", "aten.full.default", "aten.scalar_tensor.default"):
            val = node.meta["val"]
            fill = {"aten.zeros.default": 0.0, "aten.ones.default": 1.0}.get(name, a[1] if name == "aten.full.default" else a[0])
            dt = _TORCH_DTYPES.get(val.dtype, "f32")
            out = self.g.const(np.full(tuple(val.shape), fill, dtype=TensorType((), dt).np_dtype), name=node.name)
        elif name == "aten.cat.default":
            out = e("concat", *[v(x) for x in a[0]], axis=a[1] if len(a) > 1 else kw.get("dim", 0))
        else:
            raise FrontendError(f"unsupported op {name} at {self.where}")
        self.env[node] = out

    def split(self, node, name):
        a = node.args
        x = self.value(a[0])
        shape = x.type.shape
        dim = a[2] if len(a) > 2 else node.kwargs.get("dim", 0)
        dim %= len(shape)
        n = shape[dim]
        if name == "aten.split.Tensor":
            size = a[1]
            sizes = [size] * (n // size) + ([n % size] if n % size else [])
        elif name == "aten.split_with_sizes.default":
            sizes = list(a[1])
        elif name == "aten.chunk.default":
            k = a[1]
            size = -(-n // k)
            sizes = [size] * (n // size) + ([n % size] if n % size else [])
        else:
            raise FrontendError(f"unsupported op {name} at {self.where}")
        try:
            return self.g.multi_op("split", x, names=[f"{node.name}_{i}" for i in range(len(sizes))],
                                   meta={"loc": self.loc} if self.loc else None, sizes=sizes, axis=dim)
        except OpError as e:
            raise FrontendError(f"{name}: {e} at {self.where}") from e


def import_exported_program(ep: torch.export.ExportedProgram) -> Graph:
    """ATen graph of an exported step -> verified IR graph (canonicalized: comparisons become heaviside)."""
    from .canonicalize import canonicalize
    graph = _Importer(ep).run()
    canonicalize(graph)
    verify(graph)
    check_egru_step(graph)
    return graph


def check_egru_step(graph: Graph) -> None:
    """Refuse a graph that is not an EGRU language-model step: ``(tokens: int[1], c0, y0, ...) -> (logits
    [1, V], c0', y0', ...)`` with at least one layer, each state output shaped like its input, an embedding
    of the tokens and a threshold (heaviside) per layer. The message says what was found instead."""
    ins, outs = graph.inputs, graph.outputs

    def sig(values):
        return ", ".join(f"{v.name}: {'x'.join(map(str, v.type.shape)) or 'scalar'} {v.type.dtype}" for v in values)

    found = f"found ({sig(ins)}) -> ({sig(outs)})"
    problem = None
    n_layers = (len(ins) - 1) // 2
    if n_layers < 1 or len(outs) != len(ins):
        problem = "expected (tokens, c0, y0, ...) -> (logits, c0', y0', ...) with at least one layer"
    elif not ins[0].type.dtype.startswith("i") or ins[0].type.shape != (1,):
        problem = "the first input must be the token id (integer, shape [1])"
    elif len(outs[0].type.shape) != 2 or outs[0].type.shape[0] != 1:
        problem = "the first output must be the logits [1, V]"
    elif any(i.type != o.type or len(i.type.shape) != 2 for i, o in zip(ins[1:], outs[1:])):
        problem = "each layer's state outputs must have the shape [1, h] of its state inputs"
    else:
        ops = [n.op for n in graph.nodes]
        if not any(n.op == "embedding" and ins[0] in n.inputs for n in graph.nodes):
            problem = "no embedding of the token input"
        elif ops.count("heaviside") < n_layers:
            problem = f"{ops.count('heaviside')} thresholds (heaviside) for {n_layers} layers"
    if problem:
        raise FrontendError(f"not an EGRU step: {problem}; {found}"[:400])


def trace_model(module: torch.nn.Module, hidden_sizes: list[int] | None = None) -> Graph:
    """Export the single-step function of `module` and import it as an IR graph."""
    if hidden_sizes is None:
        hidden_sizes = list(module.config.hidden_sizes)
    return import_exported_program(export_step(module, hidden_sizes))
