"""Which layers the partial-sum fan-in split takes when no unit needs it (graded-spike profiles): splitting
a layer by source range can need fewer cores (its axon-bound cores hold more units), but it can lengthen
that layer's phase — the 27M model's layer 0 split puts the dense embedding range of 62 units on each home
core (33k synops per token vs 14k unsplit), and the simulated latency rose 254 -> 345 us.

`choose_split` compares, per subset of the layers that `split.split_core_map` would split, the estimate's
*phase latency* (`model.CoreCosts.phase_ns`: per layer phase the busiest core's work with one delivery per
message it injects, the longest route, the barrier — the simulator's latency model) with the sequential
baseline's, and keeps the subset with the fewest cores whose phase latency is at most
`SPLIT_LATENCY_MARGIN` above the baseline's. Each subset is tried with the other layers refilled (fewer
cores where the split frees their output axons) and, where that changes their grouping, on the baseline's own
cores (their phases no longer: the 27M model's layer 0, whose refill holds more units and so more dense input
per core). A subset is filled and estimated in-order (`split.interleaved_slots`, no layout search): the layout
moves routes, which are a small part of a phase (under 1 us of ~100 us at 27M synapses).

A *crowded* baseline (`split.crowded`: a layer with fewer than 2 units per core, one unit per core where two
units' fan-in union exceeds the axons) is no latency reference — its cores each hold one unit's work: there
the split of every layer that needs fewer cores competes, cores first, as before (the 107M-synapse model:
1,939 cores vs ~17,000; `placement.place` keeps it where it is no worse on messages, hops and latency)."""
from __future__ import annotations

from itertools import combinations

import numpy as np

from .capacity import violations
from .estimate import estimate_split
from .model import CoreMap
from .split import crowded, interleaved_slots, split_core_map

#: a split subset is kept when its estimated phase latency is at most this much above the baseline's
SPLIT_LATENCY_MARGIN = 0.02


def phase_latency(costs) -> float:
    """ns per token of the RNN phases in the simulator's latency model (`model.CoreCosts.phase_ns`)."""
    return float(np.sum(costs.phase_ns))


def choose_split(nets, profile, calibrated: bool, seq, seq_est, info: dict | None = None):
    """The `model.CoreMap` of the layers' split that competes with the sequential baseline `seq` (its
    assignment's estimate `seq_est`, `estimate.AssignmentCosts`), or None: none needs fewer cores within the
    latency margin. ``info["split_choice"]`` receives one sentence for the report (which layers split, the cores and phase latency against the
    baseline's, the subsets dropped for their latency)."""
    full = split_core_map(nets, profile)
    if crowded(seq):         # < 2 units per core in a layer: cores first (the 107M model: 17k cores vs 1.9k)
        if full.n_cores >= seq.n_cores:
            return None
        if info is not None:
            info["split_choice"] = (f"crowded baseline (a layer with fewer than 2 units per core): the split of every "
                                    f"layer that needs fewer cores, {full.n_cores:,} vs {seq.n_cores:,} cores")
        return full
    if full.splits is None:
        return None                              # (a subset of the split layers may need fewer cores than all)
    layers = [l for l, s in enumerate(full.splits or []) if s is not None]
    base = phase_latency(seq_est.at(seq.slot_of_core, dense=False))
    maps = []
    for k in range(len(layers), 0, -1):
        for sub in combinations(layers, k):
            cm = full if k == len(layers) else split_core_map(nets, profile, only=set(sub))
            variants = [cm]
            unsplit = [l for l, sp in enumerate(cm.splits or [None] * len(nets)) if sp is None]
            if any(not _same_groups(cm.core_of[l], seq.core_of[l]) for l in unsplit):
                variants.append(split_core_map(nets, profile, only=set(sub), keep=seq.core_of))
            maps += [(sub, v) for v in variants if v.n_cores < seq.n_cores and v.splits is not None]
    cands, pick = [], None                       # estimated in order of cores, up to the first within the margin
    for sub, cm in sorted(maps, key=lambda x: x[1].n_cores):
        est = estimate_split(nets, CoreMap(cm.core_of, interleaved_slots(cm), cm.n_cores, None, cm.splits),
                             profile, calibrated)
        if violations(est, profile):
            continue
        cands.append((sub, cm, phase_latency(est)))
        if cands[-1][2] <= base * (1 + SPLIT_LATENCY_MARGIN):
            pick = cands[-1]
            break
    if info is not None:
        name = lambda sub: "layers " + ", ".join(map(str, sub)) if sub else "no layer"  # noqa: E731
        dropped = list(dict.fromkeys(f"{name(s)} ({cm.n_cores:,} cores, {lat / 1e3:.1f} us)" for s, cm, lat in cands
                                     if lat > base * (1 + SPLIT_LATENCY_MARGIN)))
        head = (f"fan-in split of {name(pick[0])}: {pick[1].n_cores:,} vs {seq.n_cores:,} cores, phase latency "
                f"{pick[2] / 1e3:.1f} vs {base / 1e3:.1f} us (estimated as simulated)" if pick else
                f"no fan-in split within {SPLIT_LATENCY_MARGIN:.0%} of the baseline's phase latency "
                f"({base / 1e3:.1f} us): the baseline's {seq.n_cores:,} cores kept")
        info["split_choice"] = head + (f"; dropped for latency: {'; '.join(dropped)}" if dropped else "")
    return pick[1] if pick else None


def _same_groups(a, b) -> bool:
    """Do unit -> core maps `a` and `b` group the units alike (core numbers aside)?"""
    return bool(np.array_equal(np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]))
