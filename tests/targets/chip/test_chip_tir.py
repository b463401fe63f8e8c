"""Chip simulator with per-core TIR programs: the TIR backend (each core's slice on the TVM kernel library),
the numpy reference backend and the unplaced IR interpreter agree step by step, and both backends count the
same synaptic ops and delivered spikes."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")

from conftest import make_model  # noqa: E402
from egru_compile.frontend import trace_model  # noqa: E402
from egru_compile.ir import Interpreter  # noqa: E402
from egru_compile.passes import PassManager, PassOptions  # noqa: E402
from egru_compile.targets.chip import load_profile  # noqa: E402
from egru_compile.targets.chip.kernels import CoreProgram, tvm_available  # noqa: E402
from egru_compile.targets.chip.network import build_network  # noqa: E402
from egru_compile.targets.chip.placement import Placement, place  # noqa: E402
from egru_compile.targets.chip.simulate import ChipSimulator, default_backend  # noqa: E402
from egru_compile.targets.stack import extract_stack  # noqa: E402


@pytest.fixture(scope="module")
def placed():
    model = make_model(vocab=60, emb=16, hidden=(96, 64, 16), sparsity=0.8, seed=5, thr=(0.05, 0.3))
    graph = PassManager("default,quantize-int8", options=PassOptions(calib_tokens=None)).run(trace_model(model))
    stack = extract_stack(graph)
    nets = build_network(stack)
    profile = load_profile("loihi-like")
    _, balanced = place(nets, profile, 4, False, objective="latency")
    # hand-made: every layer split over several cores, interleaved units, core ids 3 and 5 hold two layers
    # (routing is per core id, delivery must still reach only the right layer's synapses)
    rng = np.random.default_rng(7)
    core_of = [rng.permutation(np.arange(96) % 4), 3 + np.arange(64) % 3, 5 + np.arange(16) % 2]
    split = Placement("split", core_of, np.arange(7), 7, 1)
    return graph, stack, nets, {"balanced": balanced, "split": split}


def test_default_backend_is_tir():
    assert tvm_available() and default_backend() == "tir"


@pytest.mark.parametrize("which", ["balanced", "split"])
def test_tir_numpy_and_unplaced_model_agree(placed, which):
    graph, stack, nets, pls = placed
    pl = pls[which]
    tir = ChipSimulator(stack, pl.core_map(), backend="tir")
    ref_sim = ChipSimulator(stack, pl.core_map(), backend="numpy")
    assert tir.backend == "tir" and ref_sim.backend == "numpy"
    assert len(tir.cores) >= 4 and all(c.prog is not None for c in tir.cores)
    assert len(tir.layer_cores[0]) > 1 or len(tir.layer_cores[1]) > 1
    ref = Interpreter(graph)
    rng = np.random.default_rng(1)
    total_spikes = 0
    for _ in range(40):
        tok = int(rng.integers(60))
        a, b, r = tir.step(tok), ref_sim.step(tok), ref.step(tok)[0]
        assert np.abs(a - b).max() < 1e-5
        assert np.abs(a - r).max() < 1e-5 and np.abs(b - r).max() < 1e-5
        for l in range(len(stack.layers)):
            assert np.abs(tir.y[l] - ref_sim.y[l]).max() < 1e-5
            assert np.abs(tir.c[l] - ref_sim.c[l]).max() < 1e-5
        assert tir.last_synops == ref_sim.last_synops
        assert np.array_equal(tir.last_active, ref_sim.last_active)
        total_spikes += int(tir.last_active.sum())
    assert total_spikes > 0                      # the run exercises the event paths
    sa, sb = tir.stats(), ref_sim.stats()
    assert np.array_equal(sa["synops_total"], sb["synops_total"])
    assert np.array_equal(sa["spikes_in_total"], sb["spikes_in_total"])
    assert sa["activity"] == sb["activity"] and sa["steps"] == sb["steps"] == 40
    for ca, cb in zip(tir.cores, ref_sim.cores):
        assert (ca.id, ca.synops, ca.spikes_in) == (cb.id, cb.synops, cb.spikes_in)
        assert np.array_equal(ca.fan_in, cb.fan_in) and np.array_equal(ca.fan_rec, cb.fan_rec)


def test_reset_restarts_tir_state(placed):
    _, stack, nets, pls = placed
    pl = pls["split"]
    sim = ChipSimulator(stack, pl.core_map(), backend="tir")
    toks = [3, 17, 42, 0, 59, 8, 8, 21]
    first = np.stack([sim.step(t) for t in toks])
    counts = sim.stats()["synops_total"].copy()
    sim.reset()
    assert sim.steps == 0 and sim.stats()["synops_total"].sum() == 0
    second = np.stack([sim.step(t) for t in toks])
    assert np.array_equal(first, second)
    assert np.array_equal(counts, sim.stats()["synops_total"])


def test_core_program_matches_dense_math():
    """One core's TIR program against the numpy formula (events, dense input, empty blocks)."""
    rng = np.random.default_rng(0)
    n_in, h, n = 20, 12, 5
    w_in = rng.standard_normal((n_in, 3 * n)).astype(np.float32) * (rng.random((n_in, 3 * n)) < 0.3)
    w_rec = np.zeros((h, 3 * n), np.float32)                 # no local recurrent synapses at all
    b, br = rng.standard_normal(3 * n).astype(np.float32), rng.standard_normal(3 * n).astype(np.float32)
    thr = np.full(n, 0.1, np.float32)
    p = CoreProgram(w_in, w_rec, b, br, thr, dense_input=False)
    assert np.array_equal(p.fan_in, np.count_nonzero(w_in, axis=1)) and p.fan_rec.sum() == 0
    idx = np.array([1, 4, 7, 19])
    val = rng.standard_normal(4).astype(np.float32)
    p.set_input_events([(idx[:2], val[:2]), (idx[2:], val[2:])])
    p.set_rec_events([])
    p.run()
    gx = b + val @ w_in[idx]
    assert np.abs(np.from_dlpack(p.t["gx"]) - gx).max() < 1e-5
    assert np.abs(np.from_dlpack(p.t["gh"]) - br).max() < 1e-6
    x = rng.standard_normal(n_in).astype(np.float32)
    q = CoreProgram(w_in, w_rec, b, br, thr, dense_input=True)
    q.set_dense_input(x)
    q.set_rec_events([])
    q.run()
    assert np.abs(np.from_dlpack(q.t["gx"]) - (b + x @ w_in)).max() < 1e-5
    on = int(q.v["on"][0])
    assert on == np.count_nonzero(q.y) and np.array_equal(q.v["oi"][:on], np.flatnonzero(q.y))
