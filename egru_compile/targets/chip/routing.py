"""Spike routing on the chip mesh: which cores a unit's spike must reach, the links each message crosses and
what one spike costs in messages, hops, energy and route time.

The mesh is a grid of tiles: chips sit side by side along x (as in `placement.slot_coords`), every tile has
a directed link to each neighbour; a link between two chips is a chip-to-chip link. Link ids follow a fixed
order (`Mesh.links`: tiles in (x, y) order, per tile its east, west, north, south neighbour). Routing is
dimension-order (X first, then Y), so the route between two tiles is fixed and a spike's cost depends only
on its source core and its set of destination cores — computed once per unit at load (`UnitRoutes`); per
token the simulator only adds up the entries of the units that fired.

* unicast (loihi-like): one message per spiking unit per destination core (the source core included); each
  message crosses the links of its own X-then-Y route.
* multicast (`router_multicast(profile)`, e.g. spinnaker2-like): one packet per spiking unit, replicated by
  the routers along the union of the X-then-Y routes to its destination cores (a tree): each link of the tree
  carries the packet once.

Costs per message are the cost model's (`costs.CostModel`, shared with the placement estimate): a delivery
per destination core, ``hop_ew`` / ``hop_ns`` per east-west / north-south tile link, and a chip-to-chip link
costs an east-west hop plus ``chip_hop_pj/ns``. ``hops`` counts links traversed (a chip-to-chip link is one
hop, in the estimate too).

Nothing here walks routes hop by hop or holds a tile x link table: an X-then-Y route from (xs, ys) to
(xd, yd) is the row segment xs..xd of row ys, then the column segment ys..yd of column xd, so its hops,
energy and time are differences of per-column prefix sums, and the messages per link from one source tile
are suffix sums of its destination counts over the grid (O(tiles) per source tile). `Mesh.route` (a hop
walk) is kept as the reference the tests compare against.
"""
from __future__ import annotations

import numpy as np

from .costs import CostModel, slot_coords
from .profile import ChipProfile


def router_multicast(profile: ChipProfile) -> bool:
    """Does the profile's router replicate packets (``[chip] multicast = true``; default one message per
    destination core)?"""
    return bool(profile.chip.multicast)


class Mesh:
    """Tiles of `chips` chips; ``links`` [(from tile xy, to tile xy)] in id order, ``link_kind`` / ``link_pj``
    / ``link_ns`` per link; ``east/west/north/south`` [width, height] link id leaving each tile in that
    direction (-1 at the border)."""

    def __init__(self, profile: ChipProfile, chips: int):
        g = profile.chip
        W, H = self.width, self.height = chips * g.tiles_x, g.tiles_y
        # the link x -> x+1 (either direction) crosses a chip boundary when x+1 starts a chip
        self.hlink_pj, self.hlink_ns, chip_edge, (self.ns_pj, self.ns_ns) = CostModel(profile).link_costs(chips)
        self.hcum_pj = np.r_[0.0, np.cumsum(self.hlink_pj)]                                # [W]
        self.hcum_ns = np.r_[0.0, np.cumsum(self.hlink_ns)]
        dirs = {"east": (1, 0), "west": (-1, 0), "north": (0, 1), "south": (0, -1)}
        ids = {k: -np.ones((W, H), np.int64) for k in dirs}
        links, kind, pj, ns = [], [], [], []
        for x in range(W):
            for y in range(H):
                for name, (dx, dy) in dirs.items():
                    x1, y1 = x + dx, y + dy
                    if not (0 <= x1 < W and 0 <= y1 < H):
                        continue
                    if dx:
                        k = "chip" if chip_edge[min(x, x1)] else "ew"
                        p, t = self.hlink_pj[min(x, x1)], self.hlink_ns[min(x, x1)]
                    else:
                        k, p, t = "ns", self.ns_pj, self.ns_ns
                    ids[name][x, y] = len(links)
                    links.append(((x, y), (x1, y1)))
                    kind.append(k)
                    pj.append(p)
                    ns.append(t)
        self.east, self.west, self.north, self.south = ids["east"], ids["west"], ids["north"], ids["south"]
        self.links = links
        self.link_kind = kind
        self.link_pj = np.array(pj, np.float64)
        self.link_ns = np.array(ns, np.float64)
        self._next = {(a, b): i for i, (a, b) in enumerate(links)}

    @property
    def n_links(self) -> int:
        return len(self.links)

    def tile_xy(self, t):
        return t // self.height, t % self.height

    def tile_id(self, x, y):
        return x * self.height + y

    def route(self, a: tuple[int, int], b: tuple[int, int]) -> list[int]:
        """Link ids of the dimension-order route from tile a to tile b (X first, then Y), hop by hop (the
        reference; the costs below never call it)."""
        (x, y), (x1, y1) = a, b
        out = []
        while x != x1:
            nx_ = x + (1 if x1 > x else -1)
            out.append(self._next[(x, y), (nx_, y)])
            x = nx_
        while y != y1:
            ny = y + (1 if y1 > y else -1)
            out.append(self._next[(x, y), (x, ny)])
            y = ny
        return out

    def route_costs(self, s: int, tiles: np.ndarray):
        """(hops, pJ, ns) of the links of the routes from tile s to each tile of `tiles` (no per-delivery
        charge)."""
        xs, ys = self.tile_xy(int(s))
        x, y = self.tile_xy(np.asarray(tiles))
        dy = np.abs(y - ys)
        return (np.abs(x - xs) + dy, np.abs(self.hcum_pj[x] - self.hcum_pj[xs]) + dy * self.ns_pj,
                np.abs(self.hcum_ns[x] - self.hcum_ns[xs]) + dy * self.ns_ns)

    def add_unicast_loads(self, loads: np.ndarray, s: int, grid: np.ndarray) -> None:
        """loads[link] += messages from tile s with grid[x, y] messages to tile (x, y), each on its own
        X-then-Y route."""
        xs, ys = self.tile_xy(int(s))
        col = grid.sum(1)                                           # [W] messages ending in each column
        right = np.cumsum(col[::-1])[::-1]                          # right[x] = sum over columns >= x
        left = np.cumsum(col)                                       # left[x] = sum over columns <= x
        W, H = grid.shape
        if xs + 1 < W:                                              # east links x -> x+1 for x >= xs
            loads[self.east[xs:W - 1, ys]] += right[xs + 1:]
        if xs > 0:                                                  # west links x -> x-1 for x <= xs
            loads[self.west[1:xs + 1, ys]] += left[:xs]
        up = np.cumsum(grid[:, ::-1], axis=1)[:, ::-1]              # up[x, y] = sum over rows >= y
        down = np.cumsum(grid, axis=1)                              # down[x, y] = sum over rows <= y
        if ys + 1 < H:                                              # north links y -> y+1 for y >= ys
            loads[self.north[:, ys:H - 1]] += up[:, ys + 1:]
        if ys > 0:                                                  # south links y -> y-1 for y <= ys
            loads[self.south[:, 1:ys + 1]] += down[:, :ys]

    def link_name(self, lid: int) -> str:
        (x0, y0), (x1, y1) = self.links[lid]
        return f"({x0},{y0})->({x1},{y1})"


def core_tiles(profile: ChipProfile, slot_of_core: np.ndarray, mesh: Mesh) -> np.ndarray:
    _, x, y = slot_coords(profile, np.asarray(slot_of_core))
    return mesh.tile_id(x, y)


class UnitRoutes:
    """Per source unit of one layer, for one spike: ``n_dest`` destination cores, ``n_msgs`` messages
    injected, ``hops`` links crossed, ``pj`` routing energy, ``max_ns`` the longest route's link time;
    ``reach`` [h, n_cores] bool. `link_loads(counts)` gives the messages per link of `counts[i]` spikes of
    each unit i. Computed per source tile from the units' destination counts per tile (tiles that hold
    cores only): no per-link table per unit."""

    def __init__(self, reach: np.ndarray, core_of: np.ndarray, tiles: np.ndarray, mesh: Mesh,
                 profile: ChipProfile, multicast: bool, chunk: int = 256):
        h = reach.shape[0]
        self.reach = reach
        self.mesh = mesh
        self.multicast = multicast
        self.n_dest = reach.sum(1).astype(np.int64)
        tiles = np.asarray(tiles, np.int64)
        self.src_tile = tiles[np.asarray(core_of, np.int64)]
        # destination counts per used tile: [h, n_used] (cores of one tile are interchangeable)
        self.used, inv = np.unique(tiles, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
        dt = np.int16 if profile.chip.cores_per_tile < 2 ** 15 else np.int64
        cnt = np.zeros((h, len(self.used)), dt)
        for lo in range(0, h, chunk):
            cnt[lo:lo + chunk] = np.add.reduceat(reach[lo:lo + chunk][:, order].astype(dt), starts, axis=1)
        self.tile_counts = cnt
        ux, uy = mesh.tile_xy(self.used)
        self._ux, self._uy = ux, uy
        hops = np.zeros(h, np.int64)
        pj = np.zeros(h)
        max_ns = np.zeros(h)
        # multicast trees: per unit the row span [xmin, xmax] and per destination column the column span
        self._span = None
        if multicast:
            self._cols, col_inv = np.unique(ux, return_inverse=True)
            corder = np.argsort(col_inv, kind="stable")
            cstarts = np.flatnonzero(np.r_[True, np.diff(col_inv[corder]) != 0])
            self._span = (np.zeros(h, np.int64), np.zeros(h, np.int64),
                          np.zeros((h, len(self._cols)), np.int32), np.zeros((h, len(self._cols)), np.int32))
        for s in np.unique(self.src_tile):
            rows = np.nonzero(self.src_tile == s)[0]
            c = cnt[rows]
            hop_t, pj_t, ns_t = mesh.route_costs(int(s), self.used)
            hit = c > 0
            max_ns[rows] = np.where(hit, ns_t[None], 0.0).max(1)
            if not multicast:
                hops[rows] = c.astype(np.int64) @ hop_t
                pj[rows] = c.astype(np.float64) @ pj_t
                continue
            xs, ys = mesh.tile_xy(int(s))
            xmax = np.where(hit, ux[None], xs).max(1)
            xmin = np.where(hit, ux[None], xs).min(1)
            top = np.maximum.reduceat(np.where(hit, uy[None] - ys, 0)[:, corder], cstarts, axis=1)  # [g, cols]
            bot = np.maximum.reduceat(np.where(hit, ys - uy[None], 0)[:, corder], cstarts, axis=1)
            top, bot = np.maximum(top, 0), np.maximum(bot, 0)
            vert = (top + bot).sum(1)
            hops[rows] = xmax - xmin + vert
            pj[rows] = mesh.hcum_pj[xmax] - mesh.hcum_pj[xmin] + vert * mesh.ns_pj
            sp = self._span
            sp[0][rows], sp[1][rows], sp[2][rows], sp[3][rows] = xmin, xmax, top, bot
        self.hops = hops
        self.n_msgs = np.minimum(self.n_dest, 1) if multicast else self.n_dest
        self.pj = CostModel(profile).message()[0] * self.n_dest + pj
        self.max_ns = max_ns

    def link_loads(self, counts: np.ndarray) -> np.ndarray:
        """[n_links] messages crossing each link when unit i spikes counts[i] times."""
        mesh = self.mesh
        loads = np.zeros(mesh.n_links)
        counts = np.asarray(counts, np.float64)
        W, H = mesh.width, mesh.height
        for s in np.unique(self.src_tile[counts != 0]):
            rows = np.nonzero((self.src_tile == s) & (counts != 0))[0]
            f = counts[rows]
            xs, ys = mesh.tile_xy(int(s))
            if not self.multicast:
                grid = np.zeros((W, H))
                grid[self._ux, self._uy] = f @ self.tile_counts[rows].astype(np.float64)
                mesh.add_unicast_loads(loads, int(s), grid)
                continue
            xmin, xmax, top, bot = (a[rows] for a in self._span)
            top, bot = top.astype(np.int64), bot.astype(np.int64)
            # east link x -> x+1 (x >= xs) carries the units whose tree reaches past x: xmax > x
            hx = np.bincount(xmax, f, minlength=W)
            past = np.cumsum(hx[::-1])[::-1]                        # past[x] = weight with xmax >= x
            if xs + 1 < W:
                loads[mesh.east[xs:W - 1, ys]] += past[xs + 1:]
            hn = np.bincount(xmin, f, minlength=W)
            before = np.cumsum(hn)                                  # weight with xmin <= x
            if xs > 0:
                loads[mesh.west[1:xs + 1, ys]] += before[:xs]
            nc = len(self._cols)
            k_up = np.arange(H - 1 - ys)                            # north link ys+k -> ys+k+1: top > k
            if len(k_up):
                t = np.bincount((np.arange(nc) * H + top).ravel(), np.repeat(f, nc), minlength=nc * H)
                up = np.cumsum(t.reshape(nc, H)[:, ::-1], axis=1)[:, ::-1]       # weight with top >= k
                loads[mesh.north[self._cols][:, ys + k_up]] += up[:, k_up + 1]
            k_dn = np.arange(ys)                                    # south link ys-k -> ys-k-1: bot > k
            if len(k_dn):
                b = np.bincount((np.arange(nc) * H + bot).ravel(), np.repeat(f, nc), minlength=nc * H)
                dn = np.cumsum(b.reshape(nc, H)[:, ::-1], axis=1)[:, ::-1]
                loads[mesh.south[self._cols][:, ys - k_dn]] += dn[:, k_dn + 1]
        return loads
