"""Neuromorphic targets: placement under capacity limits, exact per-core MAC accounting, simulator parity,
reports and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import random_lm
from egru_compile.cli import main
from egru_compile.frontend import trace_model
from egru_compile.ir import Interpreter, SparseMatrix
from egru_compile.passes import PassManager, PassOptions
from egru_compile.targets.chip import load_profile
from egru_compile.targets.chip.network import build_network
from egru_compile.targets.chip.placement import evaluate, place, sequential_placement, violations
from egru_compile.targets.chip.simulate import ChipSimulator
from egru_compile.targets.stack import EGRUStack, LayerWeights, extract_stack



@pytest.fixture(scope="module")
def chip_model(tmp_path_factory):
    return random_lm(tmp_path_factory, "chip", vocab=60, emb=16, hidden=(96, 64, 16), sparsity=0.8, seed=5,
                     thr=(0.05, 0.3), text="calib.txt", lines=12, words_per_line=15)


def _compile(d, *extra):
    out = d / ("out" + "".join(extra).replace("-", "_"))
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "loihi-like", "-o", str(out), "--force",
                                    "--calib-data", str(d / "calib.txt"), "--report", str(d / "macs.json"),
                                    *extra])
    assert res.exit_code == 0, res.output
    return out, res.output


def test_loihi_compile_writes_reports_and_exact_macs(chip_model):
    d, _ = chip_model
    out, text = _compile(d)
    for f in ("mapping.json", "report.txt", "mapping.png", "manifest.json", "program.npz"):
        assert (out / f).is_file(), f
    m = json.loads((out / "mapping.json").read_text())
    macs = json.loads((d / "macs.json").read_text())
    for key in ("profile", "chips", "cores", "totals", "baseline", "traffic"):
        assert key in m
    for c in m["cores"]:
        for key in ("core", "chip", "x", "y", "units", "synapses", "memory_bytes", "memory_limit_bytes",
                    "synops_static", "synops_estimated", "messages_in", "messages_out", "energy_pj"):
            assert key in c
        assert c["memory_bytes"] <= c["memory_limit_bytes"]
    # per-core measured MACs add up to count-macs' dynamic total on the same calibration tokens, exactly
    T = macs["calib_tokens"]
    assert m["calib_tokens"] == T
    assert sum(c["synop_events_total"] for c in m["cores"]) == round(macs["macs_per_token"]["dynamic"] * T)
    assert m["totals"]["synops_estimated"] == macs["macs_per_token"]["dynamic"]
    assert sum(c["synops_static"] for c in m["cores"]) == macs["macs_per_token"]["static"]
    assert sum(c["units"] for c in m["cores"]) == 96 + 64 + 16
    assert m["totals"]["latency_ns"] > 0 and m["baseline"]["totals"]["energy_pj"] > 0
    assert "traffic:" in text and "int8" in text
    res = CliRunner().invoke(main, ["inspect", str(out)])
    assert res.exit_code == 0 and "traffic:" in res.output
    res = CliRunner().invoke(main, ["inspect", str(out), "--core", "0"])
    assert res.exit_code == 0 and "synops_estimated" in res.output


def _quantized_graph(model, calib=None):
    return PassManager("default,quantize-int8", options=PassOptions(calib_tokens=calib)).run(trace_model(model))


@pytest.mark.parametrize("objective", ["traffic", "latency"])
def test_simulator_matches_unplaced_model(chip_model, objective):
    _, model = chip_model
    graph = _quantized_graph(model)
    stack = extract_stack(graph)
    nets = build_network(stack)
    profile = load_profile("loihi-like")
    seq, pl = place(nets, profile, 4, False, objective=objective)
    sim = ChipSimulator(stack, pl.core_map())
    ref = Interpreter(graph)
    rng = np.random.default_rng(1)
    for _ in range(40):
        tok = int(rng.integers(60))
        assert np.abs(sim.step(tok) - ref.step(tok)[0]).max() < 1e-5


def test_float_weights_simulator_matches_pytorch(chip_model):
    _, model = chip_model
    graph = PassManager(None).run(trace_model(model))
    stack = extract_stack(graph)
    nets = build_network(stack)
    profile = load_profile("loihi-like")
    pl = sequential_placement(nets, profile, 4)
    sim = ChipSimulator(stack, pl.core_map())
    state = model.init_state(1)
    with torch.no_grad():
        for tok in [3, 17, 17, 42, 0, 59, 8, 8, 8, 21]:
            logits, state = model.step(torch.tensor([tok]), state)
            assert np.abs(sim.step(tok) - logits.numpy()[0]).max() < 1e-5


def _random_stack(sizes, emb, density, seed=0, vocab=50):
    rng = np.random.default_rng(seed)
    layers = []
    n_in = emb
    for l, h in enumerate(sizes):
        mats = []
        for shape in ((3 * h, n_in), (3 * h, h)):
            m = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) < density)
            mats.append(SparseMatrix.from_dense(m, "csc"))
        layers.append(LayerWeights(l, n_in, h, mats[0], np.zeros(3 * h, np.float32), mats[1],
                                   np.zeros(3 * h, np.float32), np.full(h, 0.5, np.float32), l > 0))
        n_in = h
    return EGRUStack(rng.standard_normal((vocab, emb)).astype(np.float32), layers,
                     rng.standard_normal((vocab, emb)).astype(np.float32), np.zeros(vocab, np.float32))


def test_ptb_size_pruned_model_fits_one_loihi_chip_dense_needs_more():
    from egru_compile.targets.chip.placement import dense_reference
    stack = _random_stack([1350, 1350, 750], 750, 0.15)
    nets = build_network(stack)
    profile = load_profile("loihi-like")
    seq, pl = place(nets, profile, 16, False)
    costs = evaluate(nets, pl, profile, False)
    assert pl.chips == 1 and not violations(costs, profile)
    dense = dense_reference(nets, profile)
    assert dense["chips"] > 1
    base = evaluate(nets, seq, profile, False)
    assert costs.hops_out.sum() < base.hops_out.sum()          # layout beats the sequential baseline


def test_capacity_overflow_names_resource(chip_model, tmp_path):
    d, _ = chip_model
    text = (load_profile("loihi-like").source and open(load_profile("loihi-like").source).read())
    small = text.replace("cores = 128 ", "cores = 2 ").replace("synapse_memory_bytes = 131072",
                                                               "synapse_memory_bytes = 4096")
    (tmp_path / "tiny.toml").write_text(small)
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "loihi-like", "-o", str(tmp_path / "o"),
                                    "--profile", str(tmp_path / "tiny.toml"), "--max-chips", "1"])
    assert res.exit_code != 0
    assert "limiting resource synaptic memory" in res.output and "x)" in res.output
    assert not (tmp_path / "o").exists()


def test_malformed_profile_is_one_line_error(chip_model, tmp_path):
    d, _ = chip_model
    (tmp_path / "bad.toml").write_text("[chip]\ncores = 'many'\n")
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "loihi-like", "-o", str(tmp_path / "o"),
                                    "--profile", str(tmp_path / "bad.toml")])
    assert res.exit_code != 0 and res.output.startswith("error: chip profile")
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_spinnaker2_target(chip_model):
    d, _ = chip_model
    out = d / "s2"
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "spinnaker2-like", "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "mapping.json").read_text())
    assert m["profile"]["name"] == "spinnaker2-like" and m["calibrated"] is False
    assert all(c["synops_estimated"] is None for c in m["cores"])


def test_mapping_json_is_deterministic(chip_model):
    d, _ = chip_model
    a, _ = _compile(d)
    first = (a / "mapping.json").read_bytes()
    b, _ = _compile(d)
    assert (b / "mapping.json").read_bytes() == first


def test_program_codec_round_trips_stack_and_core_map(tmp_path):
    """program.npz gives back every array it was given (int8 values with scales, float matrices, the
    projection, the unit -> core map, slots and the decoder cores), with the same dtypes."""
    from egru_compile.targets.chip.model import CoreMap
    from egru_compile.targets.chip.program import load_program, save_program
    stack = _random_stack([24, 16], 8, 0.3, vocab=12)
    W = stack.layers[1].W
    stack.layers[1].W = SparseMatrix(W.shape, W.fmt, W.indptr, W.indices,
                                     np.clip(np.round(W.data * 40), -127, 127).astype(np.int8),
                                     np.linspace(0.01, 0.02, W.shape[0]).astype(np.float32))
    stack.projection = SparseMatrix.from_dense(np.eye(8, 16, dtype=np.float32), "csr")
    stack.projection_bias = np.arange(8, dtype=np.float32)
    rng = np.random.default_rng(1)
    cores = CoreMap([rng.integers(0, 3, 24), rng.integers(3, 5, 16)], np.array([4, 0, 9, 2, 7, 5]), 5,
                    np.full(12, 5))
    save_program(tmp_path / "p.npz", stack, cores)
    back, got, dec = load_program(tmp_path / "p.npz", with_decoder=True)
    assert got.n_cores == 5 and np.array_equal(dec, cores.decoder_core_of)
    assert np.array_equal(got.slot_of_core, cores.slot_of_core)
    assert all(np.array_equal(a, b) for a, b in zip(got.core_of, cores.core_of))
    pairs = [(stack.projection, back.projection)]
    for a, b in zip(stack.layers, back.layers):
        assert (a.index, a.n_in, a.hidden, a.events_in) == (b.index, b.n_in, b.hidden, b.events_in)
        assert all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("b", "br", "thr"))
        pairs += [(a.W, b.W), (a.R, b.R)]
    for m, n in pairs:
        assert (m.shape, m.fmt) == (n.shape, n.fmt) and n.data.dtype == m.data.dtype
        for k in ("indptr", "indices", "data", "scale"):
            assert (getattr(m, k) is None) == (getattr(n, k) is None)
            assert getattr(m, k) is None or np.array_equal(getattr(m, k), getattr(n, k)), k
    assert np.array_equal(back.projection_bias, stack.projection_bias)
    for k in ("embedding", "decoder_weight", "decoder_bias"):
        assert np.array_equal(getattr(back, k), getattr(stack, k))
