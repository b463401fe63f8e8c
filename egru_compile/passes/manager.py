"""Pass registry, declared pass dependencies, pipeline building and the pass manager (TVM / MLIR style).

A pass is a function ``fn(graph, options) -> dict | None`` that rewrites `graph` in place (transform) or
stores a typed result in ``graph.analyses`` (analysis); the optional dict is a few statistics shown in
verbose mode. Passes register themselves with `register_pass`, declaring the graph properties they
``requires`` and ``establishes`` (and, if not the default, ``invalidates``) — the preconditions live with
the pass, as TVM's ``PassInfo(required=...)`` and torch.fx's ``requires()/ensures()``:

* `check_pipeline` refuses a pipeline in the wrong order before anything runs, with one line naming the
  pass, the missing property and the pass that establishes it;
* `build_pipeline` inserts the passes that establish the properties a target needs (e.g. ``int8-weights``
  for chip targets) where they belong;
* `PassManager` runs a list of passes by name, verifying the IR after each one and keeping
  ``graph.properties`` / ``graph.analyses`` up to date (a transform drops the analyses it invalidates).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import numpy as np

from ..errors import EgruError
from ..ir import Graph, VerificationError, verify


class PassError(EgruError):
    """A pass pipeline cannot be built or a pass failed (the message names the pass)."""


@dataclass
class PassOptions:
    """Options every pass can read.

    * ``calib_tokens`` — np.int64 token ids; ``count-macs`` measures activity on them (dynamic MACs),
      ``quantize-int8`` measures the perplexity before/after on them. None: dynamic MACs are null.
    * ``sparse_format`` — ``fold-masks`` format: ``auto`` (CSC where the input is an event tensor, CSR
      otherwise), ``csr`` or ``csc``.
    * ``quantize_measure_ppl`` — ``quantize-int8`` computes the PPL change when calib tokens and
      ``perplexity`` are given.
    * ``perplexity`` — ``fn(graph, tokens) -> float`` used by ``quantize-int8`` to measure that change
      (the runtime's `runtime.graph_perplexity`; the passes never import the runtime). None: not measured.
    * ``verify`` — run the IR verifier after every pass (default on).
    """
    calib_tokens: np.ndarray | None = None
    sparse_format: str = "auto"
    quantize_measure_ppl: bool = True
    perplexity: "Callable[[Graph, np.ndarray], float] | None" = None
    verify: bool = True

    def __post_init__(self):
        if self.calib_tokens is not None:
            self.calib_tokens = np.asarray(self.calib_tokens, dtype=np.int64).reshape(-1)
        if self.sparse_format not in ("auto", "csr", "csc"):
            raise PassError(f"unknown sparse format {self.sparse_format!r} (known: auto, csr, csc)")


@dataclass(frozen=True)
class Pass:
    """A registered pass and what it declares (TVM's PassInfo, torch.fx's requires/ensures):

    * ``requires`` — properties that must hold before it runs (`check_pipeline` refuses a pipeline where
      one does not, before anything runs);
    * ``establishes`` — properties that hold after it (for an analysis: the result it stores in
      ``graph.analyses``);
    * ``invalidates`` — properties that no longer hold after it. A transform invalidates every analysis
      property (`analysis_properties()`) unless it lists an explicit set; an analysis invalidates nothing.
    """
    name: str
    fn: Callable[[Graph, PassOptions], "dict | None"]
    kind: str = "transform"          # "transform" or "analysis"
    summary: str = ""
    requires: frozenset = frozenset()
    establishes: frozenset = frozenset()
    invalidates: "frozenset | None" = None

    def __call__(self, graph: Graph, options: PassOptions | None = None):
        return self.fn(graph, options or PassOptions())

    def invalidated(self) -> frozenset:
        if self.invalidates is not None:
            return self.invalidates
        return analysis_properties() if self.kind == "transform" else frozenset()


#: name -> Pass, filled by `register_pass` (all built-in passes are registered when the package loads).
PASS_REGISTRY: dict[str, Pass] = {}

#: The pipeline `PassManager()` runs when given no names.
DEFAULT_PIPELINE: list[str] = ["const-fold", "fold-masks", "fuse-gates", "fuse-cell", "event-gating", "dce",
                               "count-macs"]

#: property name -> one-line meaning; filled by `register_property` next to the pass that establishes it.
PROPERTIES: dict[str, str] = {}
_DETECTORS: dict[str, Callable[[Graph], bool]] = {}


def register_property(name: str, doc: str, detect: "Callable[[Graph], bool] | None" = None) -> str:
    """Declare a graph property. `detect(graph)` says whether an IR that no pass manager produced (the
    frontend's, or one read from a file) already has it; without it only the passes that ran count."""
    PROPERTIES[name] = doc
    if detect is not None:
        _DETECTORS[name] = detect
    return name


def register_pass(name: str, kind: str = "transform", summary: str = "", requires=(), establishes=(),
                  invalidates=None):
    """Decorator: ``@register_pass("my-pass", requires={"masks-folded"}, establishes={"my-prop"})`` on
    ``def run(graph, options) -> dict | None`` (see `Pass` for the declarations)."""
    def wrap(fn):
        if name in PASS_REGISTRY and PASS_REGISTRY[name].fn is not fn:
            raise PassError(f"pass '{name}' registered twice")
        module = sys.modules.get(fn.__module__) if fn.__module__ else None
        doc = summary or (getattr(module, "__doc__", None) or fn.__doc__ or "")
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        PASS_REGISTRY[name] = Pass(name, fn, kind, first, frozenset(requires), frozenset(establishes),
                                   None if invalidates is None else frozenset(invalidates))
        return fn
    return wrap


def known_passes() -> list[str]:
    return sorted(PASS_REGISTRY)


def get_pass(name: str) -> Pass:
    if name not in PASS_REGISTRY:
        raise PassError(f"unknown pass '{name}' (known: {', '.join(known_passes())})")
    return PASS_REGISTRY[name]


def analysis_properties() -> frozenset:
    """Properties established by analysis passes (what a transform invalidates by default)."""
    return frozenset(p for ps in PASS_REGISTRY.values() if ps.kind == "analysis" for p in ps.establishes)


def producer_of(prop: str) -> Pass | None:
    """The pass that establishes `prop` (the first registered one), or None."""
    return next((p for p in PASS_REGISTRY.values() if prop in p.establishes), None)


def parse_pipeline(spec: "str | list[str] | None") -> list[str]:
    """``"a,b , c"`` or ``["a", "b"]`` -> validated list of names; None -> DEFAULT_PIPELINE; the name
    ``default`` expands to the default pipeline. Unknown names raise PassError."""
    if spec is None:
        return list(DEFAULT_PIPELINE)
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    names = [n for n in names if n]
    out: list[str] = []
    for n in names:
        if n == "default":
            out += DEFAULT_PIPELINE
        else:
            get_pass(n)
            out.append(n)
    return out


# ------------------------------------------------------------------------------------------------ ordering
def graph_properties(graph: Graph, wanted: "set[str] | None" = None) -> set[str]:
    """Properties `graph` has: those the passes run on it established (``graph.properties``) plus, for
    the `wanted` ones (all when None) that have a detector, those its IR shows."""
    have = set(graph.properties)
    for name, detect in _DETECTORS.items():
        if name not in have and (wanted is None or name in wanted) and detect(graph):
            have.add(name)
    return have


def _apply(p: Pass, props: set[str]) -> set[str]:
    return (props - p.invalidated()) | p.establishes


def check_pipeline(names: list[str], have=frozenset()) -> set[str]:
    """Raise a one-line PassError naming the first pass whose required property does not hold at its
    place (given the input's properties `have`), before anything runs. Returns the properties at the end."""
    props = set(have)
    for i, n in enumerate(names):
        p = get_pass(n)
        missing = sorted(p.requires - props)
        if missing:
            prop = missing[0]
            by = producer_of(prop)
            where = f"does not hold after {', '.join(names[:i])}" if i else "the input IR does not have"
            fix = f"run '{by.name}' before it" if by is not None else "no registered pass establishes it"
            raise PassError(f"pass '{n}' requires '{prop}', which {where}: {fix}")
        props = _apply(p, props)
    return props


def _insert(names: list[str], prop: str, have: set[str], depth: int = 0) -> list[str]:
    """`names` with the pass establishing `prop` inserted (and, first, what that pass requires)."""
    end = check_pipeline(names, have)
    if prop in end:
        return names
    p = producer_of(prop)
    if p is None or depth > len(PASS_REGISTRY):
        raise PassError(f"no registered pass establishes '{prop}'")
    for req in sorted(p.requires):
        names = _insert(names, req, have, depth + 1)
    end = check_pipeline(names, have)
    valid = []
    for i in range(len(names) + 1):
        cand = names[:i] + [p.name] + names[i:]
        try:
            cend = check_pipeline(cand, have)
        except PassError:
            continue
        if prop in cend:
            valid.append((i, cand, cend >= end))
    if not valid:
        raise PassError(f"cannot place '{p.name}' in {','.join(names)} so that '{prop}' holds at the end")
    keeping = [v for v in valid if v[2]]
    return (keeping or valid)[-1][1]


def build_pipeline(names: "list[str] | str | None" = None, needs=(), have=frozenset()) -> list[str]:
    """The pipeline to run: `names` (None: the default; a list or ``"a,b"``; ``default`` expands) checked
    for order, with the passes that establish each property in `needs` inserted where missing.

    A needed property's pass goes after the passes it requires and before the analyses it would
    invalidate: the latest position that keeps every property the pipeline ends with. E.g. the default
    pipeline with ``needs={"int8-weights"}`` gets ``quantize-int8`` just before ``count-macs`` (so the MAC
    report describes the int8 weights); a pipeline that already establishes it is returned unchanged.
    `have`: properties the input graph already has (`graph_properties`)."""
    out = parse_pipeline(names)
    have = set(have)
    check_pipeline(out, have)
    for prop in sorted(set(needs)):
        out = _insert(out, prop, have)
    return out


class PassManager:
    """Runs named passes in order.

        pm = PassManager(["const-fold", "fold-masks"], PassOptions(calib_tokens=toks), verbose=True)
        g2 = pm.run(g)          # g is not modified (the manager works on a clone)
        pm.timings              # [("const-fold", 0.0012), ("fold-masks", 0.0031)]

    * ``pass_names``: None -> `DEFAULT_PIPELINE`; a list or a comma-separated string. Unknown names raise
      ``PassError("unknown pass 'x' (known: ...)")`` here, before anything runs.
    * ``run`` first checks the order (`check_pipeline`) against the input's properties (`graph_properties`):
      a pass whose required property does not hold raises PassError before any pass runs.
    * After each pass the graph's ``properties`` lose what it invalidates and gain what it establishes;
      the analyses standing for invalidated properties are dropped from ``graph.analyses``.
    * The verifier checks the input (dead code allowed: ``dce`` removes it) and, strictly, the IR after
      every pass (``options.verify``): a pass leaves no unused results. A failure raises PassError naming
      the pass.
    * ``print_ir_after_all``: writes ``// ----- IR after <pass> -----`` and the graph to `stream`.
    * ``verbose``: one line per pass with its time and statistics, to `stream`.
    """

    def __init__(self, pass_names: "list[str] | str | None" = None, options: PassOptions | None = None,
                 print_ir_after_all: bool = False, verbose: bool = False, stream: TextIO | None = None):
        self.pass_names = parse_pipeline(pass_names)
        self.passes = [get_pass(n) for n in self.pass_names]
        self.options = options or PassOptions()
        self.print_ir_after_all = print_ir_after_all
        self.verbose = verbose
        self.stream = stream if stream is not None else sys.stderr
        self.timings: list[tuple[str, float]] = []
        self.stats: list[tuple[str, dict]] = []

    @property
    def total_time(self) -> float:
        return sum(t for _, t in self.timings)

    def run(self, graph: Graph, inplace: bool = False) -> Graph:
        g = graph if inplace else graph.clone()
        self.timings = []
        self.stats = []
        wanted = set().union(*(p.requires for p in self.passes))
        check_pipeline(self.pass_names, graph_properties(g, wanted))
        if self.options.verify:
            self._verify(g, "input", allow_unused=True)
        for p in self.passes:
            t0 = time.perf_counter()
            try:
                stats = p.fn(g, self.options) or {}
            except PassError:
                raise
            except Exception as e:  # noqa: BLE001 - report which pass failed
                raise PassError(f"pass '{p.name}' failed: {type(e).__name__}: {e}") from e
            dt = time.perf_counter() - t0
            self.timings.append((p.name, dt))
            self.stats.append((p.name, dict(stats)))
            g.meta.setdefault("passes", []).append(p.name)
            gone = p.invalidated()
            g.analyses.invalidate(gone)
            g.properties = (g.properties - gone) | set(p.establishes)
            if self.options.verify:
                self._verify(g, p.name)
            if self.verbose:
                st = ", ".join(f"{k}={v}" for k, v in stats.items())
                self.stream.write(f"[pass] {p.name:<14} {dt * 1e3:9.2f} ms  {len(g.nodes):4d} nodes"
                                  + (f"  ({st})" if st else "") + "\n")
            if self.print_ir_after_all:
                self.stream.write(f"// ----- IR after {p.name} -----\n{g}")
        if self.verbose:
            self.stream.write(f"[pass] total          {self.total_time * 1e3:9.2f} ms\n")
        self.stream.flush() if hasattr(self.stream, "flush") else None
        return g

    @staticmethod
    def _verify(g: Graph, where: str, allow_unused: bool = False) -> None:
        try:
            verify(g, allow_unused=allow_unused)
        except VerificationError as e:
            what = "input IR" if where == "input" else f"IR after pass '{where}'"
            raise PassError(f"{what} does not verify: {e}") from e


def run_passes(graph: Graph, pass_names: "list[str] | str | None" = None, options: PassOptions | None = None,
               **kw) -> Graph:
    """Shorthand for ``PassManager(pass_names, options, **kw).run(graph)``."""
    return PassManager(pass_names, options, **kw).run(graph)
