"""The IR's text form: deterministic, complete (everything a graph holds), and parsed back by `parser.py`
(``print_graph(parse_ir(text).graph, vocab) == text``).

    // egru-ir v1
    #vocab = resource<@vocab, 10000 words>
    #meta passes = ["const-fold", "fold-masks"]
    graph @step(%tokens: tensor<1xi64> {tokens}, %c0: tensor<1x32xf32> {state_in l0 c}, ...) {
      %thr = const @rnns.0.thr dense<[0.5, 0.25]> : tensor<2xf32>  loc(rnns.0)
      %w = const @rnns.0.kernel sparse_resource<w, csc, nnz=96> {layer=0, nnz=96, role="input"} : tensor<96x16xf32>
      %mm = sparse_matvec(%x, %w, %b) {layer=0, role="input"} : tensor<1x96xf32>  loc(rnns.0)
      return %logits: tensor<1x50xf32> {logits}, %c0_next: tensor<1x32xf32> {state_out l0 c}, ...
    }

* Line 1 is the header ``// egru-ir v1`` (how the IR source is detected). Other ``//`` lines are comments.
* ``#vocab`` — the vocabulary: a JSON list of words, or ``resource<@vocab, N words>``.
* ``#meta KEY = JSON`` — ``graph.meta`` entries (in insertion order) whose value is JSON data (numpy scalars
  become numbers). Analysis caches holding arrays (e.g. ``unit_activity``) are not part of the text.
* Value annotations: ``{tokens}``, ``{logits}``, ``{state_in l0 c}`` / ``{state_out l1 y}``, or a general
  attribute dict ``{key=value, ...}``.
* Attributes: ints, floats (shortest repr that reads back to the same float), ``"strings"`` (JSON),
  ``true``/``false``, ``none``, ``[lists]``; keys sorted. ``loc(...)``: a node's source location.
* Constants: ``const [@label] PAYLOAD [{attrs}] : TYPE``. A constant with at most `INLINE_LIMIT` numbers
  prints them inline — ``dense<[...]>`` (row-major) or ``sparse<csr|csc, indptr=[...], indices=[...],
  data=[...][, scale=[...]]>``; a larger one refers to the resource file beside the IR file (``FILE.npz``
  next to ``FILE``, see `resource_arrays`): ``dense_resource<NAME>`` or ``sparse_resource<NAME, csr|csc,
  nnz=N[, scale]>`` with arrays ``NAME`` or ``NAME.indptr``/``.indices``/``.data``/``.scale``; NAME is the
  constant's SSA name.
"""
from __future__ import annotations

import json
import re

import numpy as np

from .sparse import SparseMatrix, sparse_parts, sparse_to_arrays

HEADER = "// egru-ir v1"
#: constants printing at most this many numbers are inline; larger ones live in the resource file
INLINE_LIMIT = 32
#: vocabularies of at most this many words are inline
VOCAB_INLINE_LIMIT = 64
VOCAB_KEY = "@vocab"

_BARE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_SYMBOL = re.compile(r"^[A-Za-z0-9_.\-#]+$")


# ------------------------------------------------------------------------------------------------ scalars
def fmt_number(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return repr(float(x))


def fmt_attr(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt_attr(x) for x in v) + "]"
    if isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating)):
        return fmt_number(v)
    raise TypeError(f"attribute value {v!r} ({type(v).__name__}) has no text form")


def fmt_attrs(attrs: dict) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k}={fmt_attr(attrs[k])}" for k in sorted(attrs)) + "}"


def _fmt_array(a: np.ndarray) -> str:
    a = np.asarray(a).reshape(-1)
    if a.dtype == np.float32:       # shortest text that reads back to the same float32
        return "[" + ", ".join(str(x) for x in a) + "]"
    return "[" + ", ".join(fmt_number(x) for x in a.tolist()) + "]"


def _symbol(s: str) -> str:
    return s if _SYMBOL.match(s) else json.dumps(s)


# ------------------------------------------------------------------------------------------------ constants
def is_inline(data) -> bool:
    if isinstance(data, SparseMatrix):
        return sum(len(a) for _, a in sparse_parts(data)) <= INLINE_LIMIT
    return np.asarray(data).size <= INLINE_LIMIT


def _const_payload(node) -> str:
    data = node.attrs["data"]
    name = node.output.name
    if isinstance(data, SparseMatrix):
        if is_inline(data):
            return f"sparse<{data.fmt}, " + ", ".join(f"{k}={_fmt_array(a)}" for k, a in sparse_parts(data)) + ">"
        return f"sparse_resource<{name}, {data.fmt}, nnz={data.nnz}" + (", scale" if data.scale is not None else "") + ">"
    if is_inline(data):
        return f"dense<{_fmt_array(data)}>"
    return f"dense_resource<{name}>"


def resource_arrays(graph, vocab=None) -> dict[str, np.ndarray]:
    """The arrays the text of `graph` (and `vocab`) refers to, keyed as in the text: the resource file."""
    out: dict[str, np.ndarray] = {}
    for n in graph.nodes:
        if not n.is_const or is_inline(n.attrs["data"]):
            continue
        data = n.attrs["data"]
        if isinstance(data, SparseMatrix):
            out.update(sparse_to_arrays(data, n.output.name, sep="."))
        else:
            out[n.output.name] = np.asarray(data)
    words = _words(vocab)
    if words is not None and len(words) > VOCAB_INLINE_LIMIT:
        out[VOCAB_KEY] = np.array(words, dtype=str)
    return out


def _words(vocab) -> list[str] | None:
    """A word list from a `Vocabulary`, a list of words, or None."""
    return None if vocab is None else list(getattr(vocab, "words", vocab))


# ------------------------------------------------------------------------------------------------ lines
def format_node(node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    types = ", ".join(str(v.type) for v in node.outputs)
    if node.is_const:
        label = node.attrs.get("label")
        head = f"@{_symbol(label)} " if label is not None else ""
        attrs = {k: v for k, v in node.attrs.items() if k not in ("data", "label")}
        body = f"const {head}{_const_payload(node)}{fmt_attrs(attrs)}"
    else:
        args = ", ".join(f"%{v.name}" for v in node.inputs)
        body = f"{node.op}({args}){fmt_attrs(node.attrs)}"
    line = f"{outs} = {body} : {types}"
    loc = node.meta.get("loc")
    if loc:
        line += f"  loc({loc if _BARE.match(loc) else json.dumps(loc)})"
    return line


def fmt_value_meta(meta: dict) -> str:
    if not meta:
        return ""
    role = meta.get("role")
    if role in ("state_in", "state_out") and set(meta) == {"role", "layer", "kind"} \
            and isinstance(meta["layer"], int) and meta["kind"] in ("c", "y"):
        return f" {{{role} l{meta['layer']} {meta['kind']}}}"
    if role in ("tokens", "logits") and set(meta) == {"role"}:
        return f" {{{role}}}"
    return fmt_attrs(meta)


def _fmt_value_decl(v) -> str:
    return f"%{v.name}: {v.type}{fmt_value_meta(v.meta)}"


def _json_default(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    raise TypeError(type(x).__name__)


def meta_lines(meta: dict) -> list[str]:
    lines = []
    for k, v in meta.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(k)):
            continue
        try:
            text = json.dumps(v, default=_json_default)
        except (TypeError, ValueError):
            continue            # arrays (analysis caches) are not part of the text
        lines.append(f"#meta {k} = {text}")
    return lines


def analysis_meta(graph) -> dict:
    """The typed analysis results on `graph` as ``#meta`` entries keyed by their class name in snake case
    (e.g. ``mac_report``); results holding arrays are not part of the text. A parsed file keeps them as plain
    JSON in ``graph.meta`` (they document the file; passes recompute what they need)."""
    out = {}
    for result in sorted(getattr(graph, "analyses", ()), key=lambda r: type(r).__name__):
        key = re.sub(r"(?<!^)(?=[A-Z])", "_", type(result).__name__).lower()
        if key not in graph.meta:
            out[key] = result.to_json()
    return out


def print_graph(graph, vocab=None) -> str:
    """The complete text of `graph` (with `vocab`, a list of words, when given)."""
    lines = [HEADER]
    words = _words(vocab)
    if words is not None:
        lines.append("#vocab = " + (json.dumps(words) if len(words) <= VOCAB_INLINE_LIMIT
                                    else f"resource<{VOCAB_KEY}, {len(words)} words>"))
    lines += meta_lines(graph.meta)
    lines += meta_lines(analysis_meta(graph))
    lines.append(f"graph @{_symbol(graph.name)}(" + ", ".join(_fmt_value_decl(v) for v in graph.inputs) + ") {")
    for n in graph.nodes:
        lines.append("  " + format_node(n))
    lines.append("  return " + ", ".join(_fmt_value_decl(v) for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines) + "\n"
