"""Compile-time estimate of a placement's per-core costs (`CoreCosts`), charged by the one cost model
(`costs.CostModel`).

Two stages, so that every candidate placement is evaluated once: `estimate_assignment` computes everything
that depends only on the unit -> core map (units, synapses, axons, memory, MACs, compute energy and time,
the spike traffic between cores, per layer); `AssignmentCosts.at(slots)` adds what depends on the mesh
layout (spike-hops, message energy and time) for one slot map. A layout search needs only the first stage's
traffic; the baseline and its re-laid-out variant share one assignment estimate.

Every quantity is computed per layer from sparse groupings (no dense slot x slot or unit x core one-hot
products), so it scales to thousands of cores. Uncalibrated, every unit is taken to fire every step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .capacity import core_memory_bytes
from .costs import CostModel
from .model import CoreCosts, Placement
from .network import LayerNet, group_sum, net_reach
from .profile import ChipProfile


@dataclass
class AssignmentCosts:
    """Slot-independent part of a placement's estimate (see the module docstring)."""
    profile: ChipProfile
    units: np.ndarray
    syn: np.ndarray
    in_axons: np.ndarray
    out_axons: np.ndarray
    mac_events: np.ndarray | None
    compute_pj: np.ndarray                                  # [layers, cores]
    compute_ns: np.ndarray                                  # [layers, cores]
    layer_traffic: list[tuple[np.ndarray, np.ndarray]]     # per layer: (source cores, [sources, cores] spikes)

    @property
    def traffic(self) -> np.ndarray:
        """[cores, cores] spikes per token from core a to core b (all layers)."""
        n = len(self.units)
        t = np.zeros((n, n))
        for src, rows in self.layer_traffic:
            t[src] += rows
        return t

    def at(self, slot_of_core: np.ndarray) -> CoreCosts:
        """The full estimate with the cores in `slot_of_core`."""
        n, L = len(self.units), len(self.layer_traffic)
        model = CostModel(self.profile)
        slots = np.asarray(slot_of_core)
        energy = np.zeros(n)
        busy = np.zeros((L, n))
        hops_out = np.zeros(n)
        traffic = np.zeros((n, n))
        for l, (src, t) in enumerate(self.layer_traffic):
            energy += self.compute_pj[l]
            busy[l] += self.compute_ns[l]
            traffic[src] += t
            # a spike's delivery time counts toward the phase of the layer that produced it; the per-row sums
            # are linear in the traffic, so adding them per layer equals one pass over the summed matrix
            h_l, pj_l, ns_l = _rowwise_link_sums(model, t, slots[src], slots)
            busy[l, src] += ns_l
            hops_out[src] += h_l
            energy[src] += pj_l
        units = self.units
        memory = core_memory_bytes(self.profile, self.syn, self.in_axons, units)
        cpu = self.profile.core.compartments_per_unit
        return CoreCosts(units, units * cpu, self.syn, self.in_axons, self.out_axons, memory, self.syn.copy(),
                         self.mac_events, traffic.sum(0), traffic.sum(1), hops_out, energy, busy, traffic)


def _rowwise_link_sums(model: CostModel, traffic_rows: np.ndarray, src_slots: np.ndarray, slots: np.ndarray,
                       chunk: int = 512):
    """Per row: sum_b traffic[a, b] * (hops, pJ, ns)(slot a, slot b). Destinations are first summed per tile
    (cores of a tile are equidistant from every slot), then weighted by tile distances, in row chunks: no
    dense n x n cost matrix."""
    cpt = model.profile.chip.cores_per_tile
    tiles, inv = np.unique(np.asarray(slots) // cpt, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    out = np.zeros((3, len(src_slots)))
    for lo in range(0, len(src_slots), chunk):
        agg = np.add.reduceat(traffic_rows[lo:lo + chunk][:, order], starts, axis=1)
        for m, d in enumerate(model.between(src_slots[lo:lo + chunk], tiles * cpt)):
            out[m, lo:lo + chunk] = (agg * d).sum(1)
    return out[0], out[1], out[2]


def estimate_assignment(nets: list[LayerNet], core_of: list[np.ndarray], n: int, profile: ChipProfile,
                        calibrated: bool) -> AssignmentCosts:
    model = CostModel(profile)
    cpu = profile.core.compartments_per_unit
    L = len(nets)
    units = np.zeros(n, np.int64)
    syn = np.zeros(n, np.int64)
    in_axons = np.zeros(n, np.int64)
    out_axons = np.zeros(n, np.int64)
    mac_ev = np.zeros(n, np.int64) if calibrated else None
    compute_pj, compute_ns = np.zeros((L, n)), np.zeros((L, n))
    layer_traffic = []
    reach = net_reach(nets, core_of, n)
    for l, net in enumerate(nets):
        co = np.asarray(core_of[l])
        T = net.tokens if calibrated else 0
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
        compute_pj[l], compute_ns[l] = model.compute(np.bincount(co, weights=macs_unit, minlength=n),
                                                     np.bincount(co, weights=rate * cpu, minlength=n),
                                                     np.bincount(co, weights=(1 - rate) * cpu, minlength=n))
        # spikes: unit i -> every core it reaches; traffic[src core, dst core] in spikes/token
        r = reach[l]
        out_axons += np.bincount(co, weights=r.sum(1), minlength=n).astype(np.int64)
        layer_traffic.append(group_sum(r, co, n, np.float64, weights=rate, compact=True))
    return AssignmentCosts(profile, units, syn, in_axons, out_axons, mac_ev, compute_pj, compute_ns,
                           layer_traffic)


def evaluate(nets: list[LayerNet], pl: Placement, profile: ChipProfile, calibrated: bool) -> CoreCosts:
    """The estimate of placement `pl` (both stages)."""
    return estimate_assignment(nets, pl.core_of, pl.n_cores, profile, calibrated).at(pl.slot_of_core)
