"""Routing costs of the chip simulator at scale, checked against a hop-by-hop route walk written here.

`routing.UnitRoutes` computes per-unit hops, messages, energy, longest route and per-link loads from prefix
sums over the tile grid (no per-link table). The reference below walks every message's X-then-Y route link
by link on a multi-chip mesh (chips side by side along x), charges each link by its kind (chip-to-chip when
it joins two chips) and unions the links of a spike's routes for multicast; it uses only the profile's
geometry and costs and the mesh's link naming (`Mesh.links`, whose order is checked here too)."""
from __future__ import annotations

import numpy as np
import pytest

from egru_compile.targets.chip import load_profile
from egru_compile.targets.chip.routing import Mesh, UnitRoutes, core_tiles


def _tile_of_slot(slot, g):
    chip, local = divmod(int(slot), g.cores)
    tile = local // g.cores_per_tile
    return chip * g.tiles_x + tile % g.tiles_x, tile // g.tiles_x


def _walk(a, b):
    """Links (from, to) of the X-then-Y route a -> b, one hop at a time."""
    (x, y), (x1, y1) = a, b
    out = []
    while x != x1:
        n = x + (1 if x1 > x else -1)
        out.append(((x, y), (n, y)))
        x = n
    while y != y1:
        n = y + (1 if y1 > y else -1)
        out.append(((x, y), (x, n)))
        y = n
    return out


def _link_cost(link, profile):
    g, e = profile.chip, profile.energy
    (x0, y0), (x1, y1) = link
    if y0 != y1:
        return e.hop_ns_pj, e.hop_ns_ns
    if x0 // g.tiles_x != x1 // g.tiles_x:
        return e.hop_ew_pj + g.chip_hop_pj, e.hop_ew_ns + g.chip_hop_ns
    return e.hop_ew_pj, e.hop_ew_ns


def _reference(profile, reach, core_of, slot_of_core, multicast, counts, link_id):
    g, e = profile.chip, profile.energy
    pos = [_tile_of_slot(s, g) for s in slot_of_core]
    h = reach.shape[0]
    hops, msgs, pj, max_ns = np.zeros(h, np.int64), np.zeros(h, np.int64), np.zeros(h), np.zeros(h)
    loads = np.zeros(len(link_id))
    for i in range(h):
        src = pos[core_of[i]]
        dests = np.nonzero(reach[i])[0]
        routes = [_walk(src, pos[c]) for c in dests]
        used = [lk for r in routes for lk in r]
        if multicast:
            used = sorted(set(used))
        hops[i] = len(used)
        msgs[i] = min(len(dests), 1) if multicast else len(dests)
        pj[i] = e.spike_tile_pj * len(dests) + sum(_link_cost(lk, profile)[0] for lk in used)
        max_ns[i] = max([sum(_link_cost(lk, profile)[1] for lk in r) for r in routes], default=0.0)
        for lk in used:
            loads[link_id[lk]] += counts[i]
    return hops, msgs, pj, max_ns, loads


def _case(profile, chips, n_cores, h, density, seed):
    rng = np.random.default_rng(seed)
    slots = rng.choice(chips * profile.chip.cores, size=n_cores, replace=False)
    slots[0], slots[1] = 0, chips * profile.chip.cores - 1             # both ends of the mesh
    reach = rng.random((h, n_cores)) < density
    reach[0] = False                                                    # a unit that reaches no core
    reach[1] = False
    reach[1, rng.integers(n_cores)] = True                              # and one that reaches one
    core_of = rng.integers(0, n_cores, h)
    core_of[:3] = [0, 1, 0]
    counts = rng.integers(0, 7, h)
    return slots, reach, core_of, counts


@pytest.mark.parametrize("name,chips,multicast", [("loihi-like", 3, False), ("loihi-like", 3, True),
                                                  ("spinnaker2-like", 2, True), ("spinnaker2-like", 2, False)])
def test_arithmetic_routes_equal_hop_walk(name, chips, multicast):
    profile = load_profile(name)
    mesh = Mesh(profile, chips)
    g = profile.chip
    # link naming: every directed neighbour pair once, in (x, y) order, per tile east, west, north, south
    W, H = chips * g.tiles_x, g.tiles_y
    expect = [((x, y), (x + dx, y + dy)) for x in range(W) for y in range(H)
              for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)) if 0 <= x + dx < W and 0 <= y + dy < H]
    assert mesh.links == expect
    for lid, lk in enumerate(mesh.links):
        assert mesh.link_pj[lid] == _link_cost(lk, profile)[0]
        assert (mesh.link_kind[lid] == "chip") == (lk[0][1] == lk[1][1] and lk[0][0] // g.tiles_x != lk[1][0] // g.tiles_x)
    link_id = {lk: i for i, lk in enumerate(mesh.links)}
    n_cores = min(70, chips * g.cores)
    for seed, density in ((0, 0.15), (1, 0.6)):
        slots, reach, core_of, counts = _case(profile, chips, n_cores, 90, density, seed)
        tiles = core_tiles(profile, slots, mesh)
        R = UnitRoutes(reach, core_of, tiles, mesh, profile, multicast)
        hops, msgs, pj, max_ns, loads = _reference(profile, reach, core_of, slots, multicast, counts, link_id)
        assert R.hops.tolist() == hops.tolist() and hops.sum() > 0
        assert R.n_msgs.tolist() == msgs.tolist()
        assert R.n_dest.tolist() == reach.sum(1).tolist()
        np.testing.assert_allclose(R.pj, pj, rtol=1e-12)
        np.testing.assert_allclose(R.max_ns, max_ns, rtol=1e-12)
        assert R.link_loads(counts).tolist() == loads.tolist()          # integer counts: exact
        assert any(mesh.link_kind[i] == "chip" for i in np.nonzero(loads)[0])
