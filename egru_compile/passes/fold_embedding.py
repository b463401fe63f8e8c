"""fold-embedding: mark the first layer's input product of an embedding lookup for folding: the target
multiplies the embedding table by that layer's input matrix once (at load time) into a [V, n_out] table,
so a step is one row lookup instead of a lookup and a matrix-vector product.

A dense (not event-gated) ``sparse_matvec`` / ``matmul`` / ``linear`` with a constant weight whose batch-1
input is ``embedding(constant table, ids)`` gets ``fold_embedding=True`` when target option
``fold_embedding`` is True, or None (auto) and the folded table, V x n_out f32, is at most ``fold_max_mb``
MiB. The IR's meaning is unchanged (the attribute says how to compute the same product).

Before::

    %embedding = embedding(%embeddings_weight, %tokens) : tensor<1x8xf32>
    %gx0 = sparse_matvec(%embedding, %w0_input, %rnns_0_bias) {layer=0, role=input} : tensor<1x36xf32>

After::

    %embedding = embedding(%embeddings_weight, %tokens) : tensor<1x8xf32>
    %gx0 = sparse_matvec(%embedding, %w0_input, %rnns_0_bias) {fold_embedding=True, layer=0, role=input}

Options (`target_options.target_option`): ``fold_embedding`` (None or "auto" = by size; True / "on":
always; False / "off": never), ``fold_max_mb`` (256). The onnx and tvm targets both take them
(``--fold-embedding``, ``--fold-max-mb``) and decide by this pass.
"""
from __future__ import annotations

import numpy as np

from ..ir import Graph, Node, Value
from .manager import PassOptions, register_pass
from .target_options import target_option
from .utils import eval_constant

FOLDABLE_OPS = ("sparse_matvec", "matmul", "linear")
#: default of ``fold_max_mb``: the largest folded table (MiB) the auto rule builds
FOLD_MAX_MB = 256.0


def fold_mode(value) -> bool | None:
    """The ``fold_embedding`` option as the pass reads it: None ("auto"), True ("on") or False ("off")."""
    if value is None or isinstance(value, bool):
        return value
    modes = {"auto": None, "on": True, "true": True, "off": False, "false": False}
    if isinstance(value, str) and value.lower() in modes:
        return modes[value.lower()]
    raise ValueError(f"fold_embedding must be 'auto', 'on' or 'off', not {value!r}")


def table_mib(vocab_size: int, n_out: int) -> float:
    """MiB of a folded [vocab_size, n_out] float32 table."""
    return vocab_size * n_out * 4 / 2 ** 20


def embedding_source(x: Value, cache: dict | None = None) -> tuple[Value, Value] | None:
    """(table, ids) when `x` = embedding(constant table, non-constant ids)."""
    p = x.producer
    if p is None or p.op != "embedding":
        return None
    if eval_constant(p.inputs[0], cache) is None or eval_constant(p.inputs[1], cache) is not None:
        return None
    return p.inputs[0], p.inputs[1]


def _foldable(node: Node, cache: dict, force: bool, max_mb: float) -> bool:
    if node.op not in FOLDABLE_OPS or node.attrs.get("gated") or len(node.inputs) < 2:
        return False
    x, w = node.inputs[0], node.inputs[1]
    src = embedding_source(x, cache)
    if src is None or eval_constant(w, cache) is None:
        return False
    table = np.asarray(eval_constant(src[0], cache))
    if table.ndim != 2 or x.type.shape[0] != 1:
        return False
    n_out = node.outputs[0].type.shape[-1]
    return force or table_mib(table.shape[0], n_out) <= max_mb


def products_to_fold(graph: Graph, mode: bool | None = None, max_mb: float = FOLD_MAX_MB) -> list[Node]:
    """The products the rule folds (none when `mode` is False; every foldable one when True; by table size
    when None); the graph is not changed — a target that decides without annotating (tvm) calls this."""
    if mode is False:
        return []
    cache: dict = {}
    return [node for node in graph.nodes if _foldable(node, cache, mode is True, max_mb)]


def fold_embedding(graph: Graph, mode: bool | None = None, max_mb: float = FOLD_MAX_MB) -> int:
    """Set ``fold_embedding=True`` on the products `products_to_fold` picks and remove it from the others (a
    second run re-decides); returns how many are marked."""
    fold = {id(n) for n in products_to_fold(graph, mode, max_mb)}
    for node in graph.nodes:
        if id(node) in fold:
            node.attrs["fold_embedding"] = True
        else:
            node.attrs.pop("fold_embedding", None)
    return len(fold)


@register_pass("fold-embedding", invalidates=())        # an annotation: same math, same MACs
def run(graph: Graph, options: PassOptions) -> dict:
    return {"folded": fold_embedding(graph, fold_mode(target_option(options, "fold_embedding", None)),
                                     float(target_option(options, "fold_max_mb", FOLD_MAX_MB)))}
