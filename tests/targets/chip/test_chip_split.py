"""Graded spikes on chip (issue 25): the size of a message (``[spikes] payload_bits``, ``flit_bits``) in the
energy and time model, checked against an independent recount of the simulated run.

The recount uses only the PyTorch model's spike trains, program.npz's unit -> core map and slots, and the
profile TOML's numbers: a message of ``1 + ceil(payload_bits / flit_bits)`` flits pays the delivery and every
link's energy per flit and the links' time once. It never calls the cost model, routing or simulator."""
from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pytest

from egru_compile.targets.chip import load_program
from egru_compile.targets.chip.profile import ProfileError, load_profile
from test_chip_sim import WORDS, _compile, _eval, _geometry, _tile_xy, _torch_spikes, setup  # noqa: F401

GRADED = "\n[spikes]\npayload_bits = 24\nflit_bits = 8\n"          # 1 header + 3 payload flits


def _recount_energy_latency(model, tokens, core_of, slots, prof: dict):
    """Per core energy (pJ, summed over tokens) and the total latency (ns), from first principles."""
    ch, co, e = prof["chip"], prof["core"], prof["energy"]
    sp = prof.get("spikes", {})
    bits, fb = sp.get("payload_bits", 0), sp.get("flit_bits", 0)
    flits = 1 + (math.ceil(bits / fb) if bits and fb else 0)
    geom = (ch["cores"], ch["tiles_x"], ch["cores_per_tile"])
    pos = [_tile_xy(s, *geom) for s in slots]
    chip = [int(s) // ch["cores"] for s in slots]
    cpu = co["compartments_per_unit"]
    n, L = len(slots), len(model.rnns)
    spikes = _torch_spikes(model, tokens)
    conn = []
    for layer in model.rnns:
        h = layer.recurrent_kernel.shape[0]
        W = layer.kernel.detach().numpy() != 0
        R = layer.recurrent_kernel.detach().numpy() != 0
        conn.append((sum(W[:, g * h:(g + 1) * h].T.astype(int) for g in range(3)),
                     sum(R[:, g * h:(g + 1) * h].T.astype(int) for g in range(3))))
    dests = []
    for l in range(L):
        ds = []
        for i in range(conn[l][1].shape[0]):
            d = set(core_of[l][np.nonzero(conn[l][1][:, i])[0]].tolist())
            if l + 1 < L:
                d |= set(core_of[l + 1][np.nonzero(conn[l + 1][0][:, i])[0]].tolist())
            ds.append(sorted(d))
        dests.append(ds)
    energy = np.zeros(n)
    latency = 0.0
    for t in range(len(tokens)):
        for l in range(L):
            ci, cr = conn[l]
            x_act = np.ones(ci.shape[1], bool) if l == 0 else spikes[l - 1][t]
            r_act = spikes[l][t - 1] if t else np.zeros(cr.shape[1], bool)
            syn = np.zeros(n)
            np.add.at(syn, core_of[l], ci[:, x_act].sum(1) + cr[:, r_act].sum(1))
            act = np.zeros(n)
            np.add.at(act, core_of[l], spikes[l][t].astype(float))
            idle = np.bincount(core_of[l], minlength=n) - act
            energy += syn * e["synop_pj"] + act * cpu * e["neuron_active_pj"] + idle * cpu * e["neuron_inactive_pj"]
            work = syn * e["synop_ns"] + act * cpu * e["neuron_active_ns"] + idle * cpu * e["neuron_inactive_ns"]
            route = 0.0
            for i in np.nonzero(spikes[l][t])[0]:
                s = core_of[l][i]
                for c in dests[l][i]:
                    dx, dy = abs(pos[s][0] - pos[c][0]), abs(pos[s][1] - pos[c][1])
                    dc = abs(chip[s] - chip[c])
                    energy[s] += flits * (e["spike_tile_pj"] + dx * e["hop_ew_pj"] + dy * e["hop_ns_pj"]
                                          + dc * ch["chip_hop_pj"])
                    work[s] += flits * e["spike_tile_ns"]
                    route = max(route, dx * e["hop_ew_ns"] + dy * e["hop_ns_ns"] + dc * ch["chip_hop_ns"])
            latency += work.max() + route + e["barrier_ns"]
    return energy, latency


@pytest.mark.parametrize("base", ["small.toml", "twochips.toml"])
def test_graded_message_energy_and_latency_equal_independent_recount(setup, base):
    d, model = setup
    text = (d / base).read_text() + GRADED
    (d / f"graded_{base}").write_text(text)
    out = _compile(d, f"g_{base}", "loihi-like", f"graded_{base}", "--float-weights")
    _, cm = load_program(out / "program.npz")
    n_tok = 31
    res = _eval(out, d, n_tok)
    T = res["tokens"]
    from egru_compile.data import Vocabulary
    ids = Vocabulary(WORDS).encode_file(d / "text.txt", max_tokens=n_tok)[:T]
    energy, latency = _recount_energy_latency(model, ids, cm.core_of, cm.slot_of_core, tomllib.loads(text))
    chip = res["chip"]
    assert chip["totals"]["messages_out"] > 0 and chip["totals"]["hops_out"] > 0
    sim_e = np.array([c["energy_pj"] * T for c in chip["cores"]])
    assert np.allclose(sim_e, energy, rtol=1e-9, atol=1e-6), (sim_e, energy)
    assert abs(chip["totals"]["latency_ns"] * T - latency) <= 1e-9 * latency
    # the same run with the binary profile's message cost (1 flit) is cheaper by exactly the extra flits
    binary, _ = _recount_energy_latency(model, ids, cm.core_of, cm.slot_of_core, tomllib.loads((d / base).read_text()))
    assert (energy >= binary).all() and energy.sum() > binary.sum()


def test_flits_and_profile_keys(tmp_path):
    from egru_compile.targets.chip.costs import CostModel
    lo = CostModel(load_profile("loihi-like"))
    e = lo.profile.energy
    assert lo.flits() == 1 and lo.message() == (e.spike_tile_pj, e.spike_tile_ns)
    assert lo.message(96) == lo.message()                    # binary profile: no payload flits
    g = CostModel(load_profile("loihi2-like"))
    assert g.profile.spikes.payload_bits == 32 and g.flits() == 2 and g.flits(96) == 4
    assert g.message() == (2 * g.e.spike_tile_pj, 2 * g.e.spike_tile_ns)
    hops, pj, ns = g.between(np.array([0]), np.array([127]))  # far corner of one chip: 7 E-W + 3 N-S links
    assert hops[0, 0] == 10
    assert pj[0, 0] == pytest.approx(2 * (g.e.spike_tile_pj + 7 * g.e.hop_ew_pj + 3 * g.e.hop_ns_pj))
    assert ns[0, 0] == pytest.approx(2 * g.e.spike_tile_ns + 7 * g.e.hop_ew_ns + 3 * g.e.hop_ns_ns)
    base = (load_profile("loihi-like").source and open(load_profile("loihi-like").source).read())
    for bad, msg in (("flit_bits = -1", ">= 0"), ("flit_bits = 2.5", "integer"), ("flit_bytes = 8", "unknown key")):
        p = tmp_path / "p.toml"
        p.write_text(base + f"\n[spikes]\npayload_bits = 16\n{bad}\n")
        with pytest.raises(ProfileError, match=msg):
            load_profile(str(p))


# ------------------------------------------------------------------------------------ partial-sum fan-in split
def _split_profile(tmp_path, axons=40):
    from egru_compile.targets.chip.profile import PROFILE_DIR
    text = (PROFILE_DIR / "loihi2-like.toml").read_text()
    text = text.replace("compartments = 8192 ", "compartments = 24 ").replace("input_axons = 8192 ",
                                                                               f"input_axons = {axons} ")
    p = tmp_path / "split.toml"
    p.write_text(text)
    return p, tomllib.loads(text)


def _split_recount(model, tokens, cm, prof):
    """Per core (synops, messages_out, hops_out, partial-sum messages, partial-sum adds, energy pJ) over the
    tokens, and per core the input axons it needs, from the PyTorch weights and spikes, the stored split map
    and the profile TOML only. A spike carries payload_bits, a partial sum 3 x payload_bits (one per gate);
    a message pays (1 + ceil(bits / flit_bits)) x (delivery + links); an add costs a synop; a remote part's
    compartments_per_unit accumulators cost a unit's update every token: active when the part sends, else silent."""
    ch, cpu, e = prof["chip"], prof["core"]["compartments_per_unit"], prof["energy"]
    bits, fb = prof["spikes"]["payload_bits"], prof["spikes"]["flit_bits"]
    f_spike, f_psum = 1 + math.ceil(bits / fb), 1 + math.ceil(cpu * bits / fb)
    chip_of = [int(s) // ch["cores"] for s in cm.slot_of_core]
    pos = [_tile_xy(s, ch["cores"], ch["tiles_x"], ch["cores_per_tile"]) for s in cm.slot_of_core]
    n, L = len(cm.slot_of_core), len(model.rnns)
    spikes = _torch_spikes(model, tokens)
    syn_core = []       # per layer: [h, n_in + h] core holding unit j's synapses from source s (-1: none)
    for l, layer in enumerate(model.rnns):
        h = layer.recurrent_kernel.shape[0]
        W = layer.kernel.detach().numpy() != 0
        R = layer.recurrent_kernel.detach().numpy() != 0
        conn = np.concatenate([sum(W[:, g * h:(g + 1) * h].T.astype(int) for g in range(3)),
                               sum(R[:, g * h:(g + 1) * h].T.astype(int) for g in range(3))], axis=1)
        sp = cm.splits[l] if cm.splits else None
        where = np.empty(conn.shape, np.int64)
        for s in range(conn.shape[1]):
            p = 0 if sp is None else int(np.sum(np.asarray(sp.bounds)[1:] <= s))
            where[:, s] = cm.core_of[l] if sp is None else sp.part_core[:, p]
        syn_core.append((conn, where, sp))
    axons = np.zeros(n, np.int64)
    for conn, where, sp in syn_core:
        for c in range(n):
            axons[c] += int(((conn > 0) & (where == c)).any(0).sum())
        if sp is not None:          # one axon at home per remote part of each unit
            for j in range(conn.shape[0]):
                axons[sp.part_core[j, 0]] += int((sp.part_core[j, 1:] >= 0).sum())
    synops, msgs, hops, psum, adds = (np.zeros(n, np.int64) for _ in range(5))
    energy = np.zeros(n)
    dist = lambda a, b: abs(pos[a][0] - pos[b][0]) + abs(pos[a][1] - pos[b][1])  # noqa: E731

    def msg_pj(a, b, flits):
        dx, dy = abs(pos[a][0] - pos[b][0]), abs(pos[a][1] - pos[b][1])
        return flits * (e["spike_tile_pj"] + dx * e["hop_ew_pj"] + dy * e["hop_ns_pj"]
                        + abs(chip_of[a] - chip_of[b]) * ch["chip_hop_pj"])
    for t in range(len(tokens)):
        for l in range(L):
            conn, where, sp = syn_core[l]
            h = conn.shape[0]
            n_in = conn.shape[1] - h
            act = np.r_[np.ones(n_in, bool) if l == 0 else spikes[l - 1][t],
                        spikes[l][t - 1] if t else np.zeros(h, bool)]
            ev = conn * act[None]                                  # synaptic events [h, n_src]
            np.add.at(synops, where[ev > 0], ev[ev > 0])
            np.add.at(energy, where[ev > 0], ev[ev > 0] * e["synop_pj"])
            fired = spikes[l][t]
            np.add.at(energy, cm.core_of[l], cpu * np.where(fired, e["neuron_active_pj"], e["neuron_inactive_pj"]))
            if sp is not None:
                for j in range(h):
                    for p in range(1, len(sp.bounds) - 1):
                        lo, hi = sp.bounds[p], sp.bounds[p + 1]
                        if sp.part_core[j, p] >= 0:       # a remote part's accumulators update every token:
                            sends = ev[j, lo:hi].sum() > 0  # active when it sends its partial sum
                            energy[sp.part_core[j, p]] += cpu * e["neuron_active_pj" if sends else "neuron_inactive_pj"]
                        if sp.part_core[j, p] >= 0 and ev[j, lo:hi].sum() > 0:
                            a, b = sp.part_core[j, p], cm.core_of[l][j]
                            psum[a] += 1
                            msgs[a] += 1
                            hops[a] += dist(a, b)
                            adds[b] += cpu
                            energy[a] += msg_pj(a, b, f_psum)
                            energy[b] += cpu * e["synop_pj"]
            for i in np.nonzero(spikes[l][t])[0]:
                dests = set(where[conn[:, n_in + i] > 0, n_in + i].tolist())
                if l + 1 < L:
                    c2, w2, _ = syn_core[l + 1]
                    dests |= set(w2[c2[:, i] > 0, i].tolist())
                src = cm.core_of[l][i]
                msgs[src] += len(dests)
                hops[src] += sum(dist(src, c) for c in dests)
                energy[src] += sum(msg_pj(src, c, f_spike) for c in dests)
    return synops, msgs, hops, psum, adds, energy, axons


@pytest.mark.parametrize("axons", [40, 90])       # 40: every layer over the limit; 90: the middle one only
def test_split_mapping_simulates_like_pytorch_and_equals_independent_recount(tmp_path, axons):
    from conftest import make_model
    from egru_compile.frontend import trace_model
    from egru_compile.passes import PassManager
    from egru_compile.targets.chip.network import build_network
    from egru_compile.targets.chip.program import save_program
    from egru_compile.targets.chip.simulate import ChipSimulator
    from egru_compile.targets.chip.split import split_core_map
    from egru_compile.targets.stack import extract_stack
    import torch
    model = make_model(vocab=60, emb=16, hidden=(96, 64, 16), sparsity=0.8, seed=5, thr=(0.05, 0.3))
    stack = extract_stack(PassManager(None).run(trace_model(model)))
    path, prof = _split_profile(tmp_path, axons)
    profile = load_profile(str(path))
    cm0 = split_core_map(build_network(stack), profile)
    assert cm0.splits is not None and sum(s is not None for s in cm0.splits) >= (3 if axons == 40 else 1)
    save_program(tmp_path / "program.npz", stack, cm0)
    stack, cm = load_program(tmp_path / "program.npz")                   # the codec keeps the split
    assert all((a is None) == (b is None) for a, b in zip(cm.splits, cm0.splits))
    sim = ChipSimulator(stack, cm, profile=profile)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 60, 25)
    state = model.init_state(1)
    with torch.no_grad():
        for tok in tokens:
            logits, state = model.step(torch.tensor([int(tok)]), state)
            assert np.abs(sim.step(int(tok)) - logits.numpy()[0]).max() < 1e-4
    synops, msgs, hops, psum, adds, energy, axons = _split_recount(model, tokens, cm, prof)
    c = sim.counters
    assert (axons <= prof["core"]["input_axons"]).all()                  # every core within its axon limit
    assert c["synops"].tolist() == synops.tolist()
    assert c["psum_messages"].tolist() == psum.tolist() and psum.sum() > 0
    assert c["psum_adds"].tolist() == adds.tolist()
    assert c["messages_out"].tolist() == msgs.tolist()
    assert c["hops_out"].tolist() == hops.tolist() and hops.sum() > 0
    assert np.allclose(c["energy_pj"], energy, rtol=1e-9, atol=1e-6)
    # every message crosses its links: per-link loads add up to the hops
    assert abs(sim.link_messages().sum() - hops.sum()) < 1e-6
    with pytest.raises(ValueError, match="layer backend"):
        ChipSimulator(stack, cm, profile=profile, backend="numpy")


def test_binary_profile_refuses_the_split(tmp_path):
    from conftest import make_model
    from egru_compile.frontend import trace_model
    from egru_compile.passes import PassManager
    from egru_compile.targets.chip.model import PlacementError
    from egru_compile.targets.chip.network import build_network
    from egru_compile.targets.chip.split import split_core_map
    from egru_compile.targets.stack import extract_stack
    model = make_model(vocab=60, emb=16, hidden=(96, 64, 16), sparsity=0.8, seed=5, thr=(0.05, 0.3))
    nets = build_network(extract_stack(PassManager(None).run(trace_model(model))))
    path, _ = _split_profile(tmp_path)
    path.write_text(path.read_text().replace("payload_bits = 32 ", "payload_bits = 0 "))
    with pytest.raises(PlacementError, match="input-axon limit of 40 .*binary spikes cannot carry partial sums"):
        split_core_map(nets, load_profile(str(path)))


@pytest.mark.parametrize("axons", [40, 110])   # 40: every layer over the limit; 110: one unit per core unsplit
def test_compile_splits_over_limit_layers_and_eval_equals_recount(setup, axons):
    d, model = setup
    path, prof = _split_profile(d, axons)
    path = path.rename(d / f"split{axons}.toml")
    out = _compile(d, f"split_out{axons}", "loihi2-like", path.name, "--float-weights")
    m = json.loads((out / "mapping.json").read_text())
    _, cm = load_program(out / "program.npz")
    assert cm.splits is not None and m["split"]["layers"]
    if axons == 40:
        assert all(s is not None for s in cm.splits)
    else:        # no unit over the limit: split because it needs fewer cores than the sequential baseline
        assert m["totals"]["cores_used"] < m["baseline"]["totals"]["cores_used"]
    assert not any(r["input_axons"] > axons for r in m["cores"])          # the estimate keeps the limit
    # estimate and simulation of the calibration text: the same synops (exact MACs per part)
    assert abs(m["totals"]["synops_estimated"] - m["simulated"]["totals"]["synops"]) < 1e-6
    n_tok = 29
    res = _eval(out, d, n_tok)
    T = res["tokens"]
    from egru_compile.data import Vocabulary
    ids = Vocabulary(WORDS).encode_file(d / "text.txt", max_tokens=n_tok)[:T]
    synops, msgs, hops, psum, adds, energy, _ = _split_recount(model, ids, cm, prof)
    chip = res["chip"]
    assert [round(c["synops"] * T) for c in chip["cores"]] == synops.tolist()
    assert [round(c["messages_out"] * T) for c in chip["cores"]] == msgs.tolist()
    assert [round(c["hops_out"] * T) for c in chip["cores"]] == hops.tolist() and psum.sum() > 0
    assert np.allclose([c["energy_pj"] * T for c in chip["cores"]], energy, rtol=1e-9)
    # the partial sums the energy charges are reported, equal to the recount (eval --json totals)
    assert round(chip["totals"]["psum_messages"] * T) == psum.sum() > 0
    assert round(chip["totals"]["psum_adds"] * T) == adds.sum()
