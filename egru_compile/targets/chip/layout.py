"""Mesh layout: which physical slot (chip, tile, core in tile) each logical core occupies.

Establishes: `layout` returns an injective core -> slot map over the slots of `chips` chips that is a local
optimum of the activity-weighted spike energy sum_ab traffic[a, b] * pJ(slot a, slot b) for the neighbourhood
"move one core to one of its K best candidate slots (empty, or swapping with the occupant)".

Cost model (`costs.CostModel`). One spike message from slot s to slot t costs spike_tile + |dx| hop_ew +
|dy| hop_ns + |dchip| chip_hop (chips side by side along x; a chip crossing is one of the |dx| links, with
the chip hop's extra cost); metric ``hops`` weighs the links |dx| + |dy| with their energy as a tie-break
(`CostModel.axis_weights`). The delivery does not depend on the layout and is dropped, the rest is
separable per axis, so the cost of core a at *every* slot is three 1-D weighted distance
transforms of a's partner histograms: O(partners + slots) per core, never slot x slot. Traffic is kept as
CSR neighbour lists (a core talks to tens to thousands of cores, not to all). A move is evaluated
incrementally from the two cores' partner lists only.

Two starts — the identity (cores in slot order, the sequential baseline's layout) and a greedy construction
(strongest communicators first, each on the free slot cheapest towards its placed partners) — each improved
by sweeps of best-candidate moves until a sweep changes nothing (or the sweep cap / time budget is hit);
the cheaper result is kept, so the result is never worse than the identity.
"""
from __future__ import annotations

import time

import numpy as np

from .costs import CostModel, hop_matrices, slot_coords  # noqa: F401 (geometry of the layout API)
from .profile import ChipProfile


def sparse_symmetric(traffic: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (indptr, neighbour, weight) of traffic + traffic.T without the diagonal, built in row chunks so that
    no second dense n x n matrix is allocated."""
    n = traffic.shape[0]
    ptr = [np.zeros(1, np.int64)]
    nbrs, wts = [], []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        block = traffic[lo:hi] + traffic[:, lo:hi].T
        block[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
        r, c = np.nonzero(block)
        nbrs.append(c.astype(np.int64))
        wts.append(block[r, c])
        ptr.append(np.bincount(r, minlength=hi - lo).astype(np.int64))
    indptr = np.cumsum(np.concatenate(ptr))
    return indptr, np.concatenate(nbrs), np.concatenate(wts)


def _abs_transform(h: np.ndarray) -> np.ndarray:
    """f(x) = sum_k h[k] |x - k| for every x in range(len(h)), by prefix sums."""
    x = np.arange(len(h), dtype=np.float64)
    cw = np.cumsum(h)
    cm = np.cumsum(h * x)
    return x * cw - cm + (cm[-1] - cm) - x * (cw[-1] - cw)


class _Mesh:
    """Slot coordinates and per-axis costs of a layout problem."""

    def __init__(self, profile: ChipProfile, n_slots: int, metric: str = "hops"):
        self.chip, self.x, self.y = slot_coords(profile, np.arange(n_slots))
        self.tile = self.chip * 10 ** 6 + self.x * 10 ** 3 + self.y
        self.table = None
        self.cpt = profile.chip.cores_per_tile
        self.nx, self.ny, self.nc = int(self.x.max()) + 1, int(self.y.max()) + 1, int(self.chip.max()) + 1
        self.w = CostModel(profile).axis_weights(metric)
        # tile x tile distance table (tiles, not slots: cores of a tile are interchangeable); small meshes only
        _, first, self.tid = np.unique(self.tile, return_index=True, return_inverse=True)
        self.table = None
        if len(first) <= 3000:
            self.table = self.dist(first[:, None], first[None, :]).astype(np.float64)

    def dist(self, s, t):
        if self.table is not None:
            return self.table[self.tid[s], self.tid[t]]
        return (self.w[0] * np.abs(self.x[s] - self.x[t]) + self.w[1] * np.abs(self.y[s] - self.y[t]) +
                self.w[2] * np.abs(self.chip[s] - self.chip[t]))

    def cost_all(self, nbr_slots: np.ndarray, w: np.ndarray) -> np.ndarray:
        """[n_slots]: cost of a core at every slot given its partners' slots and weights."""
        fx = _abs_transform(np.bincount(self.x[nbr_slots], w, minlength=self.nx))
        fy = _abs_transform(np.bincount(self.y[nbr_slots], w, minlength=self.ny))
        fc = _abs_transform(np.bincount(self.chip[nbr_slots], w, minlength=self.nc))
        return self.w[0] * fx[self.x] + self.w[1] * fy[self.y] + self.w[2] * fc[self.chip]


def layout_cost(indptr, nbr, wt, mesh: _Mesh, slot_of: np.ndarray) -> float:
    """Sum over ordered pairs of the symmetric weight times distance, halved (= traffic-weighted pJ above the
    within-tile floor)."""
    src = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return float((wt * mesh.dist(slot_of[src], slot_of[nbr])).sum() / 2)


def _greedy_start(indptr, nbr, wt, mesh: _Mesh, n: int, n_slots: int) -> np.ndarray:
    strength = np.bincount(np.repeat(np.arange(n), np.diff(indptr)), weights=wt, minlength=n)   # per-core total
    slot_of = -np.ones(n, np.int64)
    free = np.ones(n_slots, bool)
    placed = np.zeros(n, bool)
    # frontier order: start at the strongest core, then always the unplaced core most tied to placed ones
    tie = np.zeros(n)
    centre = int(np.argmin(mesh.cost_all(np.arange(n_slots), np.ones(n_slots))))
    for _ in range(n):
        cand = np.where(placed, -np.inf, tie + 1e-12 * strength)
        a = int(np.argmax(cand))
        lo, hi = indptr[a], indptr[a + 1]
        nb, w = nbr[lo:hi], wt[lo:hi]
        m = placed[nb]
        if m.any():
            cost = mesh.cost_all(slot_of[nb[m]], w[m])
            cost[~free] = np.inf
            s = int(np.argmin(cost))
        else:
            s = centre if free[centre] else int(np.argmax(free))
        slot_of[a] = s
        free[s] = False
        placed[a] = True
        tie[nb] += w                                       # neighbour lists hold no duplicates
    return slot_of


def _gather(indptr, rows: np.ndarray):
    """Concatenated CSR positions of `rows` and, for each, the index of its row in `rows`."""
    lens = indptr[rows + 1] - indptr[rows]
    total = int(lens.sum())
    owner = np.repeat(np.arange(len(rows)), lens)
    pos = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(indptr[rows], lens)
    return pos, owner


def _local_search(indptr, nbr, wt, mesh: _Mesh, slot_of: np.ndarray, n_slots: int, work: int,
                  max_sweeps: int, deadline: float) -> tuple[np.ndarray, int, bool, float]:
    """Sweeps of best-candidate moves -> (slots, sweeps, converged, cost saved by the last full sweep);
    converged: a full sweep over every core found no improving move (a verified local optimum), not a sweep
    cut short by the `deadline`. Candidates of core a: the K slots (other tiles) where a alone would
    cost least given its partners; K = work / average degree (all slots on small problems, at least 8). A
    move to an empty slot costs C_a(s) - C_a(p); a swap with occupant b adds C_b(p) - C_b(s) + 2 W_ab d(p, s),
    all from the two cores' partner lists."""
    n = len(slot_of)
    occ = -np.ones(n_slots, np.int64)
    occ[slot_of] = np.arange(n)
    deg = max(1.0, len(nbr) / max(n, 1))
    k = int(min(n_slots - 1, max(8, work // deg)))
    sweeps = 0
    converged = False
    last_gain = 0.0
    while sweeps < max_sweeps:
        sweeps += 1
        moved, gain, complete = 0, 0.0, True
        for a in range(n):
            if a % 256 == 255 and time.perf_counter() > deadline:
                complete = False
                break
            lo, hi = indptr[a], indptr[a + 1]
            if lo == hi:
                continue
            nb, w = nbr[lo:hi], wt[lo:hi]
            p = slot_of[a]
            ca = mesh.cost_all(slot_of[nb], w)
            cp = float(ca[p])
            t0 = p - p % mesh.cpt
            ca[t0:t0 + mesh.cpt] = np.inf                    # same tile: no change
            cand = np.argpartition(ca, k - 1)[:k] if k < n_slots - 1 else np.arange(n_slots)
            cand = cand[np.isfinite(ca[cand])]
            delta = ca[cand] - cp
            b = occ[cand]
            oc = np.nonzero(b >= 0)[0]
            if len(oc):
                bs = b[oc]
                pos, owner = _gather(indptr, bs)
                sb = slot_of[nbr[pos]]
                contrib = wt[pos] * (mesh.dist(p, sb) - mesh.dist(cand[oc][owner], sb))
                delta[oc] += np.bincount(owner, contrib, minlength=len(oc))
                j = np.minimum(np.searchsorted(nb, bs), len(nb) - 1)
                wab = np.where(nb[j] == bs, w[j], 0.0)
                delta[oc] += 2 * wab * mesh.dist(p, cand[oc])
            if not len(delta):
                continue
            i = int(np.argmin(delta))
            if delta[i] < -1e-9 * max(cp, 1.0):
                s, bb = int(cand[i]), int(b[i])
                occ[s], occ[p] = a, bb
                slot_of[a] = s
                if bb >= 0:
                    slot_of[bb] = p
                moved += 1
                gain -= float(delta[i])
        if not complete:
            break
        last_gain = gain
        if moved == 0:
            converged = True
            break
        if time.perf_counter() > deadline:
            break
    return slot_of, sweeps, converged, last_gain


def layout(traffic, profile: ChipProfile, n: int, chips: int, metric: str = "hops", work: int = 4000,
           max_sweeps: int = 200, budget_s: float = 40.0, big: int = 2000, seed: int = 0,
           info: dict | None = None, start: np.ndarray | None = None) -> np.ndarray:
    """Slot of each of the n logical cores on `chips` chips (see the module docstring). `traffic`: dense
    [n, n] spikes per token, or a CSR triple from `sparse_symmetric`. `metric`: ``hops`` (spike-hops, energy
    as a tie-break) or ``energy`` (pJ). `start`: a slot map that replaces the identity start (e.g. a split
    layer's parts next to their home cores, `split.interleaved_slots`). After the starts, small problems get
    iterated local search: rounds of random perturbation (a few cores swapped) + local search, kept when
    cheaper; the number of rounds depends only on the problem size, so the result is deterministic — unless
    the search runs past `budget_s` seconds (only on thousands of cores), where it stops within the current
    sweep. `info` (optional dict) receives the search statistics, among them ``converged`` (the result passed
    a full sweep without an improving move: a verified local optimum), ``last_sweep_gain`` (cost its last
    full sweep saved) and ``cost`` (`layout_summary` says it in words)."""
    n_slots = chips * profile.chip.cores
    if n_slots < n:
        raise ValueError(f"{n} cores do not fit on {chips} chip(s)")
    indptr, nbr, wt = traffic if isinstance(traffic, tuple) else sparse_symmetric(traffic)
    mesh = _Mesh(profile, n_slots, metric)
    t_all = time.perf_counter()
    deadline = t_all + budget_s
    best, best_cost, stats = None, np.inf, {}
    first = "identity" if start is None else "given"
    # both starts on small problems; on large ones (> `big` cores) only the greedy one, which starts far
    # closer to a good layout than the identity (PTB-size: 63,400 vs 87,300 before the search) — or the
    # given start only
    starts = (first, "greedy") if n <= big else ((first,) if start is not None else ("greedy",))
    for name in starts:
        t0 = time.perf_counter()
        s0 = np.arange(n, dtype=np.int64) if name == "identity" else np.asarray(start, np.int64).copy() \
            if name == "given" else _greedy_start(indptr, nbr, wt, mesh, n, n_slots)
        before = layout_cost(indptr, nbr, wt, mesh, s0)
        slot_of, sweeps, conv, gain = _local_search(indptr, nbr, wt, mesh, s0, n_slots, work, max_sweeps, deadline)
        cost = layout_cost(indptr, nbr, wt, mesh, slot_of)
        stats[name] = {"before": before, "after": cost, "sweeps": sweeps, "converged": conv,
                       "seconds": time.perf_counter() - t0}
        if cost < best_cost - 1e-9 or best is None:
            best, best_cost, stats["chosen"] = slot_of, cost, name
            stats["converged"], stats["last_sweep_gain"], stats["sweeps"] = conv, gain, sweeps
    rounds = int(min(30, 4e6 // max(len(nbr) * max(n, 1) // 50, 1))) if 2 < n <= big else 0
    rng = np.random.default_rng(seed)
    kept = done = 0
    for _ in range(rounds):
        if time.perf_counter() > deadline:
            break
        done += 1
        trial = best.copy()
        occ = -np.ones(n_slots, np.int64)
        occ[trial] = np.arange(n)
        for a in rng.choice(n, size=max(2, n // 25), replace=False):
            s = int(rng.integers(n_slots))
            b = occ[s]
            occ[trial[a]], occ[s] = b, a
            if b >= 0:
                trial[b] = trial[a]
            trial[a] = s
        trial, sweeps, conv, gain = _local_search(indptr, nbr, wt, mesh, trial, n_slots, work, max_sweeps, deadline)
        cost = layout_cost(indptr, nbr, wt, mesh, trial)
        if cost < best_cost - 1e-9:
            best, best_cost = trial, cost
            stats["converged"], stats["last_sweep_gain"], stats["sweeps"] = conv, gain, sweeps
            kept += 1
    stats.update(perturbation_rounds=rounds, perturbation_rounds_run=done, perturbations_kept=kept,
                 cost=best_cost, cores=n, budget_s=budget_s, max_sweeps=max_sweeps,
                 seconds=time.perf_counter() - t_all)
    if info is not None:
        info.update(stats)
    return best


def layout_summary(stats: dict) -> str:
    """One line on the layout search's end: a verified local optimum, or where it stopped and by how much its
    last full sweep improved the cost (``stats``: the `layout` statistics)."""
    if not stats or "cost" not in stats:
        return "layout: in-order slots (no layout search)"
    start = stats.get("chosen", "?")
    runs = f"{stats.get('perturbation_rounds_run', 0)} of {stats.get('perturbation_rounds', 0)} perturbation rounds"
    cost = stats["cost"]
    if stats.get("converged"):
        return (f"layout: verified local optimum ({stats['cores']:,} cores, {start} start, {runs}; a full sweep "
                f"found no improving move; cost {cost:,.1f}, {stats['seconds']:.1f} s)")
    gain = stats.get("last_sweep_gain", 0.0)
    pct = 100 * gain / (cost + gain) if cost + gain > 0 else 0.0
    why = f"the {stats['budget_s']:g} s budget" if stats["seconds"] >= stats["budget_s"] else \
        f"the cap of {stats['max_sweeps']} sweeps"
    return (f"layout: stopped early at {why} ({stats['cores']:,} cores, {start} start, "
            f"{stats.get('sweeps', 0)} sweeps, {runs}; not a verified local optimum: the last full sweep improved "
            f"the cost by {gain:,.1f} ({pct:.2g} %); cost {cost:,.1f})")
