"""Placement of EGRU units onto the cores of one or more chips, and its costs.

A placement assigns every unit (layer, index) — with its three gate compartments and its incoming synapses —
to a logical core, and every logical core to a physical slot (chip, tile x, tile y, core in tile).

* `sequential_placement` is the baseline: units in order fill core 0 until a capacity limit is hit, then
  core 1, ...; core k sits in slot k.
* `balanced_placement` (ours): the same number of cores, units distributed over them so that each core's
  MACs (measured with calibration activity, or static fan-in without) are balanced under every capacity
  limit, then the cores are laid out on the mesh by local search minimising activity-weighted spike hops.

Capacity per core: compartments (3 per unit), input axons (distinct presynaptic units), output axons
(sum over its units of the number of distinct cores their spikes reach), synaptic memory
(nnz x (weight + index bits) + one pointer per input axon + per-unit state bits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...errors import EgruError
from .network import LayerNet
from .profile import ChipProfile


class PlacementError(EgruError):
    pass


@dataclass
class Placement:
    name: str
    core_of: list[np.ndarray]            # per layer: [h] logical core of each unit
    slot_of_core: np.ndarray             # [n_cores] physical slot of each logical core
    n_cores: int
    chips: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- geometry
def slot_coords(profile: ChipProfile, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chip, global tile x, tile y) of physical slots; chips are placed side by side along x."""
    g = profile.chip
    chip = slots // g.cores
    local = slots % g.cores
    tile = local // g.cores_per_tile
    tx = tile % g.tiles_x
    ty = tile // g.tiles_x
    return chip, chip * g.tiles_x + tx, ty


def hop_matrices(profile: ChipProfile, slots: np.ndarray):
    """Pairwise (spike-hops, energy pJ, time ns) of one spike message between slots."""
    chip, x, y = slot_coords(profile, slots)
    e = profile.energy
    dx = np.abs(x[:, None] - x[None, :])
    dy = np.abs(y[:, None] - y[None, :])
    dchip = np.abs(chip[:, None] - chip[None, :])
    hops = dx + dy + dchip
    pj = e.spike_tile_pj + dx * e.hop_ew_pj + dy * e.hop_ns_pj + dchip * profile.chip.chip_hop_pj
    ns = e.spike_tile_ns + dx * e.hop_ew_ns + dy * e.hop_ns_ns + dchip * profile.chip.chip_hop_ns
    return hops.astype(np.float64), pj, ns


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


def _dest_cores(nets: list[LayerNet], core_of: list[np.ndarray], n_cores: int) -> list[np.ndarray]:
    """Per source layer l: [h_l, n_cores] bool — does unit i's spike reach core c (own layer via R, next layer
    via W)?"""
    out = []
    for l, net in enumerate(nets):
        reach = np.zeros((net.hidden, n_cores), dtype=bool)
        onehot = np.zeros((net.hidden, n_cores), dtype=np.float32)
        onehot[np.arange(net.hidden), core_of[l]] = 1
        reach |= (net.conn_rec.T.astype(np.float32) @ onehot) > 0
        if l + 1 < len(nets):
            nxt = nets[l + 1]
            oh = np.zeros((nxt.hidden, n_cores), dtype=np.float32)
            oh[np.arange(nxt.hidden), core_of[l + 1]] = 1
            reach |= (nxt.conn_in.T.astype(np.float32) @ oh) > 0
        out.append(reach)
    return out


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
    spikes_in = np.zeros(n)
    reach = _dest_cores(nets, pl.core_of, n)
    hops, pj, ns = hop_matrices(profile, pl.slot_of_core)
    out_axons = np.zeros(n, np.int64)
    spikes_out = np.zeros(n)
    hops_out = np.zeros(n)
    traffic = np.zeros((n, n))
    for l, net in enumerate(nets):
        co = pl.core_of[l]
        T = getattr(net, "tokens", 0) if calibrated else 0
        rate = net.fires / T if calibrated and T else np.ones(net.hidden)   # uncalibrated: every unit fires
        np.add.at(units, co, 1)
        np.add.at(syn, co, net.synapses)
        if calibrated:
            np.add.at(mac_ev, co, net.mac_events)
        # input axons: distinct presynaptic units (layer input incl. embedding dims, and recurrent)
        for c in np.unique(co):
            rows = co == c
            in_axons[c] += int(np.count_nonzero(net.conn_in[rows].any(0))) + \
                int(np.count_nonzero(net.conn_rec[rows].any(0)))
        # MAC work per core in this layer's phase
        macs_unit = (net.mac_events / T) if calibrated and T else net.synapses.astype(np.float64)
        synops = np.bincount(co, weights=macs_unit, minlength=n)
        upd_active = np.bincount(co, weights=rate * cpu, minlength=n)
        upd_inactive = np.bincount(co, weights=(1 - rate) * cpu, minlength=n)
        energy += synops * e.synop_pj + upd_active * e.neuron_active_pj + upd_inactive * e.neuron_inactive_pj
        busy[l] += synops * e.synop_ns + upd_active * e.neuron_active_ns + upd_inactive * e.neuron_inactive_ns
        # spikes: unit i -> every core it reaches
        r = reach[l]
        out_axons += np.bincount(co, weights=r.sum(1), minlength=n).astype(np.int64)
        t = np.zeros((n, n))
        np.add.at(t, co, r * rate[:, None])            # traffic[src core, dst core] in spikes/token
        traffic += t
        spikes_in += (r * rate[:, None]).sum(0)
        # a spike's delivery time counts toward the phase of the layer that produced it
        busy[l] += (t * ns).sum(1)
    spikes_out = traffic.sum(1)
    hops_out = (traffic * hops).sum(1)
    energy += (traffic * pj).sum(1)
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


# ----------------------------------------------------------------------------------------------- unit caps
def _unit_memory_bytes(net: LayerNet, profile: ChipProfile) -> np.ndarray:
    m = profile.memory
    return (net.synapses * m.synapse_bits + m.state_bits_per_unit) / 8.0


def _fill_sequential(nets, profile, out_axon_guess: list[float]):
    """Greedy in-order fill under per-core limits; a core may hold units of several layers."""
    lim = profile.core
    mem = profile.memory
    core_of = [np.zeros(net.hidden, np.int64) for net in nets]
    core = 0
    units = 0
    mem_bytes = 0.0
    out_axons = 0.0
    masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # layer -> (input mask, recurrent mask) on this core
    for l, net in enumerate(nets):
        umem = _unit_memory_bytes(net, profile)
        for j in range(net.hidden):
            mi, mr = masks.get(l, (np.zeros(net.n_in, bool), np.zeros(net.hidden, bool)))
            ni, nr = mi | (net.conn_in[j] > 0), mr | (net.conn_rec[j] > 0)
            axons = sum(int(a.sum()) + int(b.sum()) for k, (a, b) in masks.items() if k != l) + \
                int(ni.sum()) + int(nr.sum())
            fits = ((units + 1) * lim.compartments_per_unit <= lim.compartments and
                    mem_bytes + umem[j] + axons * mem.axon_pointer_bits / 8.0 <= lim.synapse_memory_bytes and
                    axons <= lim.input_axons and out_axons + out_axon_guess[l] <= lim.output_axons)
            if not fits and units > 0:
                core += 1
                units, mem_bytes, out_axons, masks = 0, 0.0, 0.0, {}
                ni, nr = net.conn_in[j] > 0, net.conn_rec[j] > 0
            masks[l] = (ni, nr)
            core_of[l][j] = core
            units += 1
            mem_bytes += umem[j]
            out_axons += out_axon_guess[l]
    return core_of, core + 1


def _chips_for(n_cores: int, profile: ChipProfile) -> int:
    return max(1, math.ceil(n_cores / profile.chip.cores))


def sequential_placement(nets, profile: ChipProfile, max_chips: int) -> Placement:
    """Baseline: first units on core 0 until a limit is hit, then core 1, ... (iterated until output axons fit)."""
    guess = [1.0] * len(nets)
    for _ in range(6):
        core_of, n = _fill_sequential(nets, profile, guess)
        pl = Placement("sequential", core_of, np.arange(n), n, _chips_for(n, profile))
        costs = evaluate(nets, pl, profile, calibrated=False)
        bad = [v for v in violations(costs, profile) if v[0] == "output axons"]
        if not bad:
            return pl
        # refine the per-unit output-axon estimate from the real fan-out to cores
        for l, net in enumerate(nets):
            reach = _dest_cores(nets, core_of, n)[l].sum(1)
            guess[l] = float(reach.max())
    return pl


def balanced_placement(nets, profile: ChipProfile, max_chips: int, calibrated: bool, seed: int = 0,
                       min_cores: list[int] | None = None, objective: str = "traffic") -> Placement:
    """Ours: per-layer core counts sized by capacity (and, for objective ``latency``, spare cores of the
    occupied chips given to the layer with the most MACs per core), LPT balancing of MACs within each layer,
    then the mesh layout by local search on activity-weighted spike energy.

    ``traffic`` keeps the baseline's core budget, so every spike reaches as few cores as the baseline's;
    ``latency`` trades more spike messages for a lower busiest-core load."""
    import time
    t0 = time.perf_counter()
    L = len(nets)
    cost = [(n.mac_events / max(getattr(n, "tokens", 1), 1)) if calibrated else n.synapses.astype(np.float64)
            for n in nets]
    k = list(min_cores)
    loads = [float(c.sum()) for c in cost]
    n_chips = _chips_for(sum(k), profile)
    spare = n_chips * profile.chip.cores - sum(k) if objective == "latency" else 0
    # spare cores of the chips we occupy anyway go to the layer with the highest MACs per core, while that
    # layer is clearly the bottleneck (> 5 % above every other layer's per-core load)
    while spare > 0:
        per = [loads[l] / k[l] for l in range(L)]
        hi = int(np.argmax(per))
        others = max([per[l] for l in range(L) if l != hi], default=0.0)
        if per[hi] <= 1.05 * others or loads[hi] / (k[hi] + 1) <= 0:
            break
        k[hi] += 1
        spare -= 1
    core_of = []
    base = 0
    lim = profile.core
    for l, net in enumerate(nets):
        umem = _unit_memory_bytes(net, profile)
        cap_units = lim.compartments // lim.compartments_per_unit
        order = np.argsort(-cost[l], kind="stable")
        load = np.zeros(k[l])
        mem = np.zeros(k[l])
        cnt = np.zeros(k[l], np.int64)
        co = np.zeros(net.hidden, np.int64)
        mem_cap = lim.synapse_memory_bytes - profile.memory.axon_pointer_bits / 8.0 * min(
            lim.input_axons, net.n_in + net.hidden)
        for j in order:
            ok = (cnt < cap_units) & (mem + umem[j] <= mem_cap)
            cand = np.nonzero(ok)[0] if ok.any() else np.arange(k[l])
            c = cand[np.argmin(load[cand])]
            co[j] = base + c
            load[c] += cost[l][j] + 1e-9 * umem[j]
            mem[c] += umem[j]
            cnt[c] += 1
        core_of.append(co)
        base += k[l]
    n = base
    pl = Placement("balanced", core_of, np.arange(n), n, _chips_for(n, profile))
    costs = evaluate(nets, pl, profile, calibrated)
    pl.slot_of_core = _layout(costs.traffic, profile, n, pl.chips, seed)
    pl.seconds = time.perf_counter() - t0
    return pl


def _layout(traffic: np.ndarray, profile: ChipProfile, n: int, chips: int, seed: int) -> np.ndarray:
    """Assign logical cores to physical slots minimising sum traffic[a,b] * energy(slot a, slot b).

    Two starts — greedy construction (heaviest communicators first, next to their placed partners) and the
    identity (the sequential baseline's slots) — each improved by pairwise-swap local search in which free
    slots take part as empty cores; the better result is kept, so it is never worse than the identity."""
    n_slots = chips * profile.chip.cores
    _, P, _ = hop_matrices(profile, np.arange(n_slots))
    p0 = float(P[0, 0])
    W = np.zeros((n_slots, n_slots))
    W[:n, :n] = traffic + traffic.T
    np.fill_diagonal(W, 0.0)
    greedy = -np.ones(n_slots, np.int64)          # logical core (or empty) -> slot
    free = np.ones(n_slots, bool)
    order = np.argsort(-W[:n, :n].sum(1), kind="stable")
    placed: list[int] = []
    for a in order:
        if not placed:
            s = int(np.argmin(P.sum(1)))
        else:
            cost = P[:, greedy[placed]] @ W[a, placed]
            cost[~free] = np.inf
            s = int(np.argmin(cost))
        greedy[a] = s
        free[s] = False
        placed.append(int(a))
    greedy[n:] = np.nonzero(free)[0]
    best, best_cost = None, np.inf
    for start in (greedy, np.arange(n_slots)):
        assign = _swap_search(start.copy(), W, P, p0, n)
        cost = float((W * P[assign][:, assign]).sum())
        if cost < best_cost - 1e-9:
            best, best_cost = assign, cost
    return best[:n].copy()


def _swap_search(assign: np.ndarray, W: np.ndarray, P: np.ndarray, p0: float, n: int, sweeps: int = 8):
    """Pairwise swaps of logical core a with any slot's occupant while the total cost falls."""
    for _ in range(sweeps):
        improved = False
        for a in range(n):
            D = P[assign][:, assign]
            S = ((W[a][None, :] - W) * (D - D[a][None, :])).sum(1)
            delta = S + 2 * W[a] * (D[a] - p0)
            delta[a] = 0.0
            b = int(np.argmin(delta))
            if delta[b] < -1e-9:
                assign[a], assign[b] = assign[b], assign[a]
                improved = True
        if not improved:
            break
    return assign


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


def place(nets, profile: ChipProfile, max_chips: int, calibrated: bool, objective: str = "traffic",
          ) -> tuple[Placement, Placement]:
    """(sequential baseline, ours) for the same network; ours starts from the baseline's per-layer core counts."""
    seq = sequential_placement(nets, profile, max_chips)
    ours = balanced_placement(nets, profile, max_chips, calibrated,
                              min_cores=[len(np.unique(c)) for c in seq.core_of], objective=objective)
    if objective == "traffic":
        # the baseline's own unit assignment, laid out by the same search, competes: keep whichever sends
        # fewer activity-weighted spike-hops (ties: lower busiest-core MACs)
        relaid = Placement("relaid-sequential", seq.core_of, seq.slot_of_core.copy(), seq.n_cores, seq.chips)
        costs = evaluate(nets, relaid, profile, calibrated)
        relaid.slot_of_core = _layout(costs.traffic, profile, relaid.n_cores, relaid.chips, 0)

        def score(pl):
            c = evaluate(nets, pl, profile, calibrated)
            load = c.mac_events if c.mac_events is not None else c.macs_static
            return (round(float(c.hops_out.sum()), 6), float(np.max(load)))
        if score(relaid) < score(ours):
            relaid.name = "balanced"
            relaid.notes.append("baseline unit assignment with optimised layout")
            ours = relaid
    return seq, ours
