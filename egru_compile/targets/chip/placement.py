"""Placers: which core every EGRU unit goes to and where each core sits on the mesh. One interface:
`place(nets, profile, max_chips, calibrated, objective)` -> (sequential baseline, ours), each a
`model.Placement` with its estimate (`estimate.py`) attached as ``costs`` — every candidate is evaluated once.

* `sequential_placement` is the baseline: units in order fill core 0 until a capacity limit is hit, then
  core 1, ...; core k sits in slot k.
* `balanced_placement` (ours): per-layer core counts (the baseline's, or more where the objective gives the
  spare cores to the bottleneck layer), each layer partitioned over its cores (`partition.py`), repaired
  under every capacity limit (`capacity.py`), then laid out on the mesh by local search on
  activity-weighted spike hops (`layout.py`).

What an objective does is one row of `objectives.OBJECTIVES` (the table the CLI's choices come from).
Capacity per core: see `capacity.py`; costs per event: see `costs.py`.
"""
from __future__ import annotations

import math

import numpy as np

from .capacity import (CoreOccupancy, check_fan_in, core_fits, core_memory_bytes, fill_sequential,  # noqa: F401
                       memory_bound, required_chips_error, unit_memory_bytes, violations)
from .costs import CostModel, hop_matrices, slot_coords  # noqa: F401 (the placement API's geometry)
from .estimate import estimate_assignment, estimate_split, evaluate  # noqa: F401
from .layout import layout, layout_summary
from .model import CoreCosts, CoreMap, Placement, PlacementError  # noqa: F401
from .network import LayerNet, net_reach, release_freed_heap
from .objectives import DEFAULT_OBJECTIVE, OBJECTIVES
from .partition import partition_layer, unit_cost
from .profile import ChipProfile
from .split import interleaved_slots, needs_split, split_core_map
from .split_choice import choose_split

__all__ = ["Placement", "PlacementError", "CoreCosts", "place", "evaluate", "violations", "sequential_placement",
           "balanced_placement", "required_chips_error", "slot_coords", "hop_matrices", "OBJECTIVES",
           "dense_reference"]

RELAYOUT_MAX_CORES = 2000


# ----------------------------------------------------------------------------------------------- baseline
def _chips_for(n_cores: int, profile: ChipProfile) -> int:
    return max(1, math.ceil(n_cores / profile.chip.cores))


def sequential_placement(nets, profile: ChipProfile, max_chips: int) -> Placement:
    """Baseline: first units on core 0 until a limit is hit, then core 1, ... (iterated until output axons fit).
    A unit whose fan-in alone exceeds the input-axon limit gets a core of its own (over the limit: `place`
    refuses such a network with `check_fan_in`; the dense reference of the chip report counts it)."""
    guess = [1.0] * len(nets)
    for _ in range(6):
        core_of, n = fill_sequential(nets, profile, guess)
        pl = Placement("sequential", core_of, np.arange(n), n, _chips_for(n, profile))
        reach = net_reach(nets, core_of, n)
        out_axons = sum(np.bincount(core_of[l], weights=reach[l].sum(1), minlength=n) for l in range(len(nets)))
        if not (out_axons > profile.core.output_axons).any():
            return pl
        # refine the per-unit output-axon estimate from the real fan-out to cores
        guess = [float(reach[l].sum(1).max()) for l in range(len(nets))]
    return pl


# ----------------------------------------------------------------------------------------------- ours
def layer_core_counts(pl: Placement) -> list[int]:
    """Cores holding units of each layer."""
    return [len(np.unique(c)) for c in pl.core_of]


def _spare_to_bottleneck(nets, profile, k: list[int], calibrated: bool) -> list[int]:
    """Spare cores of the chips we occupy anyway go to the layer with the highest MACs per core, while that
    layer is clearly the bottleneck (> 5 % above every other layer's per-core load)."""
    k = list(k)
    loads = [float(unit_cost(n, calibrated).sum()) for n in nets]
    spare = _chips_for(sum(k), profile) * profile.chip.cores - sum(k)
    while spare > 0:
        per = [loads[l] / k[l] for l in range(len(nets))]
        hi = int(np.argmax(per))
        others = max([per[l] for l in range(len(nets)) if l != hi], default=0.0)
        if per[hi] <= 1.05 * others or k[hi] >= nets[hi].hidden:
            break
        k[hi] += 1
        spare -= 1
    return k


def balanced_placement(nets, profile: ChipProfile, max_chips: int, calibrated: bool, seed: int = 0,
                       min_cores: list[int] | None = None, objective: str = DEFAULT_OBJECTIVE, method: str = "auto",
                       tighten: bool = True, info: dict | None = None) -> Placement:
    """Ours: per-layer core counts (``min_cores``, default the sequential baseline's; an objective with
    ``spare_cores`` adds the spare cores of the occupied chips to the bottleneck layer), each layer partitioned
    and repaired (`partition.partition_layer`, method ``auto`` | ``rate`` | ``hypergraph`` | ``lpt`` |
    ``metis`` | ``kahip``; ``auto`` is the objective's partitioner), then the mesh layout (`layout.layout`).
    An objective with ``tighten`` gives each layer one core fewer while its partition still repairs within the
    limits (unless the argument ``tighten`` is False). `info` receives the partitioners used and layout statistics. The result
    carries its estimate (``costs``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown placement objective {objective!r}")
    obj = OBJECTIVES[objective]
    check_fan_in(nets, profile)
    k = list(min_cores) if min_cores is not None else layer_core_counts(sequential_placement(nets, profile,
                                                                                              max_chips))
    if obj.spare_cores:
        k = _spare_to_bottleneck(nets, profile, k, calibrated)
    if method == "auto":
        method = obj.partitioner
    core_of, methods, base = [], [], 0
    for l in range(len(nets)):
        tightening = obj.tighten and tighten and 1 < k[l] <= nets[l].hidden // 4
        # (while tightening, the connectivity refinement runs once, at the final core count)
        assign, used = partition_layer(nets, l, profile, k[l], calibrated, method, seed, refine=not tightening)
        # fewer cores = fewer destinations per spike; take a core away while the layer still fits
        while tightening and 1 < k[l] <= nets[l].hidden // 4:
            try:
                partition_layer(nets, l, profile, k[l] - 1, calibrated, method, seed, refine=False)
            except PlacementError:
                break
            k[l] -= 1
        if tightening:
            assign, used = partition_layer(nets, l, profile, k[l], calibrated, method, seed)
        core_of.append(assign + base)
        methods.append(used)
        base += k[l]
    pl = Placement("balanced", core_of, np.arange(base), base, _chips_for(base, profile), objective)
    return relayout(nets, pl, profile, calibrated, info, partitioners=methods)


def relayout(nets, pl: Placement, profile: ChipProfile, calibrated: bool, info: dict | None = None,
             name: str | None = None, **extra) -> Placement:
    """The same unit assignment with the layout search's slots, its estimate attached (the assignment is
    estimated once: the search needs only its traffic)."""
    est = estimate_assignment(nets, pl.core_of, pl.n_cores, profile, calibrated)
    return _laid_out(est, pl, profile, info, name, **extra)


def _laid_out(est, pl: Placement, profile, info, name, **extra) -> Placement:
    stats: dict = {}
    slots = layout(est.traffic, profile, pl.n_cores, pl.chips, info=stats)
    if info is not None:
        info.update(extra, layout=stats)
    return Placement(name or pl.name, pl.core_of, slots, pl.n_cores, pl.chips, pl.objective, est.at(slots),
                     layout=stats)


def split_placement(nets: list[LayerNet], profile: ChipProfile, calibrated: bool, objective: str = "", cm=None):
    """`model.Placement` ``split`` of `split_core_map` (or its result `cm`) with its estimate (`estimate_split`);
    what the compile placer (`placement.place`) uses on a graded-spike profile when some unit's fan-in exceeds
    a core's input axons (the same in-order fill is then its own baseline), or when it needs fewer cores than
    the sequential baseline (it splits some layer, or a layer is `crowded`; compared with it in the report).
    Its layout: the mesh layout search (`layout.layout`) from `interleaved_slots` (a unit's parts next to its
    home core), on the estimate's traffic (spikes and partial sums)."""
    cm = split_core_map(nets, profile) if cm is None else cm
    chips = max(1, -(-cm.n_cores // profile.chip.cores))
    start = interleaved_slots(cm)
    first = estimate_split(nets, CoreMap(cm.core_of, start, cm.n_cores, None, cm.splits), profile, calibrated)
    stats: dict = {}
    slots = layout(first.traffic, profile, cm.n_cores, chips, start=start, info=stats)
    cm = CoreMap(cm.core_of, slots, cm.n_cores, None, cm.splits)
    pl = Placement("split", cm.core_of, cm.slot_of_core, cm.n_cores, chips, objective, splits=cm.splits,
                   layout=stats)
    pl.costs = estimate_split(nets, cm, profile, calibrated)
    return pl


def _unit_ns(nets, core_of, n: int, profile: ChipProfile, calibrated: bool) -> list[np.ndarray]:
    """Per layer and unit: its share of its core's phase time — synops of its incoming spikes, its compartment
    updates and the delivery of its own messages (one per core it reaches; the links are left to the layout)."""
    e, cpu = profile.energy, profile.core.compartments_per_unit
    out = []
    for net, r in zip(nets, net_reach(nets, core_of, n)):
        T = net.tokens if calibrated else 0
        rate = net.fires / T if T else np.ones(net.hidden)
        macs = net.mac_events / T if T else net.synapses.astype(np.float64)
        out.append(macs * e.synop_ns + rate * cpu * e.neuron_active_ns + (1 - rate) * cpu * e.neuron_inactive_ns
                   + rate * r.sum(1) * e.spike_tile_ns)
    return out


def balance_latency(nets, pl: Placement, profile: ChipProfile, calibrated: bool, info: dict | None = None,
                    max_moves: int | None = None) -> Placement:
    """The latency objective's last step: in every layer held by cores of its own, units move from the layer's
    busiest core (by `_unit_ns`) to the least-loaded core that takes them within every capacity limit
    (`CoreOccupancy.first_fit`), the unit that best halves the gap first, while a move lowers the pair's
    larger load. The result is laid out again and kept only when its estimated latency is lower."""
    w = _unit_ns(nets, pl.core_of, pl.n_cores, profile, calibrated)
    core_of, moved = [], 0
    for l, net in enumerate(nets):
        co = np.asarray(pl.core_of[l])
        cores = np.unique(co)
        shared = any(np.isin(cores, pl.core_of[m]).any() for m in range(len(nets)) if m != l)
        if len(cores) < 2 or shared:
            core_of.append(co)
            continue
        local = np.searchsorted(cores, co)
        st = CoreOccupancy(net, profile, len(cores), local, w[l])
        for _ in range(max_moves if max_moves is not None else 2 * net.hidden):
            c = int(np.argmax(st.load))
            gap = st.load[c] - st.load.min()
            mine = np.nonzero(st.assign == c)[0]
            done = True
            for j in mine[np.argsort(np.abs(w[l][mine] - gap / 2), kind="stable")][:32]:
                d = st.first_fit(int(j), c, tries=8)
                if d >= 0 and st.load[d] + w[l][j] < st.load[c] - 1e-9 * max(st.load[c], 1.0):
                    st.move(int(j), d)
                    moved += 1
                    done = False
                    break
            if done:
                break
        core_of.append(cores[st.assign])
    if info is not None:
        info["balance_moves"] = moved
    if not moved:
        return pl
    cand = relayout(nets, Placement(pl.name, core_of, pl.slot_of_core, pl.n_cores, pl.chips, pl.objective),
                    profile, calibrated)
    keep = not violations(cand.costs, profile) and \
        measures(cand, profile)["latency_ns"] < measures(pl, profile)["latency_ns"] * (1 - 1e-9)
    if info is not None:
        info["balance_kept"] = keep
    return cand if keep else pl


#: the three measures on which the default objective never loses to the sequential baseline
MEASURES = ("packets", "hops", "latency_ns")
#: their names in the report (one name per quantity: a packet is a *message*, a spike-hop a *hop*)
_MEASURE_NAMES = {"packets": "messages", "hops": "hops", "latency_ns": "latency"}


def measures(pl: Placement, profile: ChipProfile) -> dict:
    """Per token, from the placement's estimate: packets (messages), spike-hops, latency (per layer phase the
    busiest core plus the barrier, as the report's totals)."""
    c = pl.costs
    model = CostModel(profile)
    return {"packets": float(c.packets), "hops": float(c.hops_out.sum()),
            "latency_ns": float(sum(model.phase_ns(float(p)) for p in c.busy_ns.max(axis=1)))}


def _le(a: float, b: float) -> bool:
    return a <= b * (1 + 1e-9) + 1e-9


def _fmt(q: str, v: float) -> str:
    return f"{v / 1e3:.2f} us" if q == "latency_ns" else f"{v:,.1f}"


def _trade(name: str, m: dict, base: dict, rejected: list[tuple[str, dict]]) -> str:
    """One sentence: what the chosen candidate wins against the baseline, where it keeps the baseline's figure,
    and why each better-on-something candidate was dropped."""
    won = [q for q in MEASURES if not _le(base[q], m[q])]
    kept = [q for q in MEASURES if q not in won]
    parts = [f"{name}: " + (", ".join(f"{_MEASURE_NAMES[q]} {_fmt(q, m[q])} vs {_fmt(q, base[q])}" for q in won)
                            + " (better than the sequential baseline)" if won else
                            "the baseline's messages, hops and latency kept (no candidate wins one of "
                            "them without losing another)")]
    if kept and won:
        parts.append("keeps the baseline's " + ", ".join(_MEASURE_NAMES[q] for q in kept))
    for rname, r in rejected:
        gain = [q for q in MEASURES if not _le(base[q], r[q])]
        loss = [q for q in MEASURES if not _le(r[q], base[q])]
        if gain:
            parts.append(f"rejected {rname} ({', '.join(_MEASURE_NAMES[q] for q in gain)} better but "
                         + ", ".join(f"{_MEASURE_NAMES[q]} {_fmt(q, r[q])} vs {_fmt(q, base[q])}" for q in loss)
                         + " worse)")
        else:
            parts.append(f"rejected {rname} (" + ", ".join(f"{_MEASURE_NAMES[q]} {_fmt(q, r[q])} vs "
                                                           f"{_fmt(q, base[q])}" for q in loss) + " worse)")
    return "; ".join(parts)


def _split_trade(split: Placement, seq: Placement, m: dict, base: dict) -> str:
    """The report's sentence when the fan-in split is kept for its cores (`place`)."""
    won = [q for q in MEASURES if not _le(base[q], m[q])]
    out = (f"fan-in split: {split.n_cores:,} cores vs the sequential baseline's {seq.n_cores:,} (axon-bound "
           "layers), no worse on messages, hops and latency; kept without partitions of the baseline's cores")
    if won:
        out += "; " + ", ".join(f"{_MEASURE_NAMES[q]} {_fmt(q, m[q])} vs {_fmt(q, base[q])}" for q in won) + " better"
    return out


def place(nets, profile: ChipProfile, max_chips: int, calibrated: bool, objective: str = DEFAULT_OBJECTIVE,
          info: dict | None = None) -> tuple[Placement, Placement]:
    """(sequential baseline, ours) for the same network, each with its estimate (``costs``); ours starts from
    the baseline's per-layer core counts.

    Objective ``traffic`` (``compete_baseline``, ``never_worse``): candidates, each estimated once — our
    partition (tightened), our partition at exactly the baseline's per-layer cores (when tightening changed
    them), each of those two after the latency balance pass (`balance_latency`, when it lowers the latency),
    the baseline's own unit assignment laid out by the layout search (these up to
    `RELAYOUT_MAX_CORES` cores: beyond, another layout search costs more than it can gain), and the
    baseline itself. Only candidates within every capacity limit and no worse than the baseline on packets,
    spike-hops and latency (`measures`) are kept — the baseline always is — and of those the one with the
    fewest packets, then spike-hops, then the lowest latency wins. ``info`` receives ``chosen`` (which
    candidate), ``candidates`` (name -> measures) and ``trade`` (one sentence for the report: what the
    choice wins, where it keeps the baseline's figure, why the others were dropped). ``latency``: spare
    cores of the occupied chips go to the bottleneck layer (more packets, lower max load). When the baseline
    needs more than `max_chips` chips, ours is the baseline (the caller reports `required_chips_error`).

    Graded-spike profiles: when a layer's fan-in exceeds the input axons, the fan-in split is both (its own
    baseline). Otherwise `split_choice.choose_split` picks the layers to split (the fewest cores within 2 % of
    the baseline's phase latency, the simulator's latency model; none: no split competes), and the split
    competes: if it needs at most half the baseline's cores and is no worse on messages, hops and latency,
    ``traffic`` keeps it without building partitions of the baseline's cores (the 107M-synapse model: 17k
    axon-bound cores vs 1.6k); otherwise it is one more candidate under the never-worse rule (the 27M model
    on loihi2-like: layers 1 and 2 split, layer 0 on the baseline's cores; split, its dense embedding input
    would lengthen its phase)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown placement objective {objective!r}")
    release_freed_heap()                             # before the placement's large arrays
    if info is not None:
        info["memory_bound"] = memory_bound(nets, profile)
    if profile.spikes.graded and any(needs_split(net, profile) for net in nets):
        split = split_placement(nets, profile, calibrated, objective)    # partial-sum fan-in split (`split`)
        if info is not None:
            info["layout_line"] = layout_summary(split.layout)
        return split, split
    obj = OBJECTIVES[objective]
    check_fan_in(nets, profile)
    seq = sequential_placement(nets, profile, max_chips)
    seq_est = estimate_assignment(nets, seq.core_of, seq.n_cores, profile, calibrated)
    split, info = None, {} if info is None else info   # a split needing fewer cores, as fast, competes
    if profile.spikes.graded and (cm := choose_split(nets, profile, calibrated, seq, seq_est, info)) is not None:
        split = split_placement(nets, profile, calibrated, objective, cm)
    # the baseline's [cores, cores] traffic only where it may be kept (no split taking its place)
    seq.costs = seq_est.at(seq.slot_of_core, dense=split is None or 2 * split.n_cores > seq.n_cores)
    if split is not None and obj.compete_baseline and 2 * split.n_cores <= seq.n_cores:
        # axon-bound baseline, memory-bound split: a split no worse on messages, hops and latency is kept
        # without building partitions of the baseline's thousands of one-unit cores
        m, base = measures(split, profile), measures(seq, profile)
        if all(_le(m[q], base[q]) for q in MEASURES):
            info.update(chosen="fan-in split", candidates={"fan-in split": m, "sequential baseline": base},
                        trade=_split_trade(split, seq, m, base) + f"; {info['split_choice']}",
                        layout_line=layout_summary(split.layout))
            return seq, split
    if seq.chips > max_chips:
        if info is not None:
            info["layout_line"] = layout_summary((split or seq).layout)
        return seq, (split if split is not None else seq)
    base_k = layer_core_counts(seq)
    ours = balanced_placement(nets, profile, max_chips, calibrated, min_cores=base_k, objective=objective,
                              info=info)
    if obj.balance:
        ours = balance_latency(nets, ours, profile, calibrated, info)
    if not obj.compete_baseline:                     # latency: the split only where it is faster
        if split is not None and measures(split, profile)["latency_ns"] < measures(ours, profile)["latency_ns"]:
            ours = split
        info["layout_line"] = layout_summary(ours.layout)
        return seq, ours
    cands = [("partitioned", ours)] + ([("fan-in split", split)] if split is not None else [])
    small = ours.n_cores <= RELAYOUT_MAX_CORES
    if obj.never_worse and small and layer_core_counts(ours) != base_k:
        cands.append(("partitioned at the baseline's per-layer core counts",
                      balanced_placement(nets, profile, max_chips, calibrated, min_cores=base_k,
                                         objective=objective, tighten=False)))
    if obj.never_worse and small:           # a partition that loses latency only may win it back balanced
        cands += [(f"{name}, balanced", bal) for name, pl in cands
                  if (bal := balance_latency(nets, pl, profile, calibrated)) is not pl]
    if obj.never_worse:                     # before its re-laid-out variant: a tie keeps the baseline itself
        cands.append(("sequential baseline", Placement("balanced", seq.core_of, seq.slot_of_core, seq.n_cores,
                                                       seq.chips, objective, seq.costs)))
    if small:
        cands.append(("sequential assignment, laid out",
                      _laid_out(seq_est, Placement("balanced", seq.core_of, seq.slot_of_core, seq.n_cores,
                                                   seq.chips, objective), profile, None, None)))
    base = measures(seq, profile)
    ms = {name: measures(pl, profile) for name, pl in cands}
    ok = [(name, pl) for name, pl in cands if not violations(pl.costs, profile)]
    if obj.never_worse:
        ok = [(name, pl) for name, pl in ok if all(_le(ms[name][q], base[q]) for q in MEASURES)] or ok
    name, ours = min(ok or cands, key=lambda c: tuple(round(ms[c[0]][q], 6) for q in MEASURES))
    info["chosen"] = name
    info["candidates"] = ms
    info["layout_line"] = layout_summary(ours.layout)
    if ours.layout is None:                  # the baseline's own slots kept: say how the searched ones ended
        info["layout_line"] += "".join(f"; {n}: {layout_summary(pl.layout)[8:]}" for n, pl in cands if pl.layout)
    if obj.never_worse:
        rejected = [(n, ms[n]) for n, _ in cands if n != name and not all(_le(ms[n][q], base[q]) for q in MEASURES)]
        info["trade"] = _trade(name, ms[name], base, rejected) + (f"; {info['split_choice']}" if split else "")
    return seq, ours


def dense_reference(nets: list[LayerNet], profile: ChipProfile) -> dict:
    """How many chips the same layers would need unpruned (sequential fill under the same limits). Memory in
    closed form (every unit of a dense layer has 3 (n_in + h) synapses and every core of that layer all
    n_in + h input axons, as `estimate` counts them) — evaluating the dense placement itself would build its
    cores x cores traffic matrix (1.4 GB for a 27M-synapse model) for two numbers."""
    dense = []
    for n in nets:
        dense.append(LayerNet(n.index, n.n_in, n.hidden, n.events_in,
                              np.full(n.hidden, 3 * n.n_in, np.int64), np.full(n.hidden, 3 * n.hidden, np.int64),
                              np.full((n.hidden, n.n_in), 3, np.int8), np.full((n.hidden, n.hidden), 3, np.int8)))
    pl = sequential_placement(dense, profile, max_chips=10 ** 6)
    memory = synapses = 0
    for l, n in enumerate(dense):
        cores, units = np.unique(np.asarray(pl.core_of[l]), return_counts=True)
        syn = units * 3 * (n.n_in + n.hidden)
        memory += int(core_memory_bytes(profile, syn, n.n_in + n.hidden, units).sum())
        synapses += int(syn.sum())
    return {"chips": pl.chips, "cores": pl.n_cores, "memory_bytes": memory, "synapses": synapses}
