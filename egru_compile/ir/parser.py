"""Parser of the IR text form (`printer.py` documents the syntax): text (+ its resource arrays) -> Graph.

``print_graph(parsed.graph, parsed.vocab) == text`` for any text the printer wrote. Every op's declared
result types are checked against the op's type rule, constants against their declared types, resource
arrays for dtype, shape, sparse structure and finite values; the graph is then verified. Malformed text
raises `IRParseError` with a one-line ``FILE:LINE:COL: message``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Mapping

from .graph import Graph
from .lexer import IRParseError
from .lexer import Line as _Line
from .ops import OPS, OpError, infer_types
from .printer import HEADER, VOCAB_KEY
from .text_constants import ConstantReader
from .verify import VerificationError, verify


@dataclass
class ParsedIR:
    graph: Graph
    vocab: list[str] | None = None
    uses_resources: bool = False


class _Parser:
    def __init__(self, text: str, resources: Mapping | None, path: str, resource_file: str | None):
        self.text, self.path = text, path
        self.consts = ConstantReader(resources, resource_file)
        self.meta: dict = {}


    def parse(self) -> ParsedIR:
        lines = self.text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines or lines[0].rstrip() != HEADER:
            raise IRParseError(f"{self.path}:1:1: not egru IR text (the first line must be '{HEADER}')")
        vocab = None
        graph = None
        env: dict = {}
        i = 1
        while i < len(lines):
            text, lineno = lines[i], i + 1
            s = text.strip()
            i += 1
            if not s or (s.startswith("//") and graph is None):
                continue
            if graph is None:
                if s.startswith("#vocab"):
                    vocab = self.vocab_line(text, lineno, vocab)
                elif s.startswith("#meta"):
                    self.meta_line(text, lineno)
                elif s.startswith("graph"):
                    graph, i = self.graph_block(lines, i - 1, env)
                else:
                    raise IRParseError(f"{self.path}:{lineno}:1: expected #vocab, #meta or graph")
                continue
            if not s.startswith("//"):
                raise IRParseError(f"{self.path}:{lineno}:1: text after the end of the graph")
        if graph is None:
            raise IRParseError(f"{self.path}:{len(lines) + 1}:1: no graph")
        graph.meta.update(self.meta)
        try:
            verify(graph, allow_unused=True)
        except VerificationError as e:
            raise IRParseError(f"{self.path}: {e}") from None
        return ParsedIR(graph, vocab, self.consts.uses_resources)

    def vocab_line(self, text, lineno, prev):
        if prev is not None:
            raise IRParseError(f"{self.path}:{lineno}:1: #vocab given twice")
        m = re.match(r"^#vocab = (.*)$", text)
        if not m:
            raise IRParseError(f"{self.path}:{lineno}:1: expected '#vocab = [...]' or '#vocab = resource<...>'")
        rest, col = m.group(1), m.start(1) + 1
        r = re.match(rf"^resource<{VOCAB_KEY}, (\d+) words>$", rest)
        if r:
            ln = _Line(self, lineno, "")
            arr = self.consts.resource(ln, VOCAB_KEY, col)
            if arr.ndim != 1 or arr.dtype.kind != "U" or len(arr) != int(r.group(1)):
                raise IRParseError(f"{self.path}:{lineno}:{col}: resource {VOCAB_KEY} is not a list of "
                                   f"{r.group(1)} words")
            return [str(w) for w in arr.tolist()]
        try:
            words = json.loads(rest)
        except json.JSONDecodeError as e:
            raise IRParseError(f"{self.path}:{lineno}:{col + e.pos}: bad vocabulary: {e.msg}") from None
        except RecursionError:
            raise IRParseError(f"{self.path}:{lineno}:{col}: #vocab nested too deeply") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise IRParseError(f"{self.path}:{lineno}:{col}: #vocab must be a list of strings")
        return words

    def meta_line(self, text, lineno):
        m = re.match(r"^#meta ([A-Za-z_]\w*) = (.*)$", text)
        if not m:
            raise IRParseError(f"{self.path}:{lineno}:1: expected '#meta NAME = JSON'")
        key, rest, col = m.group(1), m.group(2), m.start(2) + 1
        if key in self.meta:
            raise IRParseError(f"{self.path}:{lineno}:7: #meta {key} given twice")
        try:
            self.meta[key] = json.loads(rest)
        except json.JSONDecodeError as e:
            raise IRParseError(f"{self.path}:{lineno}:{col + e.pos}: bad JSON: {e.msg}") from None
        except RecursionError:
            raise IRParseError(f"{self.path}:{lineno}:{col}: JSON nested too deeply") from None

    def graph_block(self, lines, start, env):
        ln = _Line(self, start + 1, lines[start])
        ln.take("word", "graph")
        k, gname, col = ln.peek()
        ln.take("sym")
        gname = ln.string(gname[1:], col + 1) if gname[1:].startswith('"') else gname[1:]
        g = Graph(gname)
        ln.take("punct", "(")
        if not ln.accept(")"):
            while True:
                k, t, col = ln.peek()
                ln.take("val")
                ln.take("punct", ":")
                ty = ln.type_()
                meta = ln.value_meta()
                if t[1:] in env:
                    ln.fail(f"redefinition of {t}", col)
                env[t[1:]] = g.add_input(t[1:], ty, **meta)
                if ln.accept(")"):
                    break
                ln.take("punct", ",", "',' or ')'")
        ln.take("punct", "{")
        ln.end()
        i = start + 1
        returned = False
        while True:
            if i >= len(lines):
                raise IRParseError(f"{self.path}:{len(lines) + 1}:1: missing '}}' at the end of the graph")
            text, lineno = lines[i], i + 1
            i += 1
            s = text.strip()
            if not s or s.startswith("//"):
                continue
            ln = _Line(self, lineno, text)
            if ln.accept("}"):
                ln.end()
                if not returned:
                    ln.fail("graph has no return", 1)
                return g, i
            if returned:
                ln.fail("nothing may follow return but '}'")
            if ln.at("return"):
                self.return_line(ln, g, env)
                returned = True
            else:
                self.node_line(ln, g, env)

    def return_line(self, ln, g, env):
        ln.take("word", "return")
        outs = []
        while True:
            k, t, col = ln.peek()
            ln.take("val")
            if t[1:] not in env:
                ln.fail(f"use of undefined value {t}", col)
            v = env[t[1:]]
            ln.take("punct", ":")
            tcol = ln.peek()[2]
            ty = ln.type_()
            if ty != v.type:
                ln.fail(f"{t} has type {v.type}, return declares {ty}", tcol)
            meta = ln.value_meta()
            if meta:
                v.meta = dict(meta)
            outs.append(v)
            if not ln.accept(","):
                break
        ln.end()
        g.outputs = outs

    def node_line(self, ln, g, env):
        names = []
        while True:
            k, t, col = ln.peek()
            ln.take("val", what="a %value or return")
            if t[1:] in env or t[1:] in [n for n, _ in names]:
                ln.fail(f"redefinition of {t}", col)
            names.append((t[1:], col))
            if not ln.accept(","):
                break
        ln.take("punct", "=")
        k, op, opcol = ln.peek()
        ln.take("word", what="an op name")
        if op not in OPS:
            ln.fail(f"unknown op {op!r}", opcol)
        if op == "const":
            if len(names) != 1:
                ln.fail("const defines one value", names[1][1])
            label = None
            if ln.peek()[0] == "sym":
                lcol = ln.peek()[2]
                raw = ln.take("sym")[1:]
                label = ln.string(raw, lcol + 1) if raw.startswith('"') else raw
            build = self.consts.payload(ln, names[0][0])
            attrs = ln.attr_dict() if ln.at("{") else {}
            ln.take("punct", ":")
            ty = ln.type_()
            loc = ln.loc()
            ln.end()
            data = build(ty)
            if label is not None:
                attrs["label"] = label
            attrs = {"data": data, **attrs}
            node = g.create_node("const", [], [ty], attrs, [names[0][0]], {"loc": loc} if loc else None)
            env[names[0][0]] = node.outputs[0]
            return
        ln.take("punct", "(")
        inputs = []
        if not ln.accept(")"):
            while True:
                k, t, col = ln.peek()
                ln.take("val")
                if t[1:] not in env:
                    ln.fail(f"use of undefined value {t}", col)
                inputs.append(env[t[1:]])
                if ln.accept(")"):
                    break
                ln.take("punct", ",", "',' or ')'")
        attrs = ln.attr_dict() if ln.at("{") else {}
        ln.take("punct", ":")
        tcol = ln.peek()[2]
        types = [ln.type_()]
        while ln.accept(","):
            types.append(ln.type_())
        loc = ln.loc()
        ln.end()
        if len(types) != len(names):
            ln.fail(f"{len(names)} results but {len(types)} types", tcol)
        try:
            want = infer_types(op, [v.type for v in inputs], attrs)
        except (OpError, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
            msg = f"missing attribute {e}" if isinstance(e, KeyError) else str(e) or type(e).__name__
            ln.fail(f"{op}: {msg}", opcol)
        if want != types:
            ln.fail(f"{op} gives {', '.join(map(str, want))}, declared {', '.join(map(str, types))}", tcol)
        node = g.create_node(op, inputs, types, attrs, [n for n, _ in names], {"loc": loc} if loc else None)
        for v in node.outputs:
            env[v.name] = v


def parse_ir(text: str, resources: Mapping | None = None, path: str = "<text>",
             resource_file: str | None = None) -> ParsedIR:
    """Parse IR text; `resources` maps resource names to arrays (an ``np.load``-ed npz, named
    `resource_file` in messages) for the constants the text does not hold inline."""
    return _Parser(text, resources, path, resource_file).parse()
