"""Issue 25, scale: the fan-in split near the synaptic-memory bound, its parts next to their home cores, the
memory bound itself, and the layout search's "verified local optimum / stopped early" statement.

References written here: the bound from the synapse counts and the profile's numbers; every core's memory,
input axons and compartments recounted from the split map and the connectivity (the profile's formula:
synapses x (weight + index) bits, one pointer per input axon, at home one axon and one adder synapse per gate
for every remote part); the layout cost and its local optimality by brute force (`test_placement._dense_cost`)."""
from __future__ import annotations

import numpy as np
import pytest

from egru_compile.targets.chip.capacity import memory_bound
from egru_compile.targets.chip.layout import layout, layout_summary
from egru_compile.targets.chip.network import LayerNet
from egru_compile.targets.chip.placement import place, sequential_placement, split_placement
from egru_compile.targets.chip.split import interleaved_slots, split_core_map
from test_placement import _dense_cost, _profile


def _loihi2(tmp_path, **core):
    return _profile(tmp_path, base="loihi2-like", file="l2.toml", **core)


def _net(index, n_in, h, rng, keep=0.15):
    """A layer with three gates pruned to `keep` independently (synapse counts 0..3 per source)."""
    ci = sum((rng.random((h, n_in)) < keep).astype(np.int8) for _ in range(3)).astype(np.int8)
    cr = sum((rng.random((h, h)) < keep).astype(np.int8) for _ in range(3)).astype(np.int8)
    return LayerNet(index, n_in, h, index > 0, ci.sum(1, dtype=np.int64), cr.sum(1, dtype=np.int64), ci, cr)


def _scaled_nets(seed=0):
    """The 107M model's shape in miniature (emb / hidden 64 / 256 / 256 / 64 for 2048 / 8192 / 8192 / 2048):
    two units' fan-in union exceeds the 256 input axons of the profile below, so unsplit its wide layers
    hold one unit per core."""
    rng = np.random.default_rng(seed)
    return [_net(0, 64, 256, rng), _net(1, 256, 256, rng), _net(2, 256, 64, rng)]


def _recount_cores(nets, pl, profile):
    """Per core (memory bytes, input axons, compartments) from the split map and the connectivity only."""
    m, cpu = profile.memory, profile.core.compartments_per_unit
    n = pl.n_cores
    bits, axons, comp = np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64)
    for l, net in enumerate(nets):
        conn = np.concatenate([net.conn_in, net.conn_rec], axis=1)
        sp = pl.splits[l] if pl.splits else None
        home = np.asarray(pl.core_of[l])
        ranges = [(0, conn.shape[1])] if sp is None else list(zip(sp.bounds[:-1], sp.bounds[1:]))
        for p, (lo, hi) in enumerate(ranges):
            where = home if sp is None else sp.part_core[:, p]
            for c in np.unique(where[where >= 0]):
                mine = where == c
                block = conn[mine, lo:hi]
                bits[c] += int(block.sum()) * (m.weight_bits + m.index_bits) + mine.sum() * m.state_bits_per_unit
                axons[c] += int((block > 0).any(0).sum())
                comp[c] += cpu * int(mine.sum())
        if sp is not None:
            for j in range(net.hidden):
                remote = int((sp.part_core[j, 1:] >= 0).sum())
                axons[home[j]] += remote
                bits[home[j]] += remote * cpu * (m.weight_bits + m.index_bits)
    return (bits + axons * m.axon_pointer_bits) / 8, axons, comp


def _recount_out_axons(nets, pl):
    """Per core: for each unit it is home to, the distinct cores holding a synapse from that unit (its own
    layer's recurrent synapses, the next layer's input synapses); for each remote part, one (its home)."""
    def where(l, s):                              # core of each unit's synapses from source s of layer l
        sp = pl.splits[l] if pl.splits else None
        if sp is None:
            return np.asarray(pl.core_of[l])
        return sp.part_core[:, int(np.searchsorted(sp.bounds, s, side="right")) - 1]
    out = np.zeros(pl.n_cores, np.int64)
    for l, net in enumerate(nets):
        for i in range(net.hidden):
            dests = set(where(l, net.n_in + i)[net.conn_rec[:, i] > 0].tolist())
            if l + 1 < len(nets):
                dests |= set(where(l + 1, i)[nets[l + 1].conn_in[:, i] > 0].tolist())
            out[pl.core_of[l][i]] += len(dests)
        sp = pl.splits[l] if pl.splits else None
        if sp is not None:
            pc = sp.part_core[:, 1:]
            np.add.at(out, pc[pc >= 0], 1)
    return out


def test_memory_bound_is_the_synapse_memory_over_core_memory(tmp_path):
    profile = _loihi2(tmp_path, synapse_memory_bytes=16384, input_axons=256)
    nets = _scaled_nets()
    syn = sum(int((np.concatenate([n.conn_in, n.conn_rec], 1)).sum()) for n in nets)
    expect = -(-syn * (8 + 13) // (8 * 16384))
    b = memory_bound(nets, profile)
    assert b["cores"] == expect and b["bytes"] == -(-syn * 21 // 8)


def test_split_of_a_crowded_model_lands_within_twice_the_bound_and_every_limit(tmp_path):
    """Unsplit, layers 0 and 1 hold one unit per core (~360 cores); split by source range the model fits in
    at most 2x its memory bound, every core within its memory, input and output axons and compartments
    (recounted; 400 output axons bind the home cores)."""
    profile = _loihi2(tmp_path, synapse_memory_bytes=16384, input_axons=256, output_axons=400)
    nets = _scaled_nets()
    bound = memory_bound(nets, profile)["cores"]
    unsplit = sum(len(np.unique(c)) for c in sequential_placement(nets, profile, 100).core_of)
    pl = split_placement(nets, profile, False)
    assert pl.splits is not None and unsplit > 10 * bound                 # the unsplit baseline is crowded
    assert pl.n_cores <= 2 * bound, (pl.n_cores, bound)
    mem, axons, comp = _recount_cores(nets, pl, profile)
    assert (mem <= profile.core.synapse_memory_bytes).all()
    assert (axons <= profile.core.input_axons).all()
    assert (comp <= profile.core.compartments).all()
    out = _recount_out_axons(nets, pl)
    assert (out <= profile.core.output_axons).all()
    assert np.array_equal(out, pl.costs.output_axons)
    assert np.array_equal(axons, pl.costs.input_axons)                     # the estimate counts the same axons
    assert np.allclose(mem, pl.costs.memory_bytes, atol=1)
    assert layout_summary(pl.layout).startswith("layout: verified local optimum")
    assert len(set(pl.slot_of_core.tolist())) == pl.n_cores               # injective



def test_split_competes_where_the_baseline_is_axon_bound_but_not_crowded(tmp_path):
    """The 27M model's case in miniature (emb / hidden 64 / 256 / 256 / 64, layer 1's 512 sources = the input
    axons): no unit's fan-in exceeds the axons and the baseline holds >= 2 units per core in every layer, yet
    split by source range the model needs fewer cores; `place` (default objective) keeps the split, every core
    within its limits (recounted from the map and the connectivity)."""
    profile = _loihi2(tmp_path, synapse_memory_bytes=12288, input_axons=512)
    rng = np.random.default_rng(0)
    nets = [_net(0, 64, 256, rng), _net(1, 256, 256, rng), _net(2, 256, 64, rng)]
    fan = [int(((np.concatenate([n.conn_in, n.conn_rec], 1)) > 0).sum(1).max()) for n in nets]
    assert max(fan) <= profile.core.input_axons                             # nothing needs a split
    info: dict = {}
    seq, ours = place(nets, profile, 100, False, info=info)
    units_per_core = [n.hidden / len(np.unique(c)) for n, c in zip(nets, seq.core_of)]
    assert min(units_per_core) >= 2                                          # not crowded
    _, seq_axons, _ = _recount_cores(nets, seq, profile)
    assert seq_axons.max() == profile.core.input_axons                       # axon-bound baseline
    assert info["chosen"] == "fan-in split" and ours.splits is not None
    assert ours.n_cores < seq.n_cores, (ours.n_cores, seq.n_cores)
    mem, axons, comp = _recount_cores(nets, ours, profile)
    assert (mem <= profile.core.synapse_memory_bytes).all()
    assert (axons <= profile.core.input_axons).all()
    assert (comp <= profile.core.compartments).all()
    assert (_recount_out_axons(nets, ours) <= profile.core.output_axons).all()

def _tile_xy(slots, profile):
    g = profile.chip
    chip, local = np.divmod(np.asarray(slots), g.cores)
    tile = local // g.cores_per_tile
    return chip * g.tiles_x + tile % g.tiles_x, tile // g.tiles_x


def test_interleaved_start_puts_parts_next_to_their_home(tmp_path):
    """Mean mesh distance (tile hops) from a unit's remote part cores to its home core: the interleaved
    start is far closer than the in-order fill's slots, and the laid-out split keeps them close."""
    profile = _loihi2(tmp_path, synapse_memory_bytes=16384, input_axons=256)
    nets = _scaled_nets()
    cm = split_core_map(nets, profile)

    def mean_dist(slots):
        x, y = _tile_xy(slots, profile)
        d = []
        for co, sp in zip(cm.core_of, cm.splits):
            if sp is None:
                continue
            pc, home = sp.part_core[:, 1:], np.asarray(co)[:, None].repeat(sp.parts - 1, 1)
            ok = pc >= 0
            d.append(np.abs(x[pc[ok]] - x[home[ok]]) + np.abs(y[pc[ok]] - y[home[ok]]))
        return float(np.concatenate(d).mean())
    inorder, inter = mean_dist(np.arange(cm.n_cores)), mean_dist(interleaved_slots(cm))
    assert inter < 0.5 * inorder, (inter, inorder)
    laid = split_placement(nets, profile, False)
    assert mean_dist(laid.slot_of_core) < 0.75 * inorder


def test_layout_statement_verified_optimum_or_stopped_early(tmp_path):
    """`converged`: no move or swap lowers the cost (brute force); with the sweep cap hit it says it stopped
    early, and the last full sweep's gain is exactly the cost it removed (recounted)."""
    profile = _profile(tmp_path, cores=16, tiles_x=4, tiles_y=2, cores_per_tile=2)
    rng = np.random.default_rng(7)
    n = 14
    traffic = rng.random((n, n)) * (rng.random((n, n)) < 0.5)
    W = traffic + traffic.T
    np.fill_diagonal(W, 0)
    info: dict = {}
    slots = layout(traffic, profile, n, 1, info=info)
    assert info["converged"] and layout_summary(info).startswith("layout: verified local optimum")
    best = _dense_cost(W, profile, slots)
    assert abs(info["cost"] - best) < 1e-6 * max(best, 1)
    for a in range(n):
        for s in range(16):
            trial = slots.copy()
            b = np.nonzero(slots == s)[0]
            trial[a] = s
            if len(b):
                trial[b[0]] = slots[a]
            assert _dense_cost(W, profile, trial) >= best - 1e-7
    start = np.arange(n)[::-1].copy()
    one: dict = {}
    out = layout(traffic, profile, n, 1, max_sweeps=1, big=0, start=start, info=one)   # one sweep, given start
    assert not one["converged"] and one["sweeps"] == 1
    gain = _dense_cost(W, profile, start) - _dense_cost(W, profile, out)
    assert gain > 0 and one["last_sweep_gain"] == pytest.approx(gain, rel=1e-9)
    line = layout_summary(one)
    assert line.startswith("layout: stopped early") and "not a verified local optimum" in line


def test_split_core_map_splits_only_the_named_layers_and_keeps_the_baseline_cores(tmp_path):
    """`split_core_map(only=..., keep=...)` (what `split_choice` tries): only the named layer is split, every
    other layer keeps the baseline's unit grouping exactly (its phase work unchanged), and every core stays
    within its limits (recounted from the map and the connectivity)."""
    profile = _loihi2(tmp_path, synapse_memory_bytes=12288, input_axons=512)
    rng = np.random.default_rng(0)
    nets = [_net(0, 64, 256, rng), _net(1, 256, 256, rng), _net(2, 256, 64, rng)]
    seq = sequential_placement(nets, profile, 100)
    cm = split_core_map(nets, profile, only={1}, keep=seq.core_of)
    assert [s is not None for s in cm.splits] == [False, True, False]
    for l in (0, 2):
        a, b = np.asarray(cm.core_of[l]), np.asarray(seq.core_of[l])
        assert len(np.unique(a)) == len(np.unique(b))
        assert all(len(np.unique(a[b == c])) == 1 for c in np.unique(b))     # the same groups of units
    pl = type("P", (), {"n_cores": cm.n_cores, "splits": cm.splits, "core_of": cm.core_of})
    mem, axons, comp = _recount_cores(nets, pl, profile)
    assert (mem <= profile.core.synapse_memory_bytes).all()
    assert (axons <= profile.core.input_axons).all()
    assert (comp <= profile.core.compartments).all()
    assert (_recount_out_axons(nets, pl) <= profile.core.output_axons).all()
