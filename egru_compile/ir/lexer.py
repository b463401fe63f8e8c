"""The IR text's tokens, line by line: `Line` splits one line into (kind, text, column) tokens (strings, %values,
@symbols, words, punctuation) and reads them with a cursor; a malformed line raises `IRParseError` with a
one-line ``FILE:LINE:COL: message``."""
from __future__ import annotations

import json
import re

from ..errors import EgruError
from .types import DTYPES, TensorType


class IRParseError(EgruError):
    """Malformed IR text or resource file; the message is ``FILE:LINE:COL: what is wrong``."""


_TOKEN = re.compile(r'''\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<val>%[A-Za-z0-9_]+)|'''
                    r'''(?P<sym>@(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9_.\-#]+))|(?P<word>[A-Za-z0-9_.+\-]+)|'''
                    r'''(?P<punct>[(){}\[\]<>,=:]))''')
_INT = re.compile(r"^[-+]?\d+$")
#: deepest nesting of attribute lists (and of #meta JSON) accepted: no attribute of any op nests at all
_MAX_NESTING = 8
_FLOAT = re.compile(r"^[-+]?(\d+\.\d*([eE][-+]?\d+)?|\d+[eE][-+]?\d+|inf|nan)$")


class Line:
    """Tokens of one line with a cursor; errors carry the line and column."""

    def __init__(self, parser, lineno: int, text: str):
        self.p, self.lineno, self.text = parser, lineno, text
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
                self.fail(f"unexpected character {text[col - 1]!r}", col)
            kind = m.lastgroup
            self.toks.append((kind, m.group(kind), m.start(kind) + 1))
            pos = m.end()
        self.i = 0

    def fail(self, msg: str, col: int | None = None):
        if col is None:
            col = self.toks[self.i][2] if self.i < len(self.toks) else len(self.text) + 1
        raise IRParseError(f"{self.p.path}:{self.lineno}:{col}: {msg}")

    def peek(self, k: int = 0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eol", "", len(self.text) + 1)

    def at(self, text: str) -> bool:
        return self.peek()[1] == text and self.peek()[0] in ("punct", "word")

    def take(self, kind: str | None = None, text: str | None = None, what: str | None = None) -> str:
        k, t, col = self.peek()
        if (kind is not None and k != kind) or (text is not None and t != text):
            want = what or (repr(text) if text else {"val": "a %value", "word": "a name", "sym": "an @symbol",
                                                     "str": "a string"}.get(kind, kind))
            self.fail(f"expected {want}, found {repr(t) if t else 'end of line'}", col)
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def end(self):
        if self.i < len(self.toks):
            self.fail(f"unexpected {self.peek()[1]!r}")

    # -------------------------------------------------------------------------------- pieces
    def type_(self) -> TensorType:
        col = self.peek()[2]
        self.take("word", "tensor", "a type tensor<...>")
        self.take("punct", "<")
        body = self.take("word", what="dims and element type")
        self.take("punct", ">")
        *dims, dtype = body.split("x")
        if dtype not in DTYPES or not all(d.isdigit() for d in dims):
            self.fail(f"bad tensor type tensor<{body}>", col)
        return TensorType(tuple(int(d) for d in dims), dtype)

    def scalar(self):
        k, t, col = self.peek()
        if k == "str":
            self.i += 1
            return self.string(t, col)
        if k != "word":
            self.fail(f"expected a value, found {t!r}" if t else "expected a value", col)
        self.i += 1
        if t in ("true", "false"):
            return t == "true"
        if t == "none":
            return None
        if _INT.match(t):
            return int(t)
        if _FLOAT.match(t):
            return float(t)
        self.fail(f"bad value {t!r}", col)

    def string(self, token: str, col: int) -> str:
        try:
            return json.loads(token)
        except json.JSONDecodeError as e:
            self.fail(f"bad string: {e.msg}", col + e.pos)

    def attr_value(self, depth: int = 0):
        if self.at("[") and depth >= _MAX_NESTING:
            self.fail(f"attribute lists nested deeper than {_MAX_NESTING}")
        if self.accept("["):
            items = []
            if not self.accept("]"):
                while True:
                    items.append(self.attr_value(depth + 1))
                    if self.accept("]"):
                        break
                    self.take("punct", ",", "',' or ']'")
            return items
        return self.scalar()

    def attr_dict(self) -> dict:
        self.take("punct", "{")
        out = {}
        while True:
            k, key, col = self.peek()
            if k != "word" or not re.match(r"^[A-Za-z_]\w*$", key):
                self.fail("expected an attribute name", col)
            self.i += 1
            if key in out:
                self.fail(f"attribute {key!r} given twice", col)
            self.take("punct", "=")
            out[key] = self.attr_value()
            if self.accept("}"):
                return out
            self.take("punct", ",", "',' or '}'")

    def value_meta(self) -> dict:
        if not self.at("{"):
            return {}
        if self.peek(1)[0] == "word" and self.peek(2)[1] == "=":
            return self.attr_dict()
        self.take("punct", "{")
        col = self.peek()[2]
        role = self.take("word", what="a role")
        if role in ("tokens", "logits"):
            self.take("punct", "}")
            return {"role": role}
        if role not in ("state_in", "state_out"):
            self.fail(f"unknown value role {role!r} (tokens, logits, state_in, state_out)", col)
        lcol = self.peek()[2]
        layer = self.take("word", what="a layer lN")
        if not re.match(r"^l\d+$", layer):
            self.fail(f"expected a layer lN, found {layer!r}", lcol)
        kcol = self.peek()[2]
        kind = self.take("word", what="a state kind c or y")
        if kind not in ("c", "y"):
            self.fail(f"state kind must be c or y, found {kind!r}", kcol)
        self.take("punct", "}")
        return {"role": role, "layer": int(layer[1:]), "kind": kind}

    def loc(self) -> str | None:
        if not self.accept("loc"):
            return None
        self.take("punct", "(")
        k, t, col = self.peek()
        if k not in ("word", "str"):
            self.fail("expected a location", col)
        self.i += 1
        self.take("punct", ")")
        return self.string(t, col) if k == "str" else t
