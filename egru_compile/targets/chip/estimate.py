"""Compile-time estimate of a placement's per-core costs (`CoreCosts`), charged by the one cost model
(`costs.CostModel`).

Two stages, so that every candidate placement is evaluated once: `estimate_assignment` computes everything
that depends only on the unit -> core map (units, synapses, axons, memory, MACs, compute energy and time,
the spike traffic between cores, per layer); `AssignmentCosts.at(slots)` adds what depends on the mesh
layout (spike-hops, message energy and time) for one slot map. A layout search needs only the first stage's
traffic; the baseline and its re-laid-out variant share one assignment estimate.

Latency, two models: ``busy_ns`` charges every message's whole route serially on its sending core (what
`placement.measures` and the reports' estimated latency sum, busiest core per phase); ``phase_ns`` is the
simulator's model (`simulate.ChipSimulator._phase`): per layer phase the busiest core's work with one
delivery per message it injects (spikes and partial sums), plus the longest route of the phase (spikes,
then partial sums: routers pipeline), plus the barrier — within a few % of the simulated latency
(tests/targets/chip/test_chip_phase_estimate.py); `split_choice` decides which layers to split on it.

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
    inject_ns: np.ndarray                                   # [layers, cores] delivery time of the messages sent

    @property
    def traffic(self) -> np.ndarray:
        """[cores, cores] spikes per token from core a to core b (all layers)."""
        n = len(self.units)
        t = np.zeros((n, n))
        for src, rows in self.layer_traffic:
            t[src] += rows
        return t

    def at(self, slot_of_core: np.ndarray, dense: bool = True) -> CoreCosts:
        """The full estimate with the cores in `slot_of_core`; ``dense`` False leaves out the [cores, cores]
        traffic matrix (``traffic`` None: the messages in / out per core are summed per layer instead; a
        17,000-core baseline's matrix alone is 2.3 GB)."""
        n, L = len(self.units), len(self.layer_traffic)
        model = CostModel(self.profile)
        slots = np.asarray(slot_of_core)
        energy = np.zeros(n)
        busy = np.zeros((L, n))
        hops_out = np.zeros(n)
        traffic = np.zeros((n, n)) if dense else None
        t_in, t_out = np.zeros(n), np.zeros(n)
        phase = np.zeros(L)
        for l, (src, t) in enumerate(self.layer_traffic):
            energy += self.compute_pj[l]
            busy[l] += self.compute_ns[l]
            if dense:
                traffic[src] += t
            else:
                t_in += t.sum(0)
                t_out[src] += t.sum(1)
            # a spike's delivery time counts toward the phase of the layer that produced it; the per-row sums
            # are linear in the traffic, so adding them per layer equals one pass over the summed matrix
            h_l, pj_l, ns_l, route_l = _rowwise_link_sums(model, t, slots[src], slots)
            busy[l, src] += ns_l
            hops_out[src] += h_l
            energy[src] += pj_l
            phase[l] = model.phase_ns(float((self.compute_ns[l] + self.inject_ns[l]).max(initial=0.0)),
                                      float(route_l.max(initial=0.0)))
        units = self.units
        memory = core_memory_bytes(self.profile, self.syn, self.in_axons, units)
        cpu = self.profile.core.compartments_per_unit
        if dense:
            t_in, t_out = traffic.sum(0), traffic.sum(1)
        return CoreCosts(units, units * cpu, self.syn, self.in_axons, self.out_axons, memory, self.syn.copy(),
                         self.mac_events, t_in, t_out, hops_out, energy, busy, traffic, phase)


def _rowwise_link_sums(model: CostModel, traffic_rows: np.ndarray, src_slots: np.ndarray, slots: np.ndarray,
                       chunk: int = 512):
    """Per row: sum_b traffic[a, b] * (hops, pJ, ns)(slot a, slot b), and the links' ns of the row's longest
    route (to a core it sends to). Destinations are first summed per tile (cores of a tile are equidistant
    from every slot), then weighted by tile distances, in row chunks: no dense n x n cost matrix."""
    cpt = model.profile.chip.cores_per_tile
    tiles, inv = np.unique(np.asarray(slots) // cpt, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
    out = np.zeros((4, len(src_slots)))
    for lo in range(0, len(src_slots), chunk):
        agg = np.add.reduceat(traffic_rows[lo:lo + chunk][:, order], starts, axis=1)
        for m, d in enumerate(model.between(src_slots[lo:lo + chunk], tiles * cpt)):
            out[m, lo:lo + chunk] = (agg * d).sum(1)
        links = model.route(src_slots[lo:lo + chunk][:, None], (tiles * cpt)[None], delivery=False)[2]
        out[3, lo:lo + chunk] = np.where(agg > 0, links, 0.0).max(1, initial=0.0)
    return out[0], out[1], out[2], out[3]


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
    compute_pj, compute_ns, inject_ns = np.zeros((L, n)), np.zeros((L, n)), np.zeros((L, n))
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
        inject_ns[l] = np.bincount(co, weights=rate * _messages(r, profile), minlength=n) * model.message()[1]
    return AssignmentCosts(profile, units, syn, in_axons, out_axons, mac_ev, compute_pj, compute_ns,
                           layer_traffic, inject_ns)


def _messages(reach: np.ndarray, profile: ChipProfile) -> np.ndarray:
    """[h] messages one spike of each unit injects: one per destination core (a multicast router: one)."""
    n_dest = reach.sum(1)
    return np.minimum(n_dest, 1) if profile.chip.multicast else n_dest


def evaluate(nets: list[LayerNet], pl: Placement, profile: ChipProfile, calibrated: bool) -> CoreCosts:
    """The estimate of placement `pl` (both stages)."""
    return estimate_assignment(nets, pl.core_of, pl.n_cores, profile, calibrated).at(pl.slot_of_core)


def estimate_split(nets: list[LayerNet], cm, profile: ChipProfile, calibrated: bool):
    """`model.CoreCosts` of a split mapping (`split_core_map`), charged by `costs.CostModel` like
    `estimate.AssignmentCosts.at`: per core the unit-parts it holds (``units``: accumulators of one unit's
    gates), their synapses (plus ``compartments_per_unit`` adder synapses per partial sum received) and axons,
    the MACs (exact per part from the calibration's per-source counts), the update of every remote part's
    ``compartments_per_unit`` accumulators each token (charged as a unit that fires in a token the part sends,
    a silent one otherwise), spikes to every core holding a
    target synapse, and one partial-sum message per (unit, remote part) and token in which the part gets an
    event (probability from the sources' rates taken as independent; uncalibrated: every token)."""
    from .split import SplitLayer, psum_bits, split_dest_cores
    model, cpu, n, L = CostModel(profile), profile.core.compartments_per_unit, cm.n_cores, len(nets)
    slots = np.asarray(cm.slot_of_core)[:n]
    z = lambda: np.zeros(n)  # noqa: E731
    units, syn, axons, out_axons, macs, mac_ev, hops, energy = z(), z(), z(), z(), z(), z(), z(), z()
    busy, traffic, phase = np.zeros((L, n)), np.zeros((n, n)), np.zeros(L)
    psum_ns = model.message(psum_bits(profile))[1]
    splits = cm.splits or [None] * L
    reach = split_dest_cores([(x.conn_in, x.conn_rec) for x in nets], cm.core_of, splits, n)
    pbits = psum_bits(profile)
    for l, net in enumerate(nets):
        T = net.tokens if calibrated else 0
        home = np.asarray(cm.core_of[l])
        sp = splits[l] or SplitLayer(np.array([0, net.n_in + net.hidden]), home[:, None])
        pres = np.concatenate([net.conn_in, net.conn_rec], axis=1)          # int8 synapse counts (0..3)
        src_f = net.source_fires if T and net.source_fires is not None else None
        src_rate = src_f / T if src_f is not None else np.ones(pres.shape[1])
        rate = net.fires / T if T else np.ones(net.hidden)
        syn_ops, part_upd, part_act, inject, psum_route = z(), z(), z(), z(), 0.0
        for p in range(sp.parts):
            lo, hi = sp.bounds[p], sp.bounds[p + 1]
            pc = sp.part_core[:, p]
            ok = pc >= 0
            blk = pres[ok, lo:hi]
            units += np.bincount(pc[ok], minlength=n)
            syn += np.bincount(pc[ok], weights=blk.sum(1), minlength=n)
            macs += np.bincount(pc[ok], weights=blk.sum(1), minlength=n)
            ids, present = group_sum(blk > 0, pc[ok], n, bool, compact=True)
            axons[ids] += present.sum(1)
            if src_f is not None:
                mac_ev += np.bincount(pc[ok], weights=blk @ src_f[lo:hi], minlength=n)
            syn_ops += np.bincount(pc[ok], weights=blk @ src_rate[lo:hi], minlength=n)
            if p == 0:
                continue
            # partial sums: P(part gets an event) = 1 - prod(1 - rate) over its distinct sources
            silent = np.exp((blk > 0) @ np.log1p(-np.minimum(src_rate[lo:hi], 1 - 1e-12)))
            pr = 1.0 - silent if T else np.ones(int(ok.sum()))
            h_pr, pj, ns = model.route(slots[pc[ok]], slots[home[ok]], pbits)
            snd, rcv = pc[ok], home[ok]
            syn += np.bincount(rcv, minlength=n) * cpu                   # adder synapses at home
            axons += np.bincount(rcv, minlength=n)
            out_axons += np.bincount(snd, minlength=n)
            syn_ops += np.bincount(rcv, weights=pr * cpu, minlength=n)   # the adds
            part_upd += np.bincount(snd, minlength=n) * cpu              # the part's accumulators, every token,
            part_act += np.bincount(snd, weights=pr * cpu, minlength=n)  # active in a token it sends
            hops += np.bincount(snd, weights=pr * h_pr, minlength=n)
            energy += np.bincount(snd, weights=pr * pj, minlength=n)
            busy[l] += np.bincount(snd, weights=pr * ns, minlength=n)
            np.add.at(traffic, (snd, rcv), pr)
            inject += np.bincount(snd, weights=pr * psum_ns, minlength=n)
            links = model.route(slots[snd], slots[rcv], pbits, delivery=False)[2]
            psum_route = max(psum_route, float(links[pr > 0].max(initial=0.0)))
        h_units = np.bincount(home, minlength=n)
        act = np.bincount(home, weights=rate * cpu, minlength=n)
        pj, ns = model.compute(syn_ops, act + part_act, h_units * cpu - act + part_upd - part_act)
        energy += pj
        busy[l] += ns
        out_axons += np.bincount(home, weights=reach[l].sum(1), minlength=n)
        src, rows = group_sum(reach[l], home, n, np.float64, weights=rate, compact=True)
        traffic[src] += rows
        h_l, pj_l, ns_l, route_l = _rowwise_link_sums(model, rows, slots[src], slots)
        hops[src] += h_l
        energy[src] += pj_l
        busy[l, src] += ns_l
        inject += np.bincount(home, weights=rate * _messages(reach[l], profile), minlength=n) * model.message()[1]
        phase[l] = model.phase_ns(float((ns + inject).max()), float(route_l.max(initial=0.0)) + psum_route)
    units = units.astype(np.int64)
    syn = syn.astype(np.int64)
    axons = axons.astype(np.int64)
    memory = core_memory_bytes(profile, syn, axons, units)
    return CoreCosts(units, units * cpu, syn, axons, out_axons.astype(np.int64), memory, macs.astype(np.int64),
                     np.rint(mac_ev).astype(np.int64) if calibrated else None, traffic.sum(0), traffic.sum(1),
                     hops, energy, busy, traffic, phase)
