"""One parallel region per step for the batched kernels (`shared.py`), in TIR frames (`tir.loop`'s protocol).

TVM lowers every ``T.parallel`` loop outside a region to its own launch of the thread pool (the workers woken,
the caller waiting for all of them): a step of the shared-read kernels had eight. Inside :func:`region`
(``pragma_parallel_launch_point``) the pool is launched once and every task runs the region's body; each
``T.parallel`` loop in it is split over the tasks (task k: the k-th contiguous range of its iterations) and a
:class:`phase` ends at a barrier (``pragma_parallel_barrier_when_finish``, `TVMBackendParallelBarrier`).
Statements outside a phase run on every task, so they may only bind loop variables and open phases; serial
work goes into a :class:`once`."""
from __future__ import annotations

__all__ = ["par", "phase", "once", "region"]


class par:
    """``for name in T.parallel(0, n)`` (`tir.loop`'s frame protocol)."""

    def __init__(self, name, n):
        from tvm.script import tirx as T
        self.name, self.frame = name, T.parallel(0, n)

    def __enter__(self):
        from . import tir
        return tir.loop.__enter__(self)

    def __exit__(self, *exc):
        return self.frame.__exit__(*exc)


class phase:
    """One phase of the step's parallel region (:func:`region`): ``for name in T.parallel(0, n)`` split over
    the region's tasks (contiguous ranges), then a barrier: no task starts the next phase before all finish."""

    def __init__(self, name, n):
        from tvm.script import tirx as T
        self.barrier, self.par = T.attr(0, "pragma_parallel_barrier_when_finish", 1), par(name, n)

    def __enter__(self):
        self.barrier.__enter__()
        return self.par.__enter__()

    def __exit__(self, *exc):
        self.par.__exit__(*exc)
        return self.barrier.__exit__(*exc)


class once(phase):
    """A serial phase: task 0 alone (part 0 of a `parts`-loop: an extent-1 loop would be simplified away and run
    on every task), the others wait at its end."""

    def __enter__(self):
        from tvm.script import tirx as T
        p = super().__enter__()
        self.cond, self.then = T.If(p == 0), T.Then()
        self.cond.__enter__()
        self.then.__enter__()

    def __exit__(self, *exc):
        self.then.__exit__(*exc)
        self.cond.__exit__(*exc)
        return super().__exit__(*exc)


def region():
    """The step's one parallel region: TVM's thread pool is woken once per step and its tasks run everything
    inside; loops outside a `phase` run on every task (they only bind loop variables and call phases)."""
    from tvm.script import tirx as T
    return T.attr(0, "pragma_parallel_launch_point", 1)
