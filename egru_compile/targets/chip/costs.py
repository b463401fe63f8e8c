"""The one cost model of the chip targets: what a synaptic op, a compartment update, a spike message, a mesh
hop and a chip crossing cost, and where a slot sits on the mesh. Placement (`estimate`), layout, routing,
the simulator and the reports all charge through `CostModel`; none writes a per-event formula of its own.

Geometry. Slot s of a placement is core ``s % cores`` of chip ``s // cores``; a core sits in tile
``local // cores_per_tile`` of its chip's ``tiles_x`` x ``tiles_y`` grid. Chips sit side by side along x, so
the mesh is one grid of ``chips * tiles_x`` x ``tiles_y`` tiles (global tile x = chip * tiles_x + tile x).

Costs of one spike message from slot a to slot b (the X-then-Y route of `routing`):

* ``spike_tile_pj/ns`` once per message (its delivery to a core; also to the sender's own core);
* ``hop_ew_pj/ns`` per east-west link and ``hop_ns_pj/ns`` per north-south link of the route;
* a chip-to-chip link is *one* link of the route (one hop: the link between the last tile column of a chip
  and the first of the next), costing an east-west hop plus the profile's ``chip_hop_pj/ns`` (the chip
  crossing's extra cost, `[chip]` section). Hops = links traversed = |dx| + |dy| in global tile
  coordinates; the number of chip boundaries crossed only adds energy and time.

Per core and layer phase: ``synop`` per synaptic op, ``neuron_active`` per compartment update of a unit
that fired, ``neuron_inactive`` per compartment of one that did not, and a barrier per phase.

Extension points (issue 25): `message` takes the number of payload bits a message carries (graded spikes,
``[spikes] payload_bits``), today charged as a binary spike (the profiles assume a graded spike costs no
more); fan-in splitting adds partial-sum messages, which are messages like any other to this model.
"""
from __future__ import annotations

import numpy as np

from .profile import ChipProfile


def slot_coords(profile: ChipProfile, slots) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chip, global tile x, tile y) of physical slots; chips are placed side by side along x."""
    g = profile.chip
    slots = np.asarray(slots)
    chip = slots // g.cores
    local = slots % g.cores
    tile = local // g.cores_per_tile
    return chip, chip * g.tiles_x + tile % g.tiles_x, tile // g.tiles_x


class CostModel:
    """Per-event costs of `profile` (see the module docstring)."""

    def __init__(self, profile: ChipProfile):
        self.profile = profile
        self.e = profile.energy
        self.g = profile.chip

    # ------------------------------------------------------------------------------------------- compute
    def compute(self, synops, upd_active, upd_inactive):
        """(pJ, ns) of a core's work in one phase: synaptic ops and compartment updates (active / inactive)."""
        e = self.e
        return (synops * e.synop_pj + upd_active * e.neuron_active_pj + upd_inactive * e.neuron_inactive_pj,
                synops * e.synop_ns + upd_active * e.neuron_active_ns + upd_inactive * e.neuron_inactive_ns)

    def message(self, payload_bits: int = 0) -> tuple[float, float]:
        """(pJ, ns) of one message's delivery to a core, links not included (graded: charged as binary)."""
        return self.e.spike_tile_pj, self.e.spike_tile_ns

    def phase_ns(self, work_ns: float, route_ns: float = 0.0) -> float:
        """Latency of one layer phase: the slowest core's work, the longest route, the barrier."""
        return work_ns + route_ns + self.e.barrier_ns

    # ------------------------------------------------------------------------------------------- links
    def link_costs(self, chips: int):
        """Per-link costs of a mesh of `chips` chips: (east-west link pJ [W-1], ns [W-1], is-chip-crossing
        [W-1]) for the link between tile columns x and x+1, and the (pJ, ns) of a north-south link."""
        W = chips * self.g.tiles_x
        crossing = (np.arange(1, W) % self.g.tiles_x) == 0
        return (np.where(crossing, self.e.hop_ew_pj + self.g.chip_hop_pj, self.e.hop_ew_pj),
                np.where(crossing, self.e.hop_ew_ns + self.g.chip_hop_ns, self.e.hop_ew_ns), crossing,
                (self.e.hop_ns_pj, self.e.hop_ns_ns))

    def axis_weights(self, metric: str) -> tuple[float, float, float]:
        """Weights of |dx|, |dy| and |dchip| of a route for the layout search: ``energy`` (pJ of the links)
        or ``hops`` (links, with their energy as a tie-break)."""
        e, g = self.e, self.g
        if metric == "energy":
            return e.hop_ew_pj, e.hop_ns_pj, g.chip_hop_pj
        return 1 + 1e-3 * e.hop_ew_pj, 1 + 1e-3 * e.hop_ns_pj, 1e-3 * g.chip_hop_pj

    def between(self, a, b):
        """(hops, pJ, ns) of one message from each slot of `a` to each slot of `b`: [len(a), len(b)], the
        delivery included."""
        ca, xa, ya = slot_coords(self.profile, a)
        cb, xb, yb = slot_coords(self.profile, b)
        dx = np.abs(xa[:, None] - xb[None, :])
        dy = np.abs(ya[:, None] - yb[None, :])
        dc = np.abs(ca[:, None] - cb[None, :])
        e, g = self.e, self.g
        pj, ns = self.message()
        return ((dx + dy).astype(np.float64),
                pj + dx * e.hop_ew_pj + dy * e.hop_ns_pj + dc * g.chip_hop_pj,
                ns + dx * e.hop_ew_ns + dy * e.hop_ns_ns + dc * g.chip_hop_ns)


def hop_matrices(profile: ChipProfile, slots):
    """Pairwise (spike-hops, pJ, ns) of one spike message between slots (dense: reports and small tests)."""
    return CostModel(profile).between(slots, slots)
