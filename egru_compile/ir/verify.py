"""IR verifier: every value defined once before use, types consistent with op rules, no cycles, no
undefined or unused values, recurrent state inputs paired with state outputs."""
from __future__ import annotations

from ..errors import EgruError
from .graph import Graph
from .ops import OPS, OpError, infer_types


class VerificationError(EgruError):
    pass


def verify(graph: Graph, allow_unused: bool = False) -> None:
    """Raise VerificationError naming the first problem found."""
    defined: set = set()
    names: set[str] = set()

    def define(v, where):
        if v in defined:
            raise VerificationError(f"value %{v.name} defined twice ({where})")
        if v.name in names:
            raise VerificationError(f"name %{v.name} used for two values ({where})")
        defined.add(v)
        names.add(v.name)

    for v in graph.inputs:
        define(v, "graph input")
    for i, n in enumerate(graph.nodes):
        where = f"node {i} '{n.op}'"
        if n.op not in OPS:
            raise VerificationError(f"unknown op '{n.op}' at {where}")
        for v in n.inputs:
            if v not in defined:
                producer = "never" if v.producer is None or v.producer not in graph.nodes else "later"
                raise VerificationError(
                    f"{where} uses %{v.name} before it is defined (defined {producer}: illegal cycle "
                    "or dangling value)")
        try:
            types = infer_types(n.op, [v.type for v in n.inputs], n.attrs)
        except (OpError, KeyError, IndexError, TypeError, ValueError) as e:
            raise VerificationError(f"{where}: {e}") from e
        if len(types) != len(n.outputs):
            raise VerificationError(f"{where}: expected {len(types)} outputs, has {len(n.outputs)}")
        for t, v in zip(types, n.outputs):
            if t != v.type:
                raise VerificationError(f"{where}: %{v.name} has type {v.type}, op rule gives {t}")
            if v.producer is not n:
                raise VerificationError(f"{where}: %{v.name} does not point back to its producer")
            define(v, where)
    for v in graph.outputs:
        if v not in defined:
            raise VerificationError(f"graph output %{v.name} is undefined")
    if not allow_unused:
        used = {v for n in graph.nodes for v in n.inputs} | set(graph.outputs)
        for n in graph.nodes:
            if all(v not in used for v in n.outputs):
                raise VerificationError(f"result of '{n.op}' (%{n.outputs[0].name}) is never used")
    ins = {(v.meta.get("layer"), v.meta.get("kind")) for v in graph.inputs if v.meta.get("role") == "state_in"}
    outs = {(v.meta.get("layer"), v.meta.get("kind")) for v in graph.outputs if v.meta.get("role") == "state_out"}
    if ins != outs:
        raise VerificationError(f"recurrent state inputs {sorted(ins)} and outputs {sorted(outs)} do not pair up")
    for v in graph.outputs:
        if v.meta.get("role") == "state_out":
            match = [i for i in graph.inputs if i.meta.get("role") == "state_in"
                     and (i.meta["layer"], i.meta["kind"]) == (v.meta["layer"], v.meta["kind"])]
            if match and match[0].type != v.type:
                raise VerificationError(f"state %{v.name} type {v.type} differs from its input {match[0].type}")


def verify_step(graph: Graph) -> None:
    """Raise VerificationError unless `graph` is an EGRU step function, the form every target compiles and
    every runner drives: one integer ``tokens`` input [B], one ``logits`` output [B, V], and for each layer
    0..L-1 (L >= 1, no gaps) a ``c`` and a ``y`` state of type [B, h] f32 in and out (paired, see `verify`);
    every input has one of these roles."""
    tokens = [v for v in graph.inputs if v.meta.get("role") == "tokens"]
    logits = [v for v in graph.outputs if v.meta.get("role") == "logits"]
    if len(tokens) != 1 or len(logits) != 1:
        raise VerificationError(f"the graph is not a step function: it needs one tokens input and one logits "
                                f"output (has {len(tokens)} and {len(logits)})")
    t, lg = tokens[0].type, logits[0].type
    if len(t.shape) != 1 or t.dtype not in ("i64", "i32"):
        raise VerificationError(f"tokens input %{tokens[0].name} has type {t}, expected tensor<Bxi64>")
    if len(lg.shape) != 2 or lg.dtype != "f32" or lg.shape[0] != t.shape[0]:
        raise VerificationError(f"logits output %{logits[0].name} has type {lg}, expected tensor<{t.shape[0]}xVxf32>")
    for v in graph.inputs:
        if v.meta.get("role") not in ("tokens", "state_in"):
            raise VerificationError(f"graph input %{v.name} is neither the tokens input nor a recurrent state")
    states: dict = {}
    for v in graph.inputs:
        if v.meta.get("role") != "state_in":
            continue
        layer, kind = v.meta.get("layer"), v.meta.get("kind")
        if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0 or kind not in ("c", "y"):
            raise VerificationError(f"state %{v.name} has layer {layer!r} kind {kind!r} (expected lN, c or y)")
        if (layer, kind) in states:
            raise VerificationError(f"state l{layer} {kind} is given twice")
        if len(v.type.shape) != 2 or v.type.dtype != "f32" or v.type.shape[0] != t.shape[0]:
            raise VerificationError(f"state %{v.name} has type {v.type}, expected tensor<{t.shape[0]}xHxf32>")
        states[(layer, kind)] = v.type
    if not states:
        raise VerificationError("the graph has no recurrent state (no state_in/state_out values): not an EGRU "
                                "step function")
    layers = sorted({layer for layer, _ in states})
    if layers != list(range(len(layers))):
        raise VerificationError(f"recurrent state layers {layers} are not 0..{len(layers) - 1}")
    for layer in layers:
        c, y = states.get((layer, "c")), states.get((layer, "y"))
        if c is None or y is None or c != y:
            raise VerificationError(f"layer {layer} needs a c and a y state of one type (has c {c}, y {y})")
