"""Typed analysis results attached to a graph: ``graph.analyses`` (in the spirit of MLIR's AnalysisManager).

An analysis result is a dataclass deriving from `Analysis`; the store holds at most one result per class::

    graph.analyses.put(report)              # replaces an earlier result of the same class
    graph.analyses.get(MacReport)           # the result, or None
    graph.analyses.require(MacReport)       # the result, or AnalysisError naming the property to establish
    graph.analyses.invalidate({"macs"})     # drops the (non-persistent) results standing for those properties

`Analysis.property` names the pipeline property a result stands for (e.g. ``"macs"``, see
`passes.manager.PROPERTIES`); the pass manager invalidates it after a transform unless the transform
preserves it. A result with ``persistent = True`` is a record of what a pass did (quantize-int8's
perplexity change) and stays true after later semantics-preserving rewrites.
``to_json()`` gives the JSON form written to reports and manifests.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Iterable, Iterator, TypeVar

from ..errors import EgruError


class AnalysisError(EgruError):
    """An analysis result was asked for but has not been computed (or was invalidated)."""


class Analysis:
    """Base class of analysis results (subclasses are dataclasses)."""

    #: pipeline property the result stands for
    property: ClassVar[str] = ""
    #: kept when a transform invalidates `property` (a record of a pass, not a view of the current IR)
    persistent: ClassVar[bool] = False

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


A = TypeVar("A", bound=Analysis)


class AnalysisStore:
    """At most one result per `Analysis` subclass."""

    def __init__(self):
        self._results: dict[type, Analysis] = {}

    def put(self, result: Analysis) -> None:
        if not isinstance(result, Analysis):
            raise TypeError(f"{type(result).__name__} is not an Analysis")
        self._results[type(result)] = result

    def get(self, kind: type[A]) -> A | None:
        return self._results.get(kind)       # type: ignore[return-value]

    def require(self, kind: type[A]) -> A:
        r = self.get(kind)
        if r is None:
            raise AnalysisError(f"no {kind.__name__} on the graph: run the pass that establishes "
                                f"'{kind.property}' first")
        return r

    def invalidate(self, properties: Iterable[str]) -> list[type]:
        """Drop the non-persistent results whose property is in `properties`; returns the dropped classes."""
        props = set(properties)
        gone = [k for k, r in self._results.items() if r.property in props and not r.persistent]
        for k in gone:
            del self._results[k]
        return gone

    def discard(self, kind: type) -> None:
        self._results.pop(kind, None)

    def __contains__(self, kind: type) -> bool:
        return kind in self._results

    def __iter__(self) -> Iterator[Analysis]:
        return iter(list(self._results.values()))

    def __len__(self) -> int:
        return len(self._results)

    def __repr__(self) -> str:
        return f"AnalysisStore({', '.join(k.__name__ for k in self._results)})"
