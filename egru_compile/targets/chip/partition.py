"""Unit -> core partition of one EGRU layer over a given number of cores, under every per-core capacity limit.

Establishes: `partition_layer` returns, for one layer and k cores, an assignment in which every core holds at
most `units_per_core` units, and its synaptic memory (synapses, one pointer per input axon) and input axons
(distinct presynaptic units of the layer input and of the recurrent input) are within the profile's limits —
or raises `PlacementError` naming the layer when no assignment over k cores is found by the repair. Output
axons depend on the other layers' partitions and are checked by the caller (placement.py).

Partitioners (`method`):

* ``"hypergraph"`` — Mt-KaHyPar (optional PyPI package `mtkahypar`, extra ``chip``) with the connectivity
  (km1) objective: one hyperedge per spiking unit (of this layer: recurrent targets; of the previous layer:
  forward targets) over its target units in this layer, weighted by how often it fired, so the objective is
  exactly the spike packets per token this layer's cores receive. Vertex weight = synapses (memory).
* ``"lpt"`` — the fallback without `mtkahypar`: longest-processing-time balancing of per-unit MACs.
* ``"metis"`` / ``"kahip"`` (benchmark comparisons, packages `pymetis` / `kahip`): graph partitioning of the
  symmetrised recurrent connectivity, one balance constraint (synapses).

Every partition then goes through `repair` (moves units off over-full cores onto the least-loaded core that
can take them; where every core is full, exchanges a unit for a smaller one of another core) so capacity
holds whichever partitioner produced it. Our methods then run the connectivity refinement of `refine.py`.
"""
from __future__ import annotations

import numpy as np

from .capacity import CoreOccupancy, check_fan_in, fan_in, unit_memory_bytes  # noqa: F401 (re-exported)
from .model import PlacementError
from .network import LayerNet
from .profile import ChipProfile
from .refine import packets_in, refine_layer, refine_worth, sender_weights


class PartitionerUnavailable(RuntimeError):
    """The optional package behind a partitioner is not installed."""


def unit_cost(net: LayerNet, calibrated: bool) -> np.ndarray:
    """MACs per token of each unit (measured), or its synapse count (static)."""
    T = net.tokens
    if calibrated and T:
        return net.mac_events / T
    return net.synapses.astype(np.float64)


# ----------------------------------------------------------------------------------------------- capacity
def repair(net: LayerNet, profile: ChipProfile, k: int, assign: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Move units off over-full cores (largest memory first) onto the least-loaded core that can take them."""
    st = CoreOccupancy(net, profile, k, assign, cost)
    for _ in range(4 * net.hidden):
        bad = np.nonzero(st.over())[0]
        if not len(bad):
            return st.assign
        c = int(bad[np.argmax(st.memory()[bad])])
        units = np.nonzero(st.assign == c)[0]
        # the unit whose removal frees most input axons (axons it alone holds), then most memory
        sole = ((st.cnt[c][None] == 1) & st.pres[units]).sum(1)
        order = np.lexsort((-st.umem[units], -sole))
        moved = False
        for j in units[order][:32]:
            dest = st.first_fit(int(j), c)
            if dest >= 0:
                st.move(int(j), dest)
                moved = True
                break
        if not moved and st.units[c] <= st.cap_units:     # every core full: exchange a unit for a smaller one
            j, i = st.swap_fit(c)
            if j >= 0:
                d = int(st.assign[i])
                st.move(j, d)
                st.move(i, c)
                moved = True
        if not moved:
            break
    if st.over().any():
        c = int(np.nonzero(st.over())[0][0])
        raise PlacementError(f"layer {net.index}: no assignment of its {net.hidden} units to {k} cores within the "
                             f"per-core limits was found (core {c}: {int(st.units[c])} units, "
                             f"{int(st.axons[c])} input axons, {st.memory()[c]:,.0f} bytes)")
    return st.assign


# ----------------------------------------------------------------------------------------------- partitioners
def lpt(net: LayerNet, profile: ChipProfile, k: int, cost: np.ndarray) -> np.ndarray:
    """Largest unit first onto the least-loaded core with room (units and memory, axon pointers reserved)."""
    lim = profile.core
    umem = unit_memory_bytes(net, profile)
    mem_cap = lim.synapse_memory_bytes - profile.memory.axon_pointer_bits / 8.0 * min(
        lim.input_axons, net.n_in + net.hidden)
    order = np.argsort(-cost, kind="stable")
    load, mem = np.zeros(k), np.zeros(k)
    cnt = np.zeros(k, np.int64)
    co = np.zeros(net.hidden, np.int64)
    for j in order:
        ok = (cnt < profile.units_per_core) & (mem + umem[j] <= mem_cap)
        cand = np.nonzero(ok)[0] if ok.any() else np.arange(k)
        c = cand[np.argmin(load[cand])]
        co[j] = c
        load[c] += cost[j] + 1e-9 * umem[j]
        mem[c] += umem[j]
        cnt[c] += 1
    return co


def rate_sorted(net: LayerNet, profile: ChipProfile, k: int, calibrated: bool) -> np.ndarray:
    """Units by descending firing rate, cut into k contiguous runs of equal memory: cores of very different
    outgoing traffic, so that the layout can put the busiest senders in the middle of the mesh (each spike of
    a randomly pruned layer reaches nearly every core of its own and the next layer whatever the partition;
    then only where the senders sit changes the spike-hops)."""
    T = net.tokens
    rate = net.fires / T if calibrated and T and net.fires is not None else np.zeros(net.hidden)
    order = np.lexsort((np.arange(net.hidden), -rate))
    umem = unit_memory_bytes(net, profile)[order]
    if not umem.sum() > 0:                 # no synapses (a fully pruned layer): cut by unit count instead
        umem = np.ones(net.hidden)
    cum = np.cumsum(umem) - umem / 2
    co = np.empty(net.hidden, np.int64)
    co[order] = np.minimum((cum / umem.sum() * k).astype(np.int64), k - 1)
    return co


def layer_hyperedges(nets: list[LayerNet], l: int, calibrated: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Hyperedges over layer l's units: per spiking unit (recurrent from layer l, forward from layer l - 1) the
    units of layer l it has synapses on; weight = times it fired (1 per unit without calibration)."""
    net = nets[l]
    edges, weights = [], []
    sources = [(net.conn_rec, net)] + ([(net.conn_in, nets[l - 1])] if l > 0 else [])
    for conn, src in sources:
        T = src.tokens
        w = src.fires if calibrated and T and src.fires is not None else np.ones(src.hidden, np.int64)
        colmask = conn > 0                                  # [h_l, h_src]
        for i in np.nonzero(w > 0)[0]:
            pins = np.flatnonzero(colmask[:, i])
            if len(pins) > 1:
                edges.append(pins)
                weights.append(int(w[i]))
    return edges, np.asarray(weights, np.int64)


def hypergraph(nets: list[LayerNet], l: int, k: int, calibrated: bool, eps: float = 0.03, seed: int = 0,
               threads: int = 1) -> np.ndarray:
    """Mt-KaHyPar, connectivity objective (see the module docstring)."""
    try:
        import mtkahypar
    except ImportError:
        raise PartitionerUnavailable("mtkahypar") from None
    net = nets[l]
    edges, w = layer_hyperedges(nets, l, calibrated)
    if not edges or k < 2:
        return np.arange(net.hidden) % max(k, 1)
    mk = _mtk_init(mtkahypar, threads)
    mtkahypar.set_seed(seed)
    ctx = mk.context_from_preset(mtkahypar.PresetType.DEFAULT)
    ctx.set_partitioning_parameters(k, eps, mtkahypar.Objective.KM1)
    ctx.logging = False
    vw = np.maximum(net.synapses, 1).astype(np.int64)
    hg = mk.create_hypergraph(ctx, net.hidden, len(edges), [e.tolist() for e in edges], vw.tolist(), w.tolist())
    p = hg.partition(ctx)
    return np.array([p.block_id(v) for v in range(net.hidden)], np.int64)


_MTK = {}


def _mtk_init(mtkahypar, threads):
    if threads not in _MTK:                # initialize() may be called once per process
        _MTK[threads] = mtkahypar.initialize(threads)
    return _MTK[threads]


def _unit_graph(net: LayerNet, calibrated: bool):
    """CSR of the symmetrised recurrent unit graph, edge weight = activity-weighted synapse pairs."""
    T = net.tokens
    rate = (net.fires + 1) if calibrated and T else np.ones(net.hidden, np.int64)
    A = (net.conn_rec > 0).astype(np.int64) * rate[None, :]           # j <- i weighted by i's firing
    A = A + A.T
    np.fill_diagonal(A, 0)
    r, c = np.nonzero(A)
    xadj = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=net.hidden))]).astype(np.int64)
    return xadj, c.astype(np.int64), A[r, c].astype(np.int64)


def graph_partition(net: LayerNet, k: int, method: str, calibrated: bool, eps: float = 0.03,
                    seed: int = 0) -> np.ndarray:
    """METIS (`pymetis`) or KaHIP (`kahip`) on the layer's unit graph, balance on synapses."""
    if k < 2:
        return np.zeros(net.hidden, np.int64)
    xadj, adj, ew = _unit_graph(net, calibrated)
    vw = np.maximum(net.synapses, 1).astype(np.int64)
    if method == "metis":
        try:
            import pymetis
        except ImportError:
            raise PartitionerUnavailable("pymetis") from None
        opt = pymetis.Options(seed=seed)
        opt.ufactor = int(eps * 1000)
        _, parts = pymetis.part_graph(k, pymetis.CSRAdjacency(xadj.tolist(), adj.tolist()), vweights=vw.tolist(),
                                      eweights=ew.tolist(), options=opt)
        return np.asarray(parts, np.int64)
    if method == "kahip":
        try:
            import kahip
        except ImportError:
            raise PartitionerUnavailable("kahip") from None
        _, parts = kahip.kaffpa(vw.tolist(), xadj.tolist(), ew.tolist(), adj.tolist(), k, eps, True, seed,
                                kahip.FAST)
        return np.asarray(parts, np.int64)
    raise ValueError(f"unknown graph partitioner {method!r}")


AUTO_MAX_PINS = 200_000


def _initial(nets, l, profile, k, calibrated, method, seed, cost) -> tuple[np.ndarray, str]:
    net = nets[l]
    used = method
    if method == "auto":
        used = "lpt"
        if net.hidden >= 4 * k and _small(nets, l):
            try:
                return hypergraph(nets, l, k, calibrated, seed=seed), "hypergraph"
            except PartitionerUnavailable:
                pass
    elif method == "hypergraph":
        return hypergraph(nets, l, k, calibrated, seed=seed), used
    elif method == "rate":
        if net.hidden >= 4 * k:
            return rate_sorted(net, profile, k, calibrated), used
        used = "lpt"                                # one to three units per core: nothing to group
    elif method in ("metis", "kahip"):
        return graph_partition(net, k, method, calibrated, seed=seed), used
    elif method != "lpt":
        raise ValueError(f"unknown partitioner {method!r}")
    return lpt(net, profile, k, cost), used


def _small(nets, l) -> bool:
    net = nets[l]
    return np.count_nonzero(net.conn_rec) + (np.count_nonzero(net.conn_in) if l > 0 else 0) <= AUTO_MAX_PINS


def _finish(net, profile, k, assign, cost, refine: tuple | None = None) -> np.ndarray:
    """Capacity repair, no empty core, then (``refine`` = (nets, l, calibrated)) the connectivity refinement."""
    assign = repair(net, profile, k, assign, cost)
    counts = np.bincount(assign, minlength=k)
    for c in np.nonzero(counts == 0)[0]:            # no empty core: it takes one unit of the fullest core
        src = int(np.argmax(counts))
        j = int(np.nonzero(assign == src)[0][0])
        assign[j], counts[src], counts[c] = c, counts[src] - 1, 1
    if refine is not None:
        st = CoreOccupancy(net, profile, k, assign, cost)
        refine_layer(st, *refine)
        assign = st.assign
    return assign


def partition_layer(nets: list[LayerNet], l: int, profile: ChipProfile, k: int, calibrated: bool,
                    method: str = "auto", seed: int = 0, refine: bool = True) -> tuple[np.ndarray, str]:
    """(unit -> core in 0..k-1 for layer l, method used). ``auto``: the hypergraph partitioner when `mtkahypar`
    imports, cores hold several units each (h >= 4 k) and the hypergraph is small (at most `AUTO_MAX_PINS`
    pins: Mt-KaHyPar took 268 s for the three layers of the PTB-size random model, 1.2M pins, and cut its
    packets by 0.2 % only), else LPT.

    Our methods (``auto``, ``rate``, ``lpt``; any method with the suffix ``+refine``) end with the connectivity
    refinement of `refine.py` where cores hold several units each. ``rate`` on a small hypergraph also refines
    the hypergraph partitioner's assignment (when installed) and keeps whichever receives fewer packets.
    ``metis``, ``kahip`` and ``hypergraph`` alone are the standard partitioners + capacity repair.
    ``refine=False``: no refinement whatever the method (a feasibility probe: the same cores, the same limits);
    the refinement is also skipped above `refine.MAX_WORK` (the label then has no ``+refine``)."""
    net = nets[l]
    cost = unit_cost(net, calibrated)
    refine = refine and (method in ("auto", "rate", "lpt") or method.endswith("+refine")) and \
        refine_worth(net, k, sender_weights(nets, l, calibrated))
    method = method.removesuffix("+refine")
    assign, used = _initial(nets, l, profile, k, calibrated, method, seed, cost)
    if not refine:
        return _finish(net, profile, k, assign, cost), used
    args = (nets, l, calibrated)
    assign = _finish(net, profile, k, assign, cost, args)
    used += "+refine"
    if method == "rate" and _small(nets, l):
        try:
            other = _finish(net, profile, k, hypergraph(nets, l, k, calibrated, seed=seed), cost, args)
        except (PartitionerUnavailable, PlacementError):
            return assign, used
        w = sender_weights(nets, l, calibrated)
        if packets_in(CoreOccupancy(net, profile, k, other, cost), w) < \
                packets_in(CoreOccupancy(net, profile, k, assign, cost), w) - 1e-9:
            return other, "hypergraph+refine"
    return assign, used
