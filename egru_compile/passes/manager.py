"""Pass registry and pass manager (TVM / MLIR style named passes).

A pass is a function ``fn(graph, options) -> dict | None`` that rewrites `graph` in place (transform) or
stores results in ``graph.meta`` (analysis); the optional dict is a few statistics shown in verbose mode.
Passes register themselves with `register_pass`; `PassManager` runs a list of them by name, verifying the
IR after each one.
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
    * ``quantize_measure_ppl`` — ``quantize-int8`` computes the PPL change when calib tokens are given.
    * ``verify`` — run the IR verifier after every pass (default on).
    """
    calib_tokens: np.ndarray | None = None
    sparse_format: str = "auto"
    quantize_measure_ppl: bool = True
    verify: bool = True

    def __post_init__(self):
        if self.calib_tokens is not None:
            self.calib_tokens = np.asarray(self.calib_tokens, dtype=np.int64).reshape(-1)
        if self.sparse_format not in ("auto", "csr", "csc"):
            raise PassError(f"unknown sparse format {self.sparse_format!r} (known: auto, csr, csc)")


@dataclass(frozen=True)
class Pass:
    name: str
    fn: Callable[[Graph, PassOptions], "dict | None"]
    kind: str = "transform"          # "transform" or "analysis"
    summary: str = ""

    def __call__(self, graph: Graph, options: PassOptions | None = None):
        return self.fn(graph, options or PassOptions())


#: name -> Pass, filled by `register_pass` (all built-in passes are registered when the package loads).
PASS_REGISTRY: dict[str, Pass] = {}

#: The pipeline `PassManager()` runs when given no names.
DEFAULT_PIPELINE: list[str] = ["const-fold", "fold-masks", "fuse-gates", "fuse-cell", "event-gating", "dce",
                               "count-macs"]


def register_pass(name: str, kind: str = "transform", summary: str = ""):
    """Decorator: ``@register_pass("my-pass")`` on ``def run(graph, options) -> dict | None``."""
    def wrap(fn):
        if name in PASS_REGISTRY and PASS_REGISTRY[name].fn is not fn:
            raise PassError(f"pass '{name}' registered twice")
        doc = summary or ((fn.__module__ and sys.modules[fn.__module__].__doc__) or fn.__doc__ or "")
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        PASS_REGISTRY[name] = Pass(name, fn, kind, first)
        return fn
    return wrap


def known_passes() -> list[str]:
    return sorted(PASS_REGISTRY)


def get_pass(name: str) -> Pass:
    if name not in PASS_REGISTRY:
        raise PassError(f"unknown pass '{name}' (known: {', '.join(known_passes())})")
    return PASS_REGISTRY[name]


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


class PassManager:
    """Runs named passes in order.

        pm = PassManager(["const-fold", "fold-masks"], PassOptions(calib_tokens=toks), verbose=True)
        g2 = pm.run(g)          # g is not modified (the manager works on a clone)
        pm.timings              # [("const-fold", 0.0012), ("fold-masks", 0.0031)]

    * ``pass_names``: None -> `DEFAULT_PIPELINE`; a list or a comma-separated string. Unknown names raise
      ``PassError("unknown pass 'x' (known: ...)")`` here, before anything runs.
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
