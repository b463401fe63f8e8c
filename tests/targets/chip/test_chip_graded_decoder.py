"""EvNN's projection decoder on chip with graded events (``--decoder chip`` on a graded-spike profile).

The references here are written from the PyTorch model alone (its weights and its own event values y of the
last layer, step by step), the unit / output -> core maps and slots in program.npz, and the profile's numbers:
the projection ``a(P · y + p)``, its payload quantisation (a signed ``payload_bits`` integer with the per-output
scale ``max |x| over 0 <= y <= 1`` / qmax, written again here), the decoder, every per-core counter (X-then-Y
hops, messages per destination core, flits) and the per-core energy. Nothing here calls the simulator's
arithmetic, routing or counting code."""
from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from egru_compile.cli import main
from egru_compile.data import Vocabulary
from egru_compile.frontend import save_checkpoint
from egru_compile.model import EGRUConfig, EGRULanguageModel
from egru_compile.targets.chip import load_program

WORDS = [f"w{i}" for i in range(59)] + ["<eos>"]
N_CALIB, N_EVAL = 60, 41


def _model(activation: str, seed: int) -> EGRULanguageModel:
    torch.manual_seed(seed)
    m = EGRULanguageModel(EGRUConfig(60, 16, [48, 32], projection=True, projection_activation=activation))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in m.rnns:
            layer.thr.uniform_(0.05, 0.3)         # thresholds >= 0: 0 < y <= 1, no payload can saturate
            layer.bias.normal_(0, 0.3)
            layer.recurrent_bias.normal_(0, 0.3)
        m.decoder.projection.weight.mul_((torch.rand(16, 32, generator=g) < 0.6).float())
        m.embeddings.weight.mul_((torch.rand(60, 16, generator=g) < 0.5).float())   # tied, sparse decoder
        m.decoder.decoder.bias.normal_(0, 0.1)
    m.eval()
    return m


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("gradeddec")
    models = {act: _model(act, seed) for act, seed in (("relu", 3), ("identity", 4))}
    for act, m in models.items():
        save_checkpoint(d / f"{act}.pt", m, WORDS)
    rng = np.random.default_rng(0)
    (d / "text.txt").write_text("\n".join(" ".join(rng.choice(WORDS[:-1], 15)) for _ in range(8)) + "\n")
    from egru_compile.targets.chip.profile import PROFILE_DIR
    base = (PROFILE_DIR / "loihi2-like.toml").read_text()
    # 4 units per core: 20 RNN, 2 projection and 5 decoder cores over 7 tiles
    small = base.replace("compartments = 8192 ", "compartments = 12 ")
    assert small != base
    (d / "g32.toml").write_text(small)
    (d / "g8.toml").write_text(small.replace("payload_bits = 32 ", "payload_bits = 8 "))
    return d, models


_COMPILED: dict = {}


def _compile(d, act, profile, *extra):
    out = d / f"{act}_{profile}"
    if (out, extra) in _COMPILED:                     # one compile per model and profile in this module
        return out
    _COMPILED[(out, extra)] = True
    res = CliRunner().invoke(main, [str(d / f"{act}.pt"), "-o", str(out), "--force", "--profile",
                                    str(d / f"{profile}.toml"), "--max-chips", "2", "--float-weights",
                                    "--calib-data", str(d / "text.txt"), "--calib-tokens", str(N_CALIB), *extra])
    assert res.exit_code == 0, res.output
    return out


def _last_events(model, ids) -> np.ndarray:
    """[T, h_last] float64: the last layer's event values y of the PyTorch model at each step."""
    state = model.init_state(1)
    out = []
    with torch.no_grad():
        for t in ids:
            _, state = model.step(torch.tensor([int(t)]), state)
            out.append(state[-1][1].numpy()[0].astype(np.float64))
    return np.array(out)


def _reference(model, ids, bits):
    """Per token: float32-path logits, quantised-path logits, the payload integers q (0 = not sent), whether
    any payload sits within float noise (1e-6 of its range) of a rounding boundary, and whether any sits
    within that noise of being sent or not."""
    P = model.decoder.projection.weight.detach().numpy().astype(np.float64)         # [E, h]
    p = model.decoder.projection.bias.detach().numpy().astype(np.float64)
    W = model.decoder.decoder.weight.detach().numpy().astype(np.float64)            # [V, E]
    b = model.decoder.decoder.bias.detach().numpy().astype(np.float64)
    relu = model.decoder.projection_activation == "relu"
    qmax = 2 ** (bits - 1) - 1
    lo, hi = p + np.where(P < 0, P, 0).sum(1), p + np.where(P > 0, P, 0).sum(1)   # x over 0 <= y <= 1
    s = np.maximum(np.abs(lo), np.abs(hi)) / qmax
    x = _last_events(model, ids) @ P.T + p
    if relu:
        x = np.maximum(x, 0.0)
    r = x / s
    q = np.clip(np.rint(r), -qmax, qmax)
    edge = np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-3 + 1e-6 * qmax                 # rounding ambiguous
    zero = (x != 0) & (np.abs(np.abs(r) - 0.5) < 1e-3 + 1e-6 * qmax)                  # sent or not: ambiguous
    assert np.abs(np.rint(r)).max() <= qmax                                        # the bound holds
    return x @ W.T + b, (q * s) @ W.T + b, q, edge.any(1), zero.any(1)


def _ppl(logits, ids):
    lg = logits[:-1]
    m = lg.max(1, keepdims=True)
    nll = (m[:, 0] + np.log(np.exp(lg - m).sum(1))) - lg[np.arange(len(lg)), ids[1:]]
    return float(np.exp(nll.mean()))


@pytest.mark.parametrize("act", ["relu", "identity"])
def test_chip_logits_equal_the_quantised_reference(setup, act):
    """(a) The simulated chip's logits = the numpy reference of the same quantised arithmetic; at 8 bits they
    differ measurably from the float32 host path, at loihi2-like's 32 bits they are the host's; the
    calibration perplexity change in mapping.json is the reference's."""
    d, models = setup
    from egru_compile.targets.chip.profile import load_profile
    from egru_compile.targets.chip.simulate import ChipSimulator
    ids = Vocabulary(WORDS).encode_file(d / "text.txt", max_tokens=N_CALIB)[:N_CALIB]
    for bits, prof in ((8, "g8"), (32, "g32")):
        out = _compile(d, act, prof, "--decoder", "chip")
        stack, cores = load_program(out / "program.npz")
        assert cores.projection_core_of is not None
        sim = ChipSimulator(stack, cores, profile=load_profile(str(d / f"{prof}.toml")))
        got = np.array([sim.step(int(t)) for t in ids], np.float64)
        ref_f, ref_q, q, edge, _ = _reference(models[act], ids, bits)
        assert sim.dec.saturated == 0
        if bits == 8:
            assert edge.mean() < 0.1
            assert np.abs(got - ref_q)[~edge].max() < 1e-4
            assert np.abs(ref_q - ref_f).max() > 1e-3             # quantisation is visible at 8 bits
        else:                                                     # 32 bits: below float32 resolution
            assert np.abs(got - ref_f).max() < 1e-4 and np.abs(ref_q - ref_f).max() < 1e-6
        m = json.loads((out / "mapping.json").read_text())
        ps = m["decoder"]["projection"]["simulated"]
        assert ps["calib_ppl_float"] == pytest.approx(_ppl(ref_f, ids), rel=1e-5)
        assert ps["calib_ppl_chip"] == pytest.approx(_ppl(ref_q, ids), rel=1e-5)
        assert round(ps["messages_sent"] * N_CALIB) == int((q != 0).sum())
        assert f"{bits}-bit payload" in (out / "report.txt").read_text()


def _geometry(toml_text: str):
    c = tomllib.loads(toml_text)["chip"]
    return c["cores"], c["tiles_x"], c["cores_per_tile"]


def _tile_xy(slot, cores, tiles_x, cpt):
    chip, local = divmod(int(slot), cores)
    tile = local // cpt
    return chip * tiles_x + tile % tiles_x, tile // tiles_x


@pytest.mark.parametrize("act", ["relu", "identity"])
def test_projection_and_decoder_core_counters_equal_a_recount(setup, act):
    """(b) Per projection and decoder core: synops, updates, spikes, messages in / out, hops and energy of the
    simulated eval equal a recount from the PyTorch model's events, the maps in program.npz and the profile;
    the compile-time estimate agrees with the simulation on the calibration text."""
    d, models = setup
    model = models[act]
    out = _compile(d, act, "g32", "--decoder", "chip")
    stack, cores = load_program(out / "program.npz")
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "text.txt"), "--max-tokens", str(N_EVAL),
                                    "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    chip = json.loads(res.output)["chip"]
    T = json.loads(res.output)["tokens"]
    ids = Vocabulary(WORDS).encode_file(d / "text.txt", max_tokens=N_EVAL)[:T]
    _, _, q, _, zero = _reference(model, ids, 32)
    assert not zero.any()
    y = _last_events(model, ids) != 0                                               # [T, h]
    P = model.decoder.projection.weight.detach().numpy() != 0                      # [E, h]
    W = model.decoder.decoder.weight.detach().numpy() != 0                         # [V, E]
    pc, dc = np.asarray(cores.projection_core_of), np.asarray(cores.decoder_core_of)
    text = (d / "g32.toml").read_text()
    geom = _geometry(text)
    pos = {c: _tile_xy(s, *geom) for c, s in enumerate(cores.slot_of_core)}
    n = len(cores.slot_of_core)
    syn, upd, act_upd, spk, m_out, m_in, hops = (np.zeros(n, np.int64) for _ in range(7))
    link_ew, link_ns = np.zeros(n, np.int64), np.zeros(n, np.int64)
    dests = [sorted(set(dc[W[:, e]].tolist())) for e in range(P.shape[0])]        # decoder cores of output e
    for t in range(T):
        sent = np.nonzero(q[t])[0]
        for e in range(P.shape[0]):
            c = pc[e]
            syn[c] += int(P[e, y[t]].sum())
            upd[c] += 1
            if q[t, e]:
                act_upd[c] += 1
                spk[c] += 1
                for k in dests[e]:
                    m_out[c] += 1
                    m_in[k] += 1
                    dx, dy = abs(pos[c][0] - pos[k][0]), abs(pos[c][1] - pos[k][1])
                    hops[c] += dx + dy
                    link_ew[c] += dx
                    link_ns[c] += dy
        for v in range(W.shape[0]):
            syn[dc[v]] += int(W[v, sent].sum())
            upd[dc[v]] += 1
            act_upd[dc[v]] += 1
    proj_in = np.zeros(n, np.int64)                  # the last layer's events reaching projection cores
    for t in range(T):
        for j in np.nonzero(y[t])[0]:
            for c in set(pc[P[:, j]].tolist()):
                proj_in[c] += 1
    got = {k: np.array([round(c[k] * T) for c in chip["cores"]]) for k in
           ("decoder_synops", "updates", "spikes_out", "messages_out", "messages_in", "hops_out")}
    roles = [c["role"] for c in chip["cores"]]
    side = np.array([r != "rnn" for r in roles])
    assert roles.count("projection") == len(set(pc.tolist())) >= 2 and roles.count("decoder") >= 2
    assert (got["decoder_synops"][side] == syn[side]).all()
    got_syn = np.array([round(c["synops"] * T) for c in chip["cores"]])       # a core's synops: all of its work
    assert (got_syn[side] == syn[side]).all()
    assert (got["updates"][side] == upd[side]).all()
    assert (got["spikes_out"][side] == spk[side]).all()
    assert (got["messages_out"][side] == m_out[side]).all()
    assert (got["hops_out"][side] == hops[side]).all() and hops.sum() > 0
    is_proj = np.array([r == "projection" for r in roles])
    assert (got["messages_in"][is_proj] == proj_in[is_proj]).all()
    assert (got["messages_in"][side & ~is_proj] == m_in[side & ~is_proj]).all()
    # energy per core from the profile: synops, updates (active / inactive), and per message 2 flits (header +
    # one 32-bit payload flit) delivered and carried over every link
    e = tomllib.loads(text)["energy"]
    flits = 2
    energy = (syn * e["synop_pj"] + act_upd * e["neuron_active_pj"] + (upd - act_upd) * e["neuron_inactive_pj"]
              + flits * (m_out * e["spike_tile_pj"] + link_ew * e["hop_ew_pj"] + link_ns * e["hop_ns_pj"]))
    got_e = np.array([c["energy_pj"] * T for c in chip["cores"]])
    assert np.allclose(got_e[side], energy[side], rtol=1e-9)
    # compile-time estimate = simulation on the calibration text (linear counters)
    mp = json.loads((out / "mapping.json").read_text())
    tot, st = mp["totals"], mp["simulated"]["totals"]
    assert tot["synops_estimated"] == pytest.approx(st["synops"], rel=1e-9)
    assert st["synops"] == pytest.approx(st["rnn_synops"] + st["decoder_synops"], rel=1e-9)
    assert tot["messages_out"] == pytest.approx(st["messages_out"], rel=1e-6)          # rows rounded to 1e-4
    assert tot["hops_out"] == pytest.approx(st["hops_out"], rel=1e-4)
    assert tot["energy_pj"] == pytest.approx(st["energy_pj"], rel=1e-6)
    assert len(st["layer_phase_ns"]) == 4 and len(tot["layer_phase_ns"]) == 4          # 2 layers, projection, decoder
    assert [c["role"] for c in mp["decoder"]["cores"]].count("projection") == mp["decoder"]["projection"]["cores"]


@pytest.mark.parametrize("target", ["loihi-like", "spinnaker2-like"])
def test_binary_spike_profiles_refuse_in_one_line(setup, target):
    """(c) Binary spikes cannot carry the projection's graded output: one line naming the binding limit,
    nothing written."""
    d, _ = setup
    out = d / f"refused-{target}"
    res = CliRunner().invoke(main, [str(d / "relu.pt"), "--target", target, "--decoder", "chip", "-o", str(out)])
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --decoder chip")
    assert "binding limit: spike payload" in lines[0] and "payload_bits = 0" in lines[0]
    assert not out.exists()


def test_program_with_a_wrong_projection_map_is_refused(setup):
    """program.npz's projection_core_of must give every projection output a core among the program's cores."""
    import io
    d, _ = setup
    out = _compile(d, "relu", "g32", "--decoder", "chip")
    with np.load(out / "program.npz") as z:
        arrays = {k: z[k] for k in z.files}
    stack, cores = load_program(out / "program.npz")
    assert np.array_equal(cores.projection_core_of, arrays["projection_core_of"])
    for bad in (arrays["projection_core_of"][:-1], arrays["projection_core_of"] + len(arrays["slot_of_core"])):
        buf = io.BytesIO()
        np.savez(buf, **dict(arrays, projection_core_of=bad))
        buf.seek(0)
        with pytest.raises(ValueError, match="projection_core_of"):
            load_program(buf)
