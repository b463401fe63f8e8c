"""The estimate's phase latency (`model.CoreCosts.phase_ns`, the simulator's latency model: per layer phase
the busiest core's work with one delivery per message it injects, the longest route, the barrier) against
the simulator's latency per token of the same mapping and tokens, on split and unsplit mappings of a small
model (issue 25: the 27M model's split was chosen on an estimate that the simulator contradicted).

Reference: `simulate.ChipSimulator` (itself checked against an independent recount of synops, messages,
hops and energy in test_chip_split.py / test_chip_sim.py); the estimate gets only the activity counts of
the run (per unit: tokens fired, the count-macs convention of `pipeline.measure_unit_activity`)."""
from __future__ import annotations

import numpy as np
import pytest

from egru_compile.targets.chip.profile import load_profile
from test_chip_split import _split_profile

#: per layer phase, |estimate - simulation| / simulation; the estimate takes the busiest core of the mean
#: token, the simulator the busiest core of every token (its mean is higher by the cores' token-to-token
#: spread: up to 7 % here with 8 units per core; 1-3.5 % per phase at 27M synapses)
PHASE_TOL = 0.10
TOTAL_TOL = 0.05


def _stack_and_model():
    from conftest import make_model
    from egru_compile.frontend import trace_model
    from egru_compile.passes import PassManager
    from egru_compile.targets.stack import extract_stack
    model = make_model(vocab=60, emb=16, hidden=(96, 64, 16), sparsity=0.8, seed=5, thr=(0.05, 0.3))
    return extract_stack(PassManager(None).run(trace_model(model)))


def _simulate_and_calibrate(stack, cm, profile, tokens):
    """(simulated ns per token of each RNN phase, the network with the run's activity attached)."""
    from egru_compile.targets.chip.network import attach_activity, build_network
    from egru_compile.targets.chip.simulate import ChipSimulator
    sim = ChipSimulator(stack, cm, profile=profile)
    for tok in tokens:
        sim.step(int(tok))
    nets = build_network(stack)
    T = len(tokens)
    fires = [np.asarray(f, np.int64) for f in sim.fires]
    rec = [f - (y != 0) for f, y in zip(fires, sim.y)]           # y(t - 1) feeds step t: all but the last
    attach_activity(nets, [np.full(nets[0].n_in, T, np.int64)] + fires[:-1], rec, fires, T)
    return sim.phase_ns[:len(nets)] / T, nets


@pytest.mark.parametrize("axons", [40, 90, None])   # every layer split; the middle one; no split
def test_estimated_phase_latency_agrees_with_the_simulation(tmp_path, axons):
    from egru_compile.targets.chip.estimate import estimate_assignment, estimate_split
    from egru_compile.targets.chip.placement import sequential_placement
    from egru_compile.targets.chip.network import build_network
    from egru_compile.targets.chip.split import split_core_map
    stack = _stack_and_model()
    profile = load_profile(str(_split_profile(tmp_path, axons or 400)[0]))
    tokens = np.random.default_rng(3).integers(0, 60, 80)
    if axons:
        cm = split_core_map(build_network(stack), profile)
        assert cm.splits is not None
    else:
        pl = sequential_placement(build_network(stack), profile, 10)
        cm = pl.core_map()
    sim_phase, nets = _simulate_and_calibrate(stack, cm, profile, tokens)
    if axons:
        est = estimate_split(nets, cm, profile, True)
    else:
        est = estimate_assignment(nets, cm.core_of, cm.n_cores, profile, True).at(cm.slot_of_core)
    assert np.all(np.abs(est.phase_ns - sim_phase) <= PHASE_TOL * sim_phase), (est.phase_ns, sim_phase)
    assert abs(est.phase_ns.sum() - sim_phase.sum()) <= TOTAL_TOL * sim_phase.sum()


def _placed(model_kw, profile, n_tokens=40):
    """(simulated phases of the sequential baseline, of the all-layer split, of `place`'s choice; the choice
    and its info; the baseline) on `n_tokens` random tokens."""
    from conftest import make_model
    from egru_compile.frontend import trace_model
    from egru_compile.passes import PassManager
    from egru_compile.targets.chip.network import build_network
    from egru_compile.targets.chip.placement import place, sequential_placement
    from egru_compile.targets.chip.split import crowded, split_core_map
    from egru_compile.targets.stack import extract_stack
    stack = extract_stack(PassManager(None).run(trace_model(make_model(vocab=60, seed=5, thr=(0.05, 0.3),
                                                                       **model_kw))))
    tokens = np.random.default_rng(3).integers(0, 60, n_tokens)
    seq = sequential_placement(build_network(stack), profile, 100)
    assert not crowded(seq)                       # >= 2 units per core in every layer: latency decides
    base, nets = _simulate_and_calibrate(stack, seq.core_map(), profile, tokens)
    full = split_core_map(nets, profile)
    assert full.splits is not None and full.n_cores < seq.n_cores          # the split would need fewer cores
    info: dict = {}
    _, ours = place(nets, profile, 100, True, info=info)
    return (base, _simulate_and_calibrate(stack, full, profile, tokens)[0],
            _simulate_and_calibrate(stack, ours.core_map(), profile, tokens)[0], ours, info, seq)


def test_split_choice_keeps_the_baseline_where_every_split_is_slower(tmp_path):
    """The 27M model's case in miniature (a dense-input layer 0, an axon-bound layer 1 that splits onto 41
    cores instead of 114): the all-layer split (the rule before) simulates > 10 % slower than the baseline;
    `place` keeps no split and says why."""
    from test_chip_scale_split import _loihi2
    profile = _loihi2(tmp_path, synapse_memory_bytes=8192, input_axons=384, output_axons=1024)
    base, full, _, ours, info, _ = _placed(dict(emb=64, hidden=(256, 256, 64), sparsity=0.85), profile)
    assert full.sum() > 1.1 * base.sum(), (full.sum(), base.sum())
    assert ours.splits is None and "no fan-in split within" in info["split_choice"]


def test_split_choice_splits_where_it_is_no_slower(tmp_path):
    """Layer 1 splits (26 cores instead of 72) and the choice simulates no slower than the baseline (within
    the choice's margin plus the estimate's tolerance)."""
    from egru_compile.targets.chip.split_choice import SPLIT_LATENCY_MARGIN
    path = _split_profile(tmp_path, 160)[0]
    path.write_text(path.read_text().replace("compartments = 24 ", "compartments = 48 "))
    base, _, sim, ours, info, seq = _placed(dict(emb=32, hidden=(128, 128, 32), sparsity=0.85),
                                            load_profile(str(path)))
    assert ours.splits is not None and ours.n_cores < seq.n_cores
    assert [s is not None for s in ours.splits] == [False, True, False]
    assert sim.sum() <= base.sum() * (1 + SPLIT_LATENCY_MARGIN + TOTAL_TOL), (sim.sum(), base.sum())
