"""Op signatures: what an IR op accepts (operand count, attribute names and checked values).

`OpDef` is one op's entry in the op table (`ops.OPS`): its type rule, its numpy semantics and its signature;
`Attr` is one attribute (a checker of its value, required or optional); `ANNOTATIONS` are the attributes passes
attach to any op. `OpDef.check_signature` refuses a wrong operand count, an unknown attribute or a value out of
range with an `OpError`. The op definitions themselves are in `ops`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .sparse import SparseMatrix
from .types import DTYPES, TensorType

_DTYPE_NAMES = tuple(DTYPES)


class OpError(Exception):
    pass


# ------------------------------------------------------------------------------------------------ attributes
def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v) -> bool:
    return _is_int(v) or isinstance(v, (float, np.floating))


def _finite_or_none(v):
    if v is None:
        return None
    if not _is_real(v) or not math.isfinite(float(v)):
        return "must be a finite number or none"
    return None


def _int_at_least(lo: int):
    def check(v):
        return None if _is_int(v) and v >= lo else f"must be a whole number >= {lo}"
    return check


def _one_of(*choices):
    def check(v):
        return None if isinstance(v, str) and v in choices else f"must be one of {', '.join(choices)}"
    return check


def _string(v):
    return None if isinstance(v, str) else "must be a string"


def _flag(v):
    return None if isinstance(v, bool) else "must be true or false"


def _fraction(v):
    return None if _is_real(v) and 0.0 <= float(v) <= 1.0 else "must be a number in [0, 1]"


def _int(v):
    return None if _is_int(v) else "must be a whole number"


def _sizes(v):
    if not isinstance(v, (list, tuple)) or not v or not all(_is_int(s) and s >= 0 for s in v):
        return "must be a non-empty list of whole numbers >= 0"
    return None


def _dtype(v):
    return None if isinstance(v, str) and v in _DTYPE_NAMES else f"must be one of {', '.join(_DTYPE_NAMES)}"


def _data(v):
    if isinstance(v, SparseMatrix) or (isinstance(v, np.ndarray) and v.dtype != object):
        return None
    return "must be an array"


@dataclass(frozen=True)
class Attr:
    """One attribute of an op's signature: `check(value)` returns what is wrong (None: fine)."""
    check: Callable[[object], str | None]
    required: bool = False


#: attributes passes attach to any op (provenance, statistics, lowering hints); values checked like op attrs
#: (none means unset)
ANNOTATIONS: dict[str, Attr] = {
    "label": Attr(_string),                  # source weight name(s)
    "layer": Attr(_int_at_least(0)),         # which EGRU layer an op belongs to
    "role": Attr(_string),                   # what a matrix is for (input, recurrent, projection, ...)
    "nnz": Attr(_int_at_least(0)),
    "density": Attr(_fraction),
    "quantized": Attr(_string),
    "dropped": Attr(_int_at_least(0)),       # entries quantization rounded to 0
    "fused": Attr(_int_at_least(1)),
    "gated": Attr(_flag),
    "fold_embedding": Attr(_flag),
    "weight_dtype": Attr(_one_of("f32", "f16", "i8")),
}


@dataclass(frozen=True)
class OpDef:
    name: str
    infer: Callable[[list[TensorType], dict], list[TensorType]]
    compute: Callable[..., list]
    doc: str = ""
    arity: tuple[int, int | None] = (0, None)      # least and most operands (None: no limit)
    attrs: dict = field(default_factory=dict)      # op attributes: name -> Attr

    def check_signature(self, n_inputs: int, attrs: dict) -> None:
        """OpError when the operand count or an attribute (name or value) does not fit this op."""
        lo, hi = self.arity
        if n_inputs < lo or (hi is not None and n_inputs > hi):
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise OpError(f"{self.name} takes {want} operand{'s' if want != '1' else ''}, given {n_inputs}")
        for key, value in attrs.items():
            spec = self.attrs.get(key) or ANNOTATIONS.get(key)
            if spec is None:
                known = sorted(set(self.attrs) | set(ANNOTATIONS))
                raise OpError(f"{self.name} has no attribute {key!r} (known: {', '.join(known)})")
            if value is None and key not in self.attrs:
                continue                            # an annotation a pass left unset
            problem = spec.check(value)
            if problem:
                raise OpError(f"{self.name} attribute {key}={_short(value)} {problem}")
        for key, spec in self.attrs.items():
            if spec.required and key not in attrs:
                raise OpError(f"{self.name} needs attribute {key!r}")


def _short(value) -> str:
    text = repr(value) if not isinstance(value, (np.ndarray, SparseMatrix)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
