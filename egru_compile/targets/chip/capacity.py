"""Capacity of a core, checked in this one module: compartments (units x compartments per unit), synaptic
memory (synapses x (weight + index bits) + one pointer per input axon + per-unit state bits), input axons
(distinct presynaptic units) and output axons (distinct cores its units' spikes reach).

`core_memory_bytes` is the memory formula every caller uses (placement estimate, dense reference, decoder
cores); `CoreOccupancy` tracks one layer's cores incrementally while partitioners and refinement move units;
`violations` lists every exceeded limit of an estimate; `check_fan_in` refuses a unit no core can hold;
`required_chips_error` names the limiting resource when a placement needs more chips than allowed.
"""
from __future__ import annotations

import numpy as np

from ...errors import option
from .model import CoreCosts, PlacementError
from .network import LayerNet, group_sum
from .profile import ChipProfile


def core_memory_bytes(profile: ChipProfile, synapses, input_axons, units, synapse_bits: int | None = None):
    """Synaptic memory (bytes, rounded up) of cores holding `synapses`, `input_axons` and `units`
    (`synapse_bits`: another synapse word than the profile's, e.g. float weights)."""
    m = profile.memory
    return (synapses * (synapse_bits or m.synapse_bits) + input_axons * m.axon_pointer_bits
            + units * m.state_bits_per_unit + 7) // 8


def memory_bound(nets: list[LayerNet], profile: ChipProfile) -> dict:
    """The fewest cores any placement of `nets` needs (a lower bound): every synapse (``synapse_bits``) and
    every unit's state in some core's synaptic memory, every unit's compartments in some core — input-axon
    pointers, which depend on the placement, left out. ``cores``: that bound; ``bytes``: the memory."""
    m, lim = profile.memory, profile.core
    bits = sum(int(n.synapses.sum()) * m.synapse_bits + n.hidden * m.state_bits_per_unit for n in nets)
    units = sum(n.hidden for n in nets)
    cores = max(-(-bits // (8 * lim.synapse_memory_bytes)), -(-units // profile.units_per_core))
    return {"cores": int(cores), "bytes": (bits + 7) // 8, "core_bytes": int(lim.synapse_memory_bytes)}


def fits_memory(profile: ChipProfile, synapses: int, input_axons: int, units: int) -> bool:
    return core_memory_bytes(profile, synapses, input_axons, units) <= profile.core.synapse_memory_bytes


def core_fits(profile: ChipProfile, compartments: int, memory_bytes: float, input_axons: int,
              output_axons: float = 0) -> bool:
    """Does one core hold this much of every resource (the check of the in-order fills: the sequential
    baseline and the decoder cores)?"""
    lim = profile.core
    return (compartments <= lim.compartments and memory_bytes <= lim.synapse_memory_bytes and
            input_axons <= lim.input_axons and output_axons <= lim.output_axons)


def unit_memory_bytes(net: LayerNet, profile: ChipProfile) -> np.ndarray:
    """Bytes of each unit's own synapses and state (its input axons' pointers are shared per core)."""
    m = profile.memory
    return (net.synapses * m.synapse_bits + m.state_bits_per_unit) / 8.0


def fan_in(net: LayerNet) -> np.ndarray:
    """Input axons a core needs for each unit alone (distinct presynaptic units, input + recurrent)."""
    return np.count_nonzero(net.conn_in, axis=1) + np.count_nonzero(net.conn_rec, axis=1)


def check_fan_in(nets: list[LayerNet], profile: ChipProfile) -> None:
    """PlacementError when a unit alone needs more input axons than a core has and its layer is placed
    unsplit. The binding limit is named; on a binary-spike profile partial sums cannot travel at all (on a
    graded-spike profile `placement.place` splits such layers instead: `split`)."""
    lim = profile.core.input_axons
    for net in nets:
        f = fan_in(net)
        if len(f) and f.max() > lim:
            j = int(np.argmax(f))
            why = ("graded spikes: the placer splits it (`split`)" if profile.spikes.graded else
                   "binary spikes cannot carry partial sums to split it ([spikes] payload_bits = 0)")
            raise PlacementError(
                f"layer {net.index} cannot be placed: unit {j} has a fan-in of {int(f[j])} presynaptic units "
                f"(input + recurrent), above the per-core input-axon limit of {lim} of profile {profile.name} "
                f"by {int(f[j]) - lim} ({int((f > lim).sum())} of {net.hidden} units exceed it); binding limit: "
                f"input axons per core — {why}")


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


def check_placement(costs: CoreCosts, profile: ChipProfile) -> None:
    """PlacementError naming the worst exceeded limit, if any."""
    bad = violations(costs, profile)
    if bad:
        name, core, used, limit = max(bad, key=lambda v: v[2] / v[3])
        raise PlacementError(f"placement violates {name} on core {core}: {used:,.0f} > {limit:,.0f} "
                             f"({used / limit:.2f}x the limit)")


def required_chips_error(profile: ChipProfile, max_chips: int, n_cores: int, chips: int, costs: CoreCosts):
    """PlacementError naming the limiting resource and by how much."""
    total_mem = int(costs.memory_bytes.sum())
    cap_mem = max_chips * profile.chip.cores * profile.core.synapse_memory_bytes
    units = int(costs.units.sum())
    cap_units = max_chips * profile.chip.cores * profile.units_per_core
    if total_mem > cap_mem:
        why = f"synaptic memory: needs {total_mem / 2**20:.1f} MiB, {max_chips} chip(s) hold " \
              f"{cap_mem / 2**20:.1f} MiB ({total_mem / cap_mem:.2f}x)"
    elif units > cap_units:
        why = f"compartments: {units} units need {units * profile.core.compartments_per_unit}, " \
              f"{max_chips} chip(s) have {cap_units * profile.core.compartments_per_unit}"
    else:
        why = f"cores: the placement needs {n_cores} cores ({chips} chips) under the per-core limits"
    return PlacementError(f"model does not fit on {max_chips} {profile.name} chip(s) — limiting resource {why}; "
                          f"it needs {chips} chips (raise {option('max_chips')})")


class CoreOccupancy:
    """Per-core occupancy of one layer's k cores, updated incrementally as units move."""

    def __init__(self, net: LayerNet, profile: ChipProfile, k: int, assign: np.ndarray, cost: np.ndarray):
        self.net, self.k = net, k
        self.pres = np.concatenate([net.conn_in > 0, net.conn_rec > 0], axis=1)      # [h, n_in + h]
        self.umem = unit_memory_bytes(net, profile)
        self.ptr_bytes = profile.memory.axon_pointer_bits / 8.0
        self.lim = profile.core
        self.cap_units = profile.units_per_core
        self.cost = cost
        self.assign = assign.copy()
        self.cnt = group_sum(self.pres, self.assign, k, np.int16)        # [k, n_in + h] units needing each
        self.units = np.bincount(self.assign, minlength=k)
        self.mem = np.bincount(self.assign, weights=self.umem, minlength=k)
        self.load = np.bincount(self.assign, weights=cost, minlength=k)
        self.axons = (self.cnt > 0).sum(1)

    def memory(self) -> np.ndarray:
        return self.mem + self.axons * self.ptr_bytes

    def over(self) -> np.ndarray:
        return (self.units > self.cap_units) | (self.memory() > self.lim.synapse_memory_bytes) | \
            (self.axons > self.lim.input_axons)

    def first_fit(self, j: int, exclude: int, tries: int = 64) -> int:
        """The least-loaded core (not `exclude`) that stays within its limits with unit j added, or -1. Units and
        memory without new axons filter first (O(k)); the axon check costs O(inputs) per candidate."""
        ok = (self.units + 1 <= self.cap_units) & \
            (self.mem + self.umem[j] + self.axons * self.ptr_bytes <= self.lim.synapse_memory_bytes)
        ok[exclude] = False
        cand = np.nonzero(ok)[0]
        for c in cand[np.argsort(self.load[cand], kind="stable")][:tries]:
            new_ax = self.axons[c] + int(np.count_nonzero(self.pres[j] & (self.cnt[c] == 0)))
            if new_ax <= self.lim.input_axons and \
                    self.mem[c] + self.umem[j] + new_ax * self.ptr_bytes <= self.lim.synapse_memory_bytes:
                return int(c)
        return -1

    def fits_after(self, c: int, out: int, into: int) -> bool:
        """Core c within its memory and input-axon limits after unit `out` leaves it and unit `into` joins."""
        cnt = self.cnt[c] - self.pres[out] + self.pres[into]
        ax = int(np.count_nonzero(cnt))
        return ax <= self.lim.input_axons and \
            self.mem[c] - self.umem[out] + self.umem[into] + ax * self.ptr_bytes <= self.lim.synapse_memory_bytes

    def swap_fit(self, c: int, tries: int = 256) -> tuple[int, int]:
        """(unit j on over-full core c, unit i on another core) whose exchange leaves both cores within their
        memory and input-axon limits, or (-1, -1). Candidates: the smallest memory difference umem[j] - umem[i]
        that removes c's memory excess (a best-fit exchange), checked exactly in that order."""
        mine = np.nonzero(self.assign == c)[0]
        other = np.nonzero(self.assign != c)[0]
        if not len(mine) or not len(other):
            return -1, -1
        excess = max(0.0, self.memory()[c] - self.lim.synapse_memory_bytes)
        room = self.lim.synapse_memory_bytes - self.memory()          # per core
        diff = self.umem[mine][:, None] - self.umem[other][None, :]  # [mine, other]: memory c frees
        ok = (diff >= excess) & (diff <= room[self.assign[other]][None, :])
        r, q = np.nonzero(ok)
        for t in np.argsort(diff[r, q], kind="stable")[:tries]:
            j, i = int(mine[r[t]]), int(other[q[t]])
            d = int(self.assign[i])
            if self.fits_after(c, j, i) and self.fits_after(d, i, j):
                return j, i
        return -1, -1

    def move(self, j: int, c: int) -> None:
        a = self.assign[j]
        p = self.pres[j].astype(np.int16)
        for core, sign in ((a, -1), (c, 1)):
            self.cnt[core] += sign * p
            self.units[core] += sign
            self.mem[core] += sign * self.umem[j]
            self.load[core] += sign * self.cost[j]
            self.axons[core] = int(np.count_nonzero(self.cnt[core]))
        self.assign[j] = c


def fill_sequential(nets, profile, out_axon_guess: list[float]):
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
            fits = core_fits(profile, (units + 1) * lim.compartments_per_unit,
                             mem_bytes + umem[j] + axons * mem.axon_pointer_bits / 8.0, axons,
                             out_axons + out_axon_guess[l])
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
