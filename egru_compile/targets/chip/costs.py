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

Message size (graded spikes, ``[spikes] payload_bits`` and ``flit_bits``): a message is a header flit plus
``ceil(payload_bits / flit_bits)`` payload flits (`flits`; a binary spike, or a profile without
``flit_bits``, is one flit). Every flit is delivered and crosses every link of the route, so the delivery
(``spike_tile_pj/ns``) and the links' *energy* are charged once per flit; the links' *time* is charged once
per message (the flits follow the header through the routers, cut-through). A spike message carries the
profile's ``payload_bits`` (the default of `message`, `between` and `link_costs`); a message with another
payload (e.g. a partial sum) passes its own. Binary-spike profiles (loihi-like) cost exactly what they did.
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

    def flits(self, payload_bits: int | None = None) -> int:
        """Flits of one message with `payload_bits` of payload (None: a spike of this profile)."""
        return self.profile.spikes.flits(payload_bits)

    def message(self, payload_bits: int | None = None) -> tuple[float, float]:
        """(pJ, ns) of one message's delivery to a core, links not included: ``spike_tile`` per flit
        (None: a spike of this profile, its ``payload_bits``)."""
        f = self.flits(payload_bits)
        return self.e.spike_tile_pj * f, self.e.spike_tile_ns * f

    def phase_ns(self, work_ns: float, route_ns: float = 0.0) -> float:
        """Latency of one layer phase: the slowest core's work, the longest route, the barrier."""
        return work_ns + route_ns + self.e.barrier_ns

    # ------------------------------------------------------------------------------------------- links
    def link_costs(self, chips: int, payload_bits: int | None = None):
        """Per-link costs of one message (`payload_bits` as in `message`) on a mesh of `chips` chips:
        (east-west link pJ [W-1], ns [W-1], is-chip-crossing [W-1]) for the link between tile columns x and
        x+1, and the (pJ, ns) of a north-south link. Energy per flit, time per message."""
        W = chips * self.g.tiles_x
        f = self.flits(payload_bits)
        crossing = (np.arange(1, W) % self.g.tiles_x) == 0
        ew_pj = np.where(crossing, self.e.hop_ew_pj + self.g.chip_hop_pj, self.e.hop_ew_pj)
        return (ew_pj * f,
                np.where(crossing, self.e.hop_ew_ns + self.g.chip_hop_ns, self.e.hop_ew_ns), crossing,
                (self.e.hop_ns_pj * f, self.e.hop_ns_ns))

    def axis_weights(self, metric: str) -> tuple[float, float, float]:
        """Weights of |dx|, |dy| and |dchip| of a route for the layout search: ``energy`` (pJ of the links)
        or ``hops`` (links, with their energy as a tie-break). Per flit: every spike message has the same
        flits, so scaling by them would not change the layout's choices."""
        e, g = self.e, self.g
        if metric == "energy":
            return e.hop_ew_pj, e.hop_ns_pj, g.chip_hop_pj
        return 1 + 1e-3 * e.hop_ew_pj, 1 + 1e-3 * e.hop_ns_pj, 1e-3 * g.chip_hop_pj

    def between(self, a, b, payload_bits: int | None = None):
        """(hops, pJ, ns) of one message (`payload_bits` as in `message`) from each slot of `a` to each slot
        of `b`: [len(a), len(b)], the delivery included."""
        return self.route(np.asarray(a)[:, None], np.asarray(b)[None, :], payload_bits)

    def route(self, a, b, payload_bits: int | None = None, delivery: bool = True):
        """(hops, pJ, ns) of one message from slot a to slot b, elementwise over broadcast arrays (`delivery`
        False: the links only)."""
        ca, xa, ya = slot_coords(self.profile, a)
        cb, xb, yb = slot_coords(self.profile, b)
        dx = np.abs(xa - xb)
        dy = np.abs(ya - yb)
        dc = np.abs(ca - cb)
        e, g = self.e, self.g
        pj, ns = self.message(payload_bits) if delivery else (0.0, 0.0)
        f = self.flits(payload_bits)                   # link energy per flit (x 1 is exact: binary unchanged)
        return ((dx + dy).astype(np.float64), pj + dx * (e.hop_ew_pj * f) + dy * (e.hop_ns_pj * f)
                + dc * (g.chip_hop_pj * f),
                ns + dx * e.hop_ew_ns + dy * e.hop_ns_ns + dc * g.chip_hop_ns)


def hop_matrices(profile: ChipProfile, slots):
    """Pairwise (spike-hops, pJ, ns) of one spike message between slots (dense: reports and small tests)."""
    return CostModel(profile).between(slots, slots)
