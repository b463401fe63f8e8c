"""Placement of EGRU units onto the cores of one or more chips, and its costs.

A placement assigns every unit (layer, index) — with its three gate compartments and its incoming synapses —
to a logical core, and every logical core to a physical slot (chip, tile x, tile y, core in tile).

* `sequential_placement` is the baseline: units in order fill core 0 until a capacity limit is hit, then
  core 1, ...; core k sits in slot k.
* `balanced_placement` (ours): per-layer core counts (the baseline's, or more for objective ``latency``),
  each layer partitioned over its cores (`partition.py`: hypergraph partitioner on spike packets when
  `mtkahypar` is installed, else MAC balancing), repaired under every capacity limit, then laid out on the
  mesh by local search on activity-weighted spike energy (`layout.py`).

Capacity per core: compartments (3 per unit), input axons (distinct presynaptic units), output axons
(sum over its units of the number of distinct cores their spikes reach), synaptic memory
(nnz x (weight + index bits) + one pointer per input axon + per-unit state bits).

Every quantity of `evaluate` is computed per layer from sparse groupings (no dense slot x slot or
unit x core one-hot products), so it scales to thousands of cores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .layout import hop_matrices, layout, slot_coords
from .network import LayerNet
from .partition import PlacementError, check_fan_in, group_sum, partition_layer, unit_memory_bytes
from .profile import ChipProfile

__all__ = ["Placement", "PlacementError", "CoreCosts", "place", "evaluate", "violations", "sequential_placement",
           "balanced_placement", "required_chips_error", "slot_coords", "hop_matrices", "OBJECTIVES"]

OBJECTIVES = ("traffic", "latency")
RELAYOUT_MAX_CORES = 2000


@dataclass
class Placement:
    name: str
    core_of: list[np.ndarray]            # per layer: [h] logical core of each unit
    slot_of_core: np.ndarray             # [n_cores] physical slot of each logical core
    n_cores: int
    chips: int


# ----------------------------------------------------------------------------------------------- costs
@dataclass
class CoreCosts:
    """Per logical core, per token (activity-weighted quantities use calibration rates when present)."""
    units: np.ndarray
    compartments: np.ndarray
    synapses: np.ndarray
    input_axons: np.ndarray
    output_axons: np.ndarray
    memory_bytes: np.ndarray
    macs_static: np.ndarray
    mac_events: np.ndarray | None      # integer MACs over all calibration tokens
    spikes_in: np.ndarray
    spikes_out: np.ndarray
    hops_out: np.ndarray               # spike-hops sent per token
    energy_pj: np.ndarray
    busy_ns: np.ndarray                # [layers, cores] work time of each core in each layer phase
    traffic: np.ndarray                # [cores, cores] spikes per token from core a to core b

    @property
    def packets(self) -> float:
        """Spike messages per token (one per spike and destination core)."""
        return float(self.spikes_out.sum())

    def core_macs(self, tokens: int = 0) -> np.ndarray:
        return self.mac_events / tokens if self.mac_events is not None and tokens else self.macs_static

    def balance(self, tokens: int = 0) -> tuple[float, float]:
        """(max, mean) MACs per core and token."""
        m = self.core_macs(tokens)
        return float(m.max()), float(m.mean())


def _dest_cores(nets: list[LayerNet], core_of: list[np.ndarray], n_cores: int) -> list[np.ndarray]:
    """Per source layer l: [h_l, n_cores] bool — does unit i's spike reach core c (own layer via R, next layer
    via W)?"""
    out = []
    for l, net in enumerate(nets):
        reach = np.zeros((net.hidden, n_cores), bool)
        targets = [(net.conn_rec, core_of[l])] + ([(nets[l + 1].conn_in, core_of[l + 1])] if l + 1 < len(nets)
                                                   else [])
        for conn, co in targets:            # grouped over the target layer's cores only (compact)
            ids, pres = group_sum(conn > 0, np.asarray(co), n_cores, bool, compact=True)
            reach[:, ids] |= pres.T
        out.append(reach)
    return out


def _rowwise_link_sums(traffic_rows: np.ndarray, src_slots: np.ndarray, slots: np.ndarray, profile: ChipProfile,
                       chunk: int = 512):
    """Per row: sum_b traffic[a, b] * (hops, pJ, ns)(slot a, slot b). Destinations are first summed per tile
    (cores of a tile are equidistant from every slot), then weighted by tile distances, in row chunks: no
    dense n x n cost matrix."""
    cpt = profile.chip.cores_per_tile
    tiles, inv = np.unique(np.asarray(slots) // cpt, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    out = np.zeros((3, len(src_slots)))
    for lo in range(0, len(src_slots), chunk):
        agg = np.add.reduceat(traffic_rows[lo:lo + chunk][:, order], starts, axis=1)
        for m, d in enumerate(hop_matrices_between(profile, src_slots[lo:lo + chunk], tiles * cpt)):
            out[m, lo:lo + chunk] = (agg * d).sum(1)
    return out[0], out[1], out[2]


def hop_matrices_between(profile: ChipProfile, a: np.ndarray, b: np.ndarray):
    """(spike-hops, pJ, ns) of one message from each slot of `a` to each slot of `b`: [len(a), len(b)]."""
    ca, xa, ya = slot_coords(profile, a)
    cb, xb, yb = slot_coords(profile, b)
    e = profile.energy
    dx = np.abs(xa[:, None] - xb[None, :])
    dy = np.abs(ya[:, None] - yb[None, :])
    dc = np.abs(ca[:, None] - cb[None, :])
    return ((dx + dy + dc).astype(np.float64),
            e.spike_tile_pj + dx * e.hop_ew_pj + dy * e.hop_ns_pj + dc * profile.chip.chip_hop_pj,
            e.spike_tile_ns + dx * e.hop_ew_ns + dy * e.hop_ns_ns + dc * profile.chip.chip_hop_ns)


def evaluate(nets: list[LayerNet], pl: Placement, profile: ChipProfile, calibrated: bool) -> CoreCosts:
    n = pl.n_cores
    mem = profile.memory
    e = profile.energy
    cpu = profile.core.compartments_per_unit
    L = len(nets)
    units = np.zeros(n, np.int64)
    syn = np.zeros(n, np.int64)
    in_axons = np.zeros(n, np.int64)
    mac_ev = np.zeros(n, np.int64) if calibrated else None
    busy = np.zeros((L, n))
    energy = np.zeros(n)
    reach = _dest_cores(nets, pl.core_of, n)
    out_axons = np.zeros(n, np.int64)
    hops_out = np.zeros(n)
    traffic = np.zeros((n, n))
    slots = np.asarray(pl.slot_of_core)
    for l, net in enumerate(nets):
        co = np.asarray(pl.core_of[l])
        T = getattr(net, "tokens", 0) if calibrated else 0
        rate = net.fires / T if calibrated and T else np.ones(net.hidden)   # uncalibrated: every unit fires
        units += np.bincount(co, minlength=n)
        syn += np.bincount(co, weights=net.synapses, minlength=n).astype(np.int64)
        if calibrated:
            mac_ev += np.bincount(co, weights=net.mac_events, minlength=n).astype(np.int64)
        # input axons: distinct presynaptic units (layer input incl. embedding dims, and recurrent); grouped
        # over this layer's cores only (compact), never an n_cores-wide table
        for conn in (net.conn_in, net.conn_rec):
            ids, pres = group_sum(conn > 0, co, n, bool, compact=True)
            in_axons[ids] += pres.sum(1)
        # MAC work per core in this layer's phase
        macs_unit = (net.mac_events / T) if calibrated and T else net.synapses.astype(np.float64)
        synops = np.bincount(co, weights=macs_unit, minlength=n)
        upd_active = np.bincount(co, weights=rate * cpu, minlength=n)
        upd_inactive = np.bincount(co, weights=(1 - rate) * cpu, minlength=n)
        energy += synops * e.synop_pj + upd_active * e.neuron_active_pj + upd_inactive * e.neuron_inactive_pj
        busy[l] += synops * e.synop_ns + upd_active * e.neuron_active_ns + upd_inactive * e.neuron_inactive_ns
        # spikes: unit i -> every core it reaches; traffic[src core, dst core] in spikes/token
        r = reach[l]
        out_axons += np.bincount(co, weights=r.sum(1), minlength=n).astype(np.int64)
        src, t = group_sum(r, co, n, np.float64, weights=rate, compact=True)
        traffic[src] += t
        # a spike's delivery time counts toward the phase of the layer that produced it
        # hops, energy and time of this layer's messages: the per-row sums are linear in the traffic, so
        # adding them per layer equals one pass over the summed matrix (no second n x n pass)
        h_l, pj_l, ns_l = _rowwise_link_sums(t, slots[src], slots, profile)
        busy[l, src] += ns_l
        hops_out[src] += h_l
        energy[src] += pj_l
        del t
    spikes_in = traffic.sum(0)
    spikes_out = traffic.sum(1)
    memory = (syn * mem.synapse_bits + in_axons * mem.axon_pointer_bits + units * mem.state_bits_per_unit + 7) // 8
    return CoreCosts(units, units * cpu, syn, in_axons, out_axons, memory, syn.copy(), mac_ev, spikes_in,
                     spikes_out, hops_out, energy, busy, traffic)


def violations(costs: CoreCosts, profile: ChipProfile) -> list[tuple[str, int, float, float]]:
    """(resource, core, used, limit) for every exceeded limit."""
    lim = profile.core
    checks = [("compartments", costs.compartments, lim.compartments),
              ("synaptic memory (bytes)", costs.memory_bytes, lim.synapse_memory_bytes),
              ("input axons", costs.input_axons, lim.input_axons),
              ("output axons", costs.output_axons, lim.output_axons)]
    out = []
    for name, used, limit in checks:
        for c in np.nonzero(used > limit)[0]:
            out.append((name, int(c), float(used[c]), float(limit)))
    return out


# ----------------------------------------------------------------------------------------------- baseline
def _fill_sequential(nets, profile, out_axon_guess: list[float]):
    """Greedy in-order fill under per-core limits; a core may hold units of several layers."""
    lim = profile.core
    mem = profile.memory
    core_of = [np.zeros(net.hidden, np.int64) for net in nets]
    core = 0
    units = 0
    mem_bytes = 0.0
    out_axons = 0.0
    other_axons = 0                                         # input axons of the core's units of earlier layers
    count = 0                                               # input axons of the core's units of this layer
    for l, net in enumerate(nets):
        umem = unit_memory_bytes(net, profile)
        pres = np.concatenate([net.conn_in > 0, net.conn_rec > 0], axis=1)
        mask = np.zeros(pres.shape[1], bool)
        other_axons += count
        count = 0
        for j in range(net.hidden):
            new = pres[j] & ~mask
            axons = other_axons + count + int(np.count_nonzero(new))
            fits = ((units + 1) * lim.compartments_per_unit <= lim.compartments and
                    mem_bytes + umem[j] + axons * mem.axon_pointer_bits / 8.0 <= lim.synapse_memory_bytes and
                    axons <= lim.input_axons and out_axons + out_axon_guess[l] <= lim.output_axons)
            if not fits and units > 0:
                core += 1
                units, mem_bytes, out_axons, other_axons = 0, 0.0, 0.0, 0
                mask[:] = False
                count = 0
                new = pres[j]
            mask |= new
            count += int(np.count_nonzero(new))
            core_of[l][j] = core
            units += 1
            mem_bytes += umem[j]
            out_axons += out_axon_guess[l]
    return core_of, core + 1


def _chips_for(n_cores: int, profile: ChipProfile) -> int:
    return max(1, math.ceil(n_cores / profile.chip.cores))


def sequential_placement(nets, profile: ChipProfile, max_chips: int) -> Placement:
    """Baseline: first units on core 0 until a limit is hit, then core 1, ... (iterated until output axons fit).
    A unit whose fan-in alone exceeds the input-axon limit gets a core of its own (over the limit: `place`
    refuses such a network with `check_fan_in`; the dense reference of the chip report counts it)."""
    guess = [1.0] * len(nets)
    for _ in range(6):
        core_of, n = _fill_sequential(nets, profile, guess)
        pl = Placement("sequential", core_of, np.arange(n), n, _chips_for(n, profile))
        reach = _dest_cores(nets, core_of, n)
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
    from .partition import unit_cost
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
                       min_cores: list[int] | None = None, objective: str = "traffic", method: str = "auto",
                       tighten: bool = True, info: dict | None = None) -> Placement:
    """Ours: per-layer core counts (``min_cores``, default the sequential baseline's; objective ``latency``
    adds the spare cores of the occupied chips to the bottleneck layer), each layer partitioned and repaired
    (`partition.partition_layer`, method ``auto`` | ``rate`` | ``hypergraph`` | ``lpt`` | ``metis`` | ``kahip``;
    ``auto`` is ``rate`` for objective ``traffic``, else the hypergraph partitioner or LPT), then the mesh
    layout (`layout.layout`). Objective ``traffic`` with ``tighten`` gives each layer one core fewer while its
    partition still repairs within the limits. `info` receives the partitioners used and layout statistics."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown placement objective {objective!r}")
    check_fan_in(nets, profile)
    k = list(min_cores) if min_cores is not None else layer_core_counts(sequential_placement(nets, profile,
                                                                                              max_chips))
    if objective == "latency":
        k = _spare_to_bottleneck(nets, profile, k, calibrated)
    if method == "auto":
        method = "rate" if objective == "traffic" else "auto"
    core_of, methods, base = [], [], 0
    for l in range(len(nets)):
        tightening = objective == "traffic" and tighten and 1 < k[l] <= nets[l].hidden // 4
        # (while tightening, the connectivity refinement runs once, at the final core count)
        assign, used = partition_layer(nets, l, profile, k[l], calibrated, method, seed, refine=not tightening)
        # traffic: fewer cores = fewer destinations per spike; take a core away while the layer still fits
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
    pl = Placement("balanced", core_of, np.arange(base), base, _chips_for(base, profile))
    return relayout(nets, pl, profile, calibrated, info, partitioners=methods)


def relayout(nets, pl: Placement, profile: ChipProfile, calibrated: bool, info: dict | None = None,
             **extra) -> Placement:
    """The same unit assignment with the layout search's slots."""
    costs = evaluate(nets, pl, profile, calibrated)
    stats: dict = {}
    slots = layout(costs.traffic, profile, pl.n_cores, pl.chips, info=stats)
    if info is not None:
        info.update(extra, layout=stats)
    return Placement(pl.name, pl.core_of, slots, pl.n_cores, pl.chips)


def required_chips_error(nets, profile: ChipProfile, max_chips: int, pl: Placement, costs: CoreCosts):
    """PlacementError naming the limiting resource and by how much."""
    need = pl.chips
    total_mem = int(costs.memory_bytes.sum())
    cap_mem = max_chips * profile.chip.cores * profile.core.synapse_memory_bytes
    units = int(costs.units.sum())
    cap_units = max_chips * profile.chip.cores * profile.units_per_core
    if total_mem > cap_mem:
        why = f"synaptic memory: needs {total_mem / 2**20:.1f} MiB, {max_chips} chip(s) hold {cap_mem / 2**20:.1f} MiB " \
              f"({total_mem / cap_mem:.2f}x)"
    elif units > cap_units:
        why = f"compartments: {units} units need {units * profile.core.compartments_per_unit}, " \
              f"{max_chips} chip(s) have {cap_units * profile.core.compartments_per_unit}"
    else:
        why = f"cores: the placement needs {pl.n_cores} cores ({need} chips) under the per-core limits"
    raise PlacementError(f"model does not fit on {max_chips} {profile.name} chip(s) — limiting resource {why}; "
                         f"it needs {need} chips (raise --max-chips)")


def _score(nets, pl, profile, calibrated):
    c = evaluate(nets, pl, profile, calibrated)
    T = getattr(nets[0], "tokens", 0) if calibrated else 0
    return (round(c.packets, 6), round(float(c.hops_out.sum()), 6), c.balance(T)[0]), c


def place(nets, profile: ChipProfile, max_chips: int, calibrated: bool, objective: str = "traffic",
          info: dict | None = None) -> tuple[Placement, Placement]:
    """(sequential baseline, ours) for the same network; ours starts from the baseline's per-layer core counts.

    Objective ``traffic``: our partition and the baseline's own unit assignment, both laid out by the layout
    search, compete; the one with fewer packets, then fewer spike-hops, then the lower busiest core, is kept
    (up to `RELAYOUT_MAX_CORES` cores: beyond, a second layout search costs more than it can gain).
    ``latency``: spare cores of the occupied chips go to the bottleneck layer (more packets, lower max load)."""
    check_fan_in(nets, profile)
    seq = sequential_placement(nets, profile, max_chips)
    if seq.chips > max_chips:
        return seq, seq
    info = {} if info is None else info
    ours = balanced_placement(nets, profile, max_chips, calibrated, min_cores=layer_core_counts(seq),
                              objective=objective, info=info)
    if objective == "traffic" and ours.n_cores <= RELAYOUT_MAX_CORES:
        relaid = relayout(nets, seq, profile, calibrated)
        (s_ours, c_ours), (s_rel, c_rel) = _score(nets, ours, profile, calibrated), \
            _score(nets, relaid, profile, calibrated)
        if violations(c_ours, profile) or (not violations(c_rel, profile) and s_rel < s_ours):
            info["chosen"] = "sequential assignment, laid out"
            ours = Placement("balanced", relaid.core_of, relaid.slot_of_core, relaid.n_cores, relaid.chips)
        else:
            info["chosen"] = "partitioned"
    return seq, ours
