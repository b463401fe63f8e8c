"""Chip simulation of placed programs, checked against independent recounts.

The recounts here use only the PyTorch model (weights and its spike trains), the unit->core map and slots in
program.npz, and the profile's mesh geometry; the X-then-Y hop distances and multicast trees are written
again in this file. They never call the simulator's routing or counting code."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import lm_words, random_lm
from egru_compile.cli import main
from egru_compile.frontend import trace_model
from egru_compile.passes import PassManager, PassOptions, count_macs_for_tokens
from egru_compile.targets.chip import load_program

WORDS = lm_words(60)
N_CALIB = 60


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d, model = random_lm(tmp_path_factory, "chipsim", vocab=60, emb=16, hidden=(96, 64, 16), sparsity=0.8, seed=5,
                         thr=(0.05, 0.3), lines=8, words_per_line=15)
    from egru_compile.targets.chip.profile import PROFILE_DIR
    base = (PROFILE_DIR / "loihi-like.toml").read_text()
    # 16 units per core: the 176-unit model spans ~12 cores over several tiles
    small = base.replace("compartments = 1024 ", "compartments = 48 ")
    (d / "small.toml").write_text(small)
    # the same with 8-core chips of 2x1 tiles: the placement spans two chips (chip-to-chip links)
    two = small.replace("cores = 128 ", "cores = 8 ").replace("tiles_x = 8 ", "tiles_x = 2 ") \
        .replace("tiles_y = 4 ", "tiles_y = 1 ")
    (d / "twochips.toml").write_text(two)
    # 4-core chips of one tile (the user profile): every message between chips crosses chip links
    (d / "fourcore.toml").write_text(two.replace("cores = 8 ", "cores = 4 ").replace("tiles_x = 2 ", "tiles_x = 1 "))
    s2 = (PROFILE_DIR / "spinnaker2-like.toml").read_text().replace("compartments = 100000", "compartments = 48")
    (d / "s2small.toml").write_text(s2)
    return d, model


def _compile(d, name, target, profile, *extra):
    out = d / name
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", target, "-o", str(out), "--force",
                                    "--profile", str(d / profile), "--max-chips", "4",
                                    "--calib-data", str(d / "text.txt"), "--calib-tokens", str(N_CALIB), *extra])
    assert res.exit_code == 0, res.output
    return out


def _eval(out, d, n_tokens):
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "text.txt"), "--max-tokens",
                                    str(n_tokens), "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


# ------------------------------------------------------------------------------------------ independent recount
def _geometry(toml_text: str):
    import tomllib
    c = tomllib.loads(toml_text)["chip"]
    return c["cores"], c["tiles_x"], c["cores_per_tile"]


def _tile_xy(slot, cores, tiles_x, cpt):
    chip, local = divmod(int(slot), cores)
    tile = local // cpt
    return chip * tiles_x + tile % tiles_x, tile // tiles_x


def _xy_links(a, b):
    """Links of the X-then-Y route from tile a to tile b."""
    (x, y), (x1, y1) = a, b
    out = []
    while x != x1:
        nx = x + (1 if x1 > x else -1)
        out.append(((x, y), (nx, y)))
        x = nx
    while y != y1:
        ny = y + (1 if y1 > y else -1)
        out.append(((x, y), (x, ny)))
        y = ny
    return out


def _torch_spikes(model, tokens):
    """[layer] -> bool [T, h]: y != 0 at each step of the PyTorch model."""
    state = model.init_state(1)
    out = [[] for _ in model.rnns]
    with torch.no_grad():
        for t in tokens:
            _, state = model.step(torch.tensor([int(t)]), state)
            for l, (_, y) in enumerate(state):
                out[l].append(y.numpy()[0] != 0)
    return [np.array(o) for o in out]


def _recount(model, tokens, core_of, slots, geom, multicast=False):
    """Per core: synops, hops_out, messages_out summed over the tokens, from first principles."""
    n = len(slots)
    pos = [_tile_xy(s, *geom) for s in slots]
    spikes = _torch_spikes(model, tokens)
    L = len(model.rnns)
    # unit-level synapse counts, gates summed: conn[l] = (input [h, n_in], recurrent [h, h])
    conn = []
    for layer in model.rnns:
        h = layer.recurrent_kernel.shape[0]
        W = layer.kernel.detach().numpy() != 0            # [n_in, 3h]
        R = layer.recurrent_kernel.detach().numpy() != 0  # [h, 3h]
        conn.append((sum(W[:, g * h:(g + 1) * h].T.astype(int) for g in range(3)),
                     sum(R[:, g * h:(g + 1) * h].T.astype(int) for g in range(3))))
    synops, hops, msgs = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    # destination cores of every unit
    dests = []
    for l in range(L):
        h = conn[l][1].shape[0]
        ds = []
        for i in range(h):
            d = set(core_of[l][np.nonzero(conn[l][1][:, i])[0]].tolist())
            if l + 1 < L:
                d |= set(core_of[l + 1][np.nonzero(conn[l + 1][0][:, i])[0]].tolist())
            ds.append(sorted(d))
        dests.append(ds)
    for t in range(len(tokens)):
        for l in range(L):
            ci, cr = conn[l]
            x_act = np.ones(ci.shape[1], bool) if l == 0 else spikes[l - 1][t]
            r_act = spikes[l][t - 1] if t else np.zeros(cr.shape[1], bool)
            per_unit = ci[:, x_act].sum(1) + cr[:, r_act].sum(1)
            np.add.at(synops, core_of[l], per_unit)
            for i in np.nonzero(spikes[l][t])[0]:
                src = core_of[l][i]
                if multicast:
                    tree = set()
                    for c in dests[l][i]:
                        tree |= set(_xy_links(pos[src], pos[c]))
                    hops[src] += len(tree)
                    msgs[src] += 1 if dests[l][i] else 0
                else:
                    for c in dests[l][i]:
                        hops[src] += abs(pos[src][0] - pos[c][0]) + abs(pos[src][1] - pos[c][1])
                    msgs[src] += len(dests[l][i])
    return synops, hops, msgs, spikes


@pytest.mark.parametrize("profile,target,multicast", [("small.toml", "loihi-like", False),
                                                       ("twochips.toml", "loihi-like", False),
                                                       ("s2small.toml", "spinnaker2-like", True)])
def test_simulated_per_core_counts_equal_independent_recount(setup, profile, target, multicast):
    d, model = setup
    out = _compile(d, f"f_{profile}", target, profile, "--float-weights")
    _, pl, dec = load_program(out / "program.npz", with_decoder=True)
    assert dec is None
    n_cores = len(pl.slot_of_core)
    geom = _geometry((d / profile).read_text())
    tiles = {_tile_xy(s, *geom) for s in pl.slot_of_core}
    assert n_cores >= 8 and len(tiles) >= 3                          # spans several tiles
    if profile == "twochips.toml":
        assert len({int(s) // geom[0] for s in pl.slot_of_core}) >= 2
    n_tok = 41
    res = _eval(out, d, n_tok)
    T = res["tokens"]
    from egru_compile.data import Vocabulary
    ids = Vocabulary(WORDS).encode_file(d / "text.txt", max_tokens=n_tok)[:T]
    synops, hops, msgs, spikes = _recount(model, ids, pl.core_of, pl.slot_of_core, geom, multicast)
    chip = res["chip"]
    assert chip["router"] == ("multicast" if multicast else "unicast") and chip["decoder"] == "host"
    assert [round(c["synops"] * T) for c in chip["cores"]] == synops.tolist()
    assert [round(c["hops_out"] * T) for c in chip["cores"]] == hops.tolist()
    assert [round(c["messages_out"] * T) for c in chip["cores"]] == msgs.tolist()
    spikes_total = sum(int(s.sum()) for s in spikes)
    assert round(sum(c["spikes_out"] for c in chip["cores"]) * T) == spikes_total > 0
    assert hops.sum() > 0 and abs(chip["totals"]["synops"] - res["macs_per_token"]) < 1e-6
    # every message crosses links: the per-link loads add up to the hops
    assert abs(sum(l["messages"] for l in chip["links"]) - chip["totals"]["hops_out"]) < 1e-6
    if profile == "twochips.toml":
        assert any(l["kind"] == "chip" for l in chip["links"])


def test_int8_synops_equal_eval_macs_and_count_macs(setup):
    d, model = setup
    out = _compile(d, "int8", "loihi-like", "small.toml")
    res = _eval(out, d, 51)
    T = res["tokens"]
    syn = sum(c["synops"] for c in res["chip"]["cores"])
    assert abs(syn - res["macs_per_token"]) < 1e-6
    # independent: the IR interpreter's count on the same quantized graph and tokens
    from egru_compile.data import Vocabulary
    ids = Vocabulary(WORDS).encode_file(d / "text.txt", max_tokens=51)[:T]
    graph = PassManager("default,quantize-int8", options=PassOptions(calib_tokens=None)).run(trace_model(model))
    ref = count_macs_for_tokens(graph, ids)["macs_per_token"]["dynamic"]
    assert abs(syn - ref) < 1e-6 * max(ref, 1)


@pytest.mark.parametrize("profile,chips", [("small.toml", 1), ("twochips.toml", 2), ("fourcore.toml", 3)])
def test_estimated_and_simulated_agree_on_the_calibration_text(setup, profile, chips):
    """Estimate (placement algebra) and simulation (events routed link by link) on the same calibration text
    agree on one chip and on meshes of 2 and 3 chips: a chip crossing is one hop in both."""
    d, _ = setup
    out = _compile(d, f"agree_{chips}", "loihi-like", profile)
    m = json.loads((out / "mapping.json").read_text())
    est, sim = m["totals"], m["simulated"]["totals"]
    assert m["simulated"]["tokens"] == N_CALIB and m["chips"] == chips
    assert abs(est["synops_estimated"] - sim["synops"]) < 1e-6 * est["synops_estimated"]
    assert abs(est["messages_out"] - sim["messages_out"]) < 1e-6 * est["messages_out"]
    assert abs(est["hops_out"] - sim["hops_out"]) < 1e-6 * max(est["hops_out"], 1)
    assert abs(est["energy_pj"] - sim["energy_pj"]) < 1e-6 * est["energy_pj"]
    for ce, cs in zip(m["cores"], m["simulated"]["cores"]):
        assert abs(ce["synops_estimated"] - cs["synops"]) < 1e-6 * max(ce["synops_estimated"], 1)
        assert abs(ce["hops_out"] - cs["hops_out"]) < 1e-4 * max(ce["hops_out"], 1)
        assert abs(ce["energy_pj"] - cs["energy_pj"]) < 1e-4 * max(ce["energy_pj"], 1)
    if chips > 1:
        assert sim["hops_out"] > 0 and any(c["chip"] > 0 for c in m["cores"])
    # eval on the same text simulates the same tokens: the same figures
    res = _eval(out, d, N_CALIB + 1)
    for k in ("synops", "messages_out", "hops_out", "energy_pj", "latency_ns"):
        assert abs(res["chip"]["totals"][k] - sim[k]) < 1e-6 * max(sim[k], 1), k
    if chips > 1:
        return
    report = (out / "report.txt").read_text()
    assert "estimated" in report and "simulated" in report and "decoder: on the host" in report
    text = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "text.txt"), "--quiet"]).output
    assert "decoder on host" in text and "synops/token" in text and "latency/token" in text


def test_decoder_on_chip_is_placed_counted_and_gives_the_same_logits(setup):
    d, model = setup
    host = _compile(d, "dhost", "loihi-like", "small.toml", "--float-weights")
    chip = _compile(d, "dchip", "loihi-like", "small.toml", "--float-weights", "--decoder", "chip")
    mh, mc = json.loads((host / "mapping.json").read_text()), json.loads((chip / "mapping.json").read_text())
    assert mh["decoder"]["placement"] == "host" and "default" in mh["decoder"]["why"]
    dcores = mc["decoder"]["cores"]
    assert mc["decoder"]["placement"] == "chip" and dcores
    assert sum(c["outputs"] for c in dcores) == 60
    assert sum(c["synapses"] for c in dcores) == int((model.decoder.decoder.weight != 0).sum())
    assert all(c["memory_bytes"] <= c["memory_limit_bytes"] for c in dcores)
    rh, rc = _eval(host, d, 41), _eval(chip, d, 41)
    assert abs(rh["perplexity"] - rc["perplexity"]) < 1e-4 * rh["perplexity"]
    assert rc["macs_per_token"] == rh["macs_per_token"]         # RNN synops: the decoder's are reported apart
    T = rc["tokens"]
    from egru_compile.data import Vocabulary
    ids = Vocabulary(WORDS).encode_file(d / "text.txt", max_tokens=41)[:T]
    last = _torch_spikes(model, ids)[-1]                          # [T, 16]
    col_nnz = (model.decoder.decoder.weight.detach().numpy() != 0).sum(0)
    ref = int((last * col_nnz[None]).sum())
    assert round(rc["chip"]["totals"]["decoder_synops"] * T) == ref
    roles = [c["role"] for c in rc["chip"]["cores"]]
    assert roles.count("decoder") == len(dcores)
    assert rc["chip"]["totals"]["energy_pj"] > rh["chip"]["totals"]["energy_pj"]
    assert len(rc["chip"]["totals"]["layer_phase_ns"]) == 4 and "host" not in rc["chip"]
    assert rh["chip"]["host"]["decoder_macs_dense"] == int((model.decoder.decoder.weight != 0).sum())


def test_inspect_core_and_links(setup):
    d, _ = setup
    out = _compile(d, "insp", "loihi-like", "small.toml")
    _, pl, _ = load_program(out / "program.npz", with_decoder=True)
    core = int(pl.core_of[1][0])
    res = CliRunner().invoke(main, ["inspect", str(out), "--core", str(core)])
    assert res.exit_code == 0, res.output
    units = np.nonzero(pl.core_of[1] == core)[0]
    assert f"layer 1: {len(units)} [" in res.output
    assert "input axons" in res.output and "destinations" in res.output and "core " in res.output
    res = CliRunner().invoke(main, ["inspect", str(out), "--links"])
    assert res.exit_code == 0 and "busiest links" in res.output and "->" in res.output
    res = CliRunner().invoke(main, ["inspect", str(out), "--core", "999"])
    assert res.exit_code != 0 and res.output.startswith("error: no core 999")


def test_layer_backend_counts_like_per_core_programs(setup):
    """The fast backend (one program per layer + per-core fan tables) and per-core programs on their own
    inboxes give identical logits-level outputs and identical per-core counters."""
    d, model = setup
    from egru_compile.targets.chip.profile import load_profile
    from egru_compile.targets.chip.simulate import ChipSimulator
    out = _compile(d, "backends", "loihi-like", "small.toml")
    stack, pl, _ = load_program(out / "program.npz", with_decoder=True)
    prof = load_profile(str(d / "small.toml"))
    sims = [ChipSimulator(stack, pl, backend=b, profile=prof) for b in ("layer", "numpy")]
    rng = np.random.default_rng(3)
    for _ in range(30):
        tok = int(rng.integers(60))
        a, b = (s.step(tok) for s in sims)
        assert np.abs(a - b).max() < 1e-5
    for k in sims[0].counters:
        assert np.allclose(sims[0].counters[k], sims[1].counters[k]), k
    assert sims[0].latency_ns == pytest.approx(sims[1].latency_ns)
