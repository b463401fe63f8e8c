"""Spike routing on the chip mesh: which cores a unit's spike must reach, the links each message crosses and
what one spike costs in messages, hops, energy and route time.

The mesh is a directed `networkx` graph of tiles: chips sit side by side along x (as in
`placement.slot_coords`), every tile has a link to each neighbour; a link between two chips is a chip-to-chip
link. Routing is dimension-order (X first, then Y), so the route between two tiles is fixed and a spike's cost
depends only on its source core and its set of destination cores — computed once per unit at load
(`UnitRoutes`); per token the simulator only adds up the rows of the units that fired.

* unicast (loihi-like): one message per spiking unit per destination core (the source core included); each
  message crosses the links of its own X-then-Y route.
* multicast (`router_multicast(profile)`, e.g. spinnaker2-like): one packet per spiking unit, replicated by
  the routers along the union of the X-then-Y routes to its destination cores (a tree): each link of the tree
  carries the packet once.

Costs per message (the profile's per-event figures): ``spike_tile_pj/ns`` per delivery to a core,
``hop_ew`` / ``hop_ns`` per east-west / north-south tile link, and a chip-to-chip link costs an east-west
hop plus ``chip_hop_pj/ns`` (the same charges as the placement's cost model). ``hops`` counts links
traversed (a chip-to-chip link is one hop).
"""
from __future__ import annotations


import networkx as nx
import numpy as np

from .placement import slot_coords
from .profile import ChipProfile


def router_multicast(profile: ChipProfile) -> bool:
    """Does the profile's router replicate packets (``[chip] multicast = true``; default one message per
    destination core)?"""
    return bool(profile.chip.multicast)


class Mesh:
    """Tiles of `chips` chips as a directed graph; ``links`` in a fixed order (edge attribute ``id``)."""

    def __init__(self, profile: ChipProfile, chips: int):
        g, e = profile.chip, profile.energy
        self.width, self.height = chips * g.tiles_x, g.tiles_y
        G = nx.DiGraph()
        G.add_nodes_from((x, y) for x in range(self.width) for y in range(self.height))
        pj, ns, kind = [], [], []
        for x, y in sorted(G.nodes):
            for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                nb = (x + dx, y + dy)
                if nb not in G:
                    continue
                if dx and (x // g.tiles_x) != (nb[0] // g.tiles_x):
                    k, p, t = "chip", e.hop_ew_pj + g.chip_hop_pj, e.hop_ew_ns + g.chip_hop_ns
                elif dx:
                    k, p, t = "ew", e.hop_ew_pj, e.hop_ew_ns
                else:
                    k, p, t = "ns", e.hop_ns_pj, e.hop_ns_ns
                G.add_edge((x, y), nb, id=len(kind), kind=k)
                pj.append(p)
                ns.append(t)
                kind.append(k)
        self.graph = G
        self.links = sorted(G.edges, key=lambda ab: G.edges[ab]["id"])
        self.link_kind = kind
        self.link_pj = np.array(pj, np.float64)
        self.link_ns = np.array(ns, np.float64)
        self._paths: dict[int, np.ndarray] = {}

    def paths_from(self, s: int) -> np.ndarray:
        """[n_tiles, n_links] int8: the links of the X-then-Y route from tile s to every tile (cached)."""
        P = self._paths.get(s)
        if P is None:
            P = np.zeros((self.width * self.height, len(self.link_kind)), np.int8)
            for d in range(len(P)):
                P[d, self.route(self.tile_xy(s), self.tile_xy(d))] = 1
            self._paths[s] = P
        return P

    def tile_xy(self, t: int) -> tuple[int, int]:
        return t // self.height, t % self.height

    def tile_id(self, x, y):
        return x * self.height + y

    def route(self, a: tuple[int, int], b: tuple[int, int]) -> list[int]:
        """Link ids of the dimension-order route from tile a to tile b (X first, then Y)."""
        (x, y), (x1, y1) = a, b
        out = []
        while x != x1:
            nx_ = x + (1 if x1 > x else -1)
            out.append(self.graph.edges[(x, y), (nx_, y)]["id"])
            x = nx_
        while y != y1:
            ny = y + (1 if y1 > y else -1)
            out.append(self.graph.edges[(x, y), (x, ny)]["id"])
            y = ny
        return out

    def link_name(self, lid: int) -> str:
        (x0, y0), (x1, y1) = self.links[lid]
        return f"({x0},{y0})->({x1},{y1})"


def core_tiles(profile: ChipProfile, slot_of_core: np.ndarray, mesh: Mesh) -> np.ndarray:
    _, x, y = slot_coords(profile, np.asarray(slot_of_core))
    return mesh.tile_id(x, y)


class UnitRoutes:
    """Per source unit of one layer, for one spike: ``n_dest`` destination cores, ``n_msgs`` messages
    injected, ``hops`` links crossed, ``pj`` routing energy, ``max_ns`` the longest route's link time, and
    ``links`` [h, n_links] how many times the spike crosses each link; ``reach`` [h, n_cores] bool."""

    def __init__(self, reach: np.ndarray, core_of: np.ndarray, tiles: np.ndarray, mesh: Mesh,
                 profile: ChipProfile, multicast: bool):
        h = reach.shape[0]
        self.reach = reach
        self.n_dest = reach.sum(1).astype(np.int64)
        links = np.zeros((h, len(mesh.link_kind)), np.float32)
        max_ns = np.zeros(h)
        for a in np.unique(core_of):
            rows = np.nonzero(core_of == a)[0]
            P = mesh.paths_from(int(tiles[a]))[tiles].astype(np.float32)       # [n_cores, n_links]
            r = reach[rows].astype(np.float32)
            cnt = r @ P
            links[rows] = (cnt > 0) if multicast else cnt
            max_ns[rows] = (r * (P @ mesh.link_ns.astype(np.float32))[None]).max(1)
        self.links = links
        self.hops = links.sum(1).astype(np.int64)
        self.n_msgs = np.minimum(self.n_dest, 1) if multicast else self.n_dest
        self.pj = profile.energy.spike_tile_pj * self.n_dest + links.astype(np.float64) @ mesh.link_pj
        self.max_ns = max_ns
