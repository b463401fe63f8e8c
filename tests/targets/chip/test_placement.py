"""Placement (partition + repair + mesh layout): every capacity limit recounted from the unit -> core map,
spike-hops recounted from first principles, the layout a true local optimum, ours better than sequential,
the fallback without the optional hypergraph partitioner, and the fan-in error."""
from __future__ import annotations

import builtins

import numpy as np
import pytest

from egru_compile.ir import SparseMatrix
from egru_compile.targets.chip import load_profile
from egru_compile.targets.chip import partition as part
from egru_compile.targets.chip.layout import layout, sparse_symmetric
from egru_compile.targets.chip.network import attach_activity, build_network
from egru_compile.targets.chip.placement import (Placement, PlacementError, balanced_placement, evaluate, place,
                                                 violations)
from egru_compile.targets.stack import EGRUStack, LayerWeights


def _stack(sizes, emb, density, seed=0, vocab=20):
    rng = np.random.default_rng(seed)
    layers, n_in = [], emb
    for l, h in enumerate(sizes):
        mats = []
        for shape in ((3 * h, n_in), (3 * h, h)):
            m = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) < density)
            mats.append(SparseMatrix.from_dense(m, "csr"))
        layers.append(LayerWeights(l, n_in, h, mats[0], np.zeros(3 * h, np.float32), mats[1],
                                   np.zeros(3 * h, np.float32), np.full(h, 0.5, np.float32), l > 0))
        n_in = h
    return EGRUStack(rng.standard_normal((vocab, emb)).astype(np.float32), layers,
                     rng.standard_normal((vocab, emb)).astype(np.float32), np.zeros(vocab, np.float32))


def _nets(sizes=(120, 160, 60), emb=40, density=0.1, seed=0, T=50):
    nets = build_network(_stack(list(sizes), emb, density, seed))
    rng = np.random.default_rng(seed + 1)
    fires = [rng.binomial(T, rng.uniform(0.05, 0.4, n.hidden)) for n in nets]
    attach_activity(nets, [np.full(emb, T)] + fires[:-1], fires, fires, T)
    return nets


def _profile(tmp_path, base: str = "loihi-like", file: str = "p.toml", **changes):
    """Shipped profile `base` with some [core]/[chip] numbers changed, written to tmp_path / `file`."""
    text = open(load_profile(base).source).read()
    for key, value in changes.items():
        lines = text.splitlines()
        i = next(i for i, ln in enumerate(lines) if ln.split("=")[0].strip() == key)
        lines[i] = f"{key} = {value}"
        text = "\n".join(lines) + "\n"
    path = tmp_path / file
    path.write_text(text)
    return load_profile(str(path))


# ----------------------------------------------------------------------------------------------- recounts
def _targets(nets, l, i):
    """(layer, unit) pairs with a synapse from unit i of layer l (recurrent, then forward)."""
    out = [(l, j) for j in np.nonzero(nets[l].conn_rec[:, i])[0]]
    if l + 1 < len(nets):
        out += [(l + 1, j) for j in np.nonzero(nets[l + 1].conn_in[:, i])[0]]
    return out


def _recount(nets, pl: Placement, profile):
    """Per-core units, input axons, output axons, memory bytes; packets and spike-hops per token — by loops."""
    n = pl.n_cores
    units = [0] * n
    syn = [0] * n
    pres = [set() for _ in range(n)]
    for l, net in enumerate(nets):
        for j in range(net.hidden):
            c = int(pl.core_of[l][j])
            units[c] += 1
            syn[c] += int(net.synapses[j])
            pres[c] |= {("in", l, i) for i in np.nonzero(net.conn_in[j])[0]}
            pres[c] |= {("rec", l, i) for i in np.nonzero(net.conn_rec[j])[0]}
    out_axons = [0] * n
    packets = hops = 0.0
    g = profile.chip

    def xy(slot):
        chip, local = divmod(int(slot), g.cores)
        tile = local // g.cores_per_tile
        return chip * g.tiles_x + tile % g.tiles_x, tile // g.tiles_x

    for l, net in enumerate(nets):
        for i in range(net.hidden):
            src = int(pl.core_of[l][i])
            dests = {int(pl.core_of[tl][j]) for tl, j in _targets(nets, l, i)}
            out_axons[src] += len(dests)
            rate = net.fires[i] / net.tokens
            x0, y0 = xy(pl.slot_of_core[src])
            for d in dests:
                x1, y1 = xy(pl.slot_of_core[d])
                packets += rate
                hops += rate * (abs(x1 - x0) + abs(y1 - y0))      # links crossed (a chip crossing is one)
    m = profile.memory
    memory = [(syn[c] * m.synapse_bits + len(pres[c]) * m.axon_pointer_bits + units[c] * m.state_bits_per_unit + 7)
              // 8 for c in range(n)]
    return units, [len(p) for p in pres], out_axons, memory, packets, hops


def _assert_within_limits(nets, pl, profile):
    units, in_ax, out_ax, memory, _, _ = _recount(nets, pl, profile)
    lim = profile.core
    assert max(units) * lim.compartments_per_unit <= lim.compartments
    assert max(in_ax) <= lim.input_axons
    assert max(out_ax) <= lim.output_axons
    assert max(memory) <= lim.synapse_memory_bytes
    assert sorted(set(np.concatenate(pl.core_of).tolist())) == list(range(pl.n_cores))   # no empty core
    assert len(set(pl.slot_of_core.tolist())) == pl.n_cores                             # injective layout


# ----------------------------------------------------------------------------------------------- tests
def test_repair_restores_every_limit(tmp_path):
    """Everything on core 0 of a layer, tight limits: repair spreads it until every recounted limit holds."""
    profile = _profile(tmp_path, synapse_memory_bytes=5000, input_axons=300, compartments=60)
    nets = _nets()
    k = 12
    for l, net in enumerate(nets):
        cost = part.unit_cost(net, True)
        assign = part.repair(net, profile, k, np.zeros(net.hidden, np.int64), cost)
        assert assign.min() >= 0 and assign.max() < k
        # one layer alone: memory, units and input axons of its cores
        units, in_ax, _, memory, _, _ = _recount([net], Placement("t", [assign], np.arange(k), k, 1), profile)
        assert max(units) * 3 <= 60 and max(in_ax) <= 300 and max(memory) <= 5000, (l, units, in_ax, memory)
        assert units[0] < net.hidden


@pytest.mark.parametrize("objective", ["traffic", "latency"])
def test_placement_limits_and_costs_match_recount(tmp_path, objective):
    profile = _profile(tmp_path, synapse_memory_bytes=6000, input_axons=300)
    nets = _nets()
    seq, ours = place(nets, profile, 64, True, objective=objective)
    for pl in (seq, ours):
        _assert_within_limits(nets, pl, profile)
        costs = evaluate(nets, pl, profile, True)
        units, in_ax, out_ax, memory, packets, hops = _recount(nets, pl, profile)
        assert costs.units.tolist() == units and costs.input_axons.tolist() == in_ax
        assert costs.output_axons.tolist() == out_ax and costs.memory_bytes.tolist() == memory
        assert costs.packets == pytest.approx(packets, rel=1e-12)
        assert float(costs.hops_out.sum()) == pytest.approx(hops, rel=1e-12)
        assert not violations(costs, profile)


@pytest.mark.parametrize("geometry", [dict(cores=8, tiles_x=2, tiles_y=1, cores_per_tile=4),
                                      dict(cores=4, tiles_x=1, tiles_y=1, cores_per_tile=4)])
def test_multi_chip_hops_match_recount(tmp_path, geometry):
    """On meshes of several chips the estimate counts links crossed (a chip crossing is one link), as the
    recount walks them; every placement carries the estimate `evaluate` gives (evaluated once, by the placer)."""
    profile = _profile(tmp_path, synapse_memory_bytes=6000, input_axons=300, **geometry)
    nets = _nets()
    seq, ours = place(nets, profile, 64, True)
    for pl in (seq, ours):
        assert pl.chips == -(-pl.n_cores // geometry["cores"]) >= 2
        costs = evaluate(nets, pl, profile, True)
        *_, packets, hops = _recount(nets, pl, profile)
        assert float(costs.hops_out.sum()) == pytest.approx(hops, rel=1e-12) and hops > 0
        assert costs.packets == pytest.approx(packets, rel=1e-12)
        for f in ("hops_out", "energy_pj", "busy_ns", "memory_bytes", "output_axons", "traffic"):
            assert np.array_equal(getattr(pl.costs, f), getattr(costs, f)), f


def test_ours_beats_sequential_on_traffic_and_balance(tmp_path):
    profile = _profile(tmp_path, synapse_memory_bytes=6000, input_axons=300)
    nets = _nets()
    seq, ours = place(nets, profile, 64, True)
    _, _, _, _, p_seq, h_seq = _recount(nets, seq, profile)
    _, _, _, _, p_ours, h_ours = _recount(nets, ours, profile)
    assert p_ours <= p_seq + 1e-9 and h_ours < h_seq
    T = nets[0].tokens

    def max_macs(pl):
        return max(sum(nets[l].mac_events[j] for l in range(3) for j in np.nonzero(pl.core_of[l] == c)[0])
                   for c in range(pl.n_cores)) / T
    assert max_macs(ours) <= max_macs(seq)
    lat_seq, lat = place(nets, profile, 64, True, objective="latency")
    assert max_macs(lat) < max_macs(seq)


def _dense_cost(W, profile, slot_of):
    """Sum over core pairs of symmetric traffic times the hop distance of their slots (links, a chip crossing
    one of them; link energy as a tie-break: dense, by formula)."""
    g = profile.chip
    chip, local = np.divmod(slot_of, g.cores)
    tile = local // g.cores_per_tile
    x, y = chip * g.tiles_x + tile % g.tiles_x, tile // g.tiles_x
    e = profile.energy
    D = (1 + 1e-3 * e.hop_ew_pj) * np.abs(x[:, None] - x[None]) + (1 + 1e-3 * e.hop_ns_pj) * np.abs(
        y[:, None] - y[None]) + 1e-3 * g.chip_hop_pj * np.abs(chip[:, None] - chip[None])
    return float((W * D).sum() / 2)


def test_layout_is_a_local_optimum_and_beats_identity(tmp_path):
    """No single move to a free slot and no swap of two cores lowers the cost (checked by brute force)."""
    profile = _profile(tmp_path, cores=16, tiles_x=4, tiles_y=2, cores_per_tile=2)
    rng = np.random.default_rng(3)
    n = 13
    traffic = rng.random((n, n)) * (rng.random((n, n)) < 0.4)
    W = traffic + traffic.T
    np.fill_diagonal(W, 0)
    slots = layout(traffic, profile, n, 1)
    best = _dense_cost(W, profile, slots)
    assert best <= _dense_cost(W, profile, np.arange(n)) + 1e-9
    for a in range(n):
        for s in range(16):
            trial = slots.copy()
            b = np.nonzero(slots == s)[0]
            trial[a] = s
            if len(b):
                trial[b[0]] = slots[a]
            assert _dense_cost(W, profile, trial) >= best - 1e-7, (a, s)


def test_sparse_symmetric_matches_dense():
    rng = np.random.default_rng(0)
    t = rng.random((700, 700)) * (rng.random((700, 700)) < 0.05)
    indptr, nbr, wt = sparse_symmetric(t, chunk=100)
    W = t + t.T
    np.fill_diagonal(W, 0)
    back = np.zeros_like(W)
    back[np.repeat(np.arange(700), np.diff(indptr)), nbr] = wt
    assert np.array_equal(back, W)


def test_fallback_without_hypergraph_package(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_mtkahypar(name, *args, **kwargs):
        if name == "mtkahypar" or name.startswith("mtkahypar."):
            raise ImportError("No module named 'mtkahypar'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_mtkahypar)
    profile = _profile(tmp_path, synapse_memory_bytes=6000, input_axons=300)
    nets = _nets()
    with pytest.raises(part.PartitionerUnavailable):
        part.hypergraph(nets, 1, 4, True)
    info: dict = {}
    pl = balanced_placement(nets, profile, 64, True, objective="latency", info=info)   # auto: hypergraph if any
    assert [m.split("+")[0] for m in info["partitioners"]] == ["lpt"] * 3
    _assert_within_limits(nets, pl, profile)


def test_hypergraph_partitioner_when_installed(tmp_path):
    pytest.importorskip("mtkahypar")
    profile = _profile(tmp_path, synapse_memory_bytes=6000, input_axons=300)
    nets = _nets()
    info: dict = {}
    pl = balanced_placement(nets, profile, 64, True, method="hypergraph", info=info)
    assert info["partitioners"] == ["hypergraph"] * 3
    _assert_within_limits(nets, pl, profile)


def test_fan_in_above_input_axon_limit_names_layer(tmp_path):
    profile = _profile(tmp_path, input_axons=40)
    nets = _nets(sizes=(30, 60, 20), emb=20, density=0.3)
    need = [int(((n.conn_in > 0).sum(1) + (n.conn_rec > 0).sum(1)).max()) for n in nets]
    bad = next(l for l, f in enumerate(need) if f > 40)
    with pytest.raises(PlacementError) as e:
        place(nets, profile, 64, True)
    msg = str(e.value)
    assert f"layer {bad} " in msg and "input-axon limit of 40" in msg and f"by {need[bad] - 40}" in msg
    assert "\n" not in msg
