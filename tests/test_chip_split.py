"""Graded spikes on chip (issue 25): the size of a message (``[spikes] payload_bits``, ``flit_bits``) in the
energy and time model, checked against an independent recount of the simulated run.

The recount uses only the PyTorch model's spike trains, program.npz's unit -> core map and slots, and the
profile TOML's numbers: a message of ``1 + ceil(payload_bits / flit_bits)`` flits pays the delivery and every
link's energy per flit and the links' time once. It never calls the cost model, routing or simulator."""
from __future__ import annotations

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
    assert chip["totals"]["messages"] > 0 and chip["totals"]["hops"] > 0
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
