"""Property-based parity (hypothesis): for random small EGRUs × random masks × random thresholds, PyTorch ==
IR interpreter (before and after the pass pipeline) == ONNX Runtime == chip simulator (TIR per-core
kernels), step by step; and the TVM fused step on a few of them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_model
from egru_compile.frontend import trace_model
from egru_compile.ir import Interpreter
from egru_compile.passes import PassManager

TOL = 2e-5


@st.composite
def egru_cases(draw):
    n_layers = draw(st.integers(1, 3))
    emb = draw(st.integers(3, 12))
    hidden = [draw(st.integers(3, 20)) for _ in range(n_layers - 1)] + [emb]
    vocab = draw(st.integers(5, 30))
    sparsity = draw(st.sampled_from([0.0, 0.3, 0.7, 0.95]))
    lo = draw(st.floats(0.0, 0.5))
    hi = draw(st.floats(lo, 1.0))
    seed = draw(st.integers(0, 10_000))
    steps = draw(st.lists(st.integers(0, vocab - 1), min_size=5, max_size=25))
    return dict(vocab=vocab, emb=emb, hidden=tuple(hidden), sparsity=sparsity, thr=(lo, hi), seed=seed), steps


def _torch_steps(model, tokens):
    state = model.init_state(1)
    out = []
    with torch.no_grad():
        for t in tokens:
            logits, state = model.step(torch.tensor([t]), state)
            out.append(logits.numpy()[0].copy())
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(egru_cases())
def test_all_backends_agree_step_by_step(tmp_path_factory, case):
    from egru_compile.runtime import open_artifact
    from egru_compile.targets import get_target
    compile_onnx = get_target("onnx")             # compile + seal, as the CLI does
    from egru_compile.targets.chip import load_profile
    from egru_compile.targets.chip.network import build_network
    from egru_compile.targets.chip.placement import place
    from egru_compile.targets.chip.simulate import ChipSimulator
    from egru_compile.targets.stack import extract_stack

    kw, tokens = case
    model = make_model(**kw)
    ref = _torch_steps(model, tokens)
    raw = trace_model(model)
    opt = PassManager(None).run(raw)
    out_dir = tmp_path_factory.mktemp("onnx")
    compile_onnx(opt, None, out_dir, {})
    ort = open_artifact(out_dir)
    stack = extract_stack(opt)
    nets = build_network(stack)
    profile = load_profile("loihi-like")
    _, pl = place(nets, profile, 4, False, objective="latency")
    sim = ChipSimulator(stack, pl.core_map())
    a, b = Interpreter(raw), Interpreter(opt)
    for t, r in zip(tokens, ref):
        for name, got in (("interpreter", a.step(t)[0]), ("optimised IR", b.step(t)[0]),
                          ("onnxruntime", ort.step(t)), ("chip simulator", sim.step(t))):
            assert np.abs(np.asarray(got).reshape(-1) - r).max() < TOL, (name, kw)


@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(egru_cases())
def test_tvm_fused_step_agrees(case):
    pytest.importorskip("tvm")
    from egru_compile.targets.tvm import TVMStepRunner
    from egru_compile.targets.tvm.target import stack_layer_arrays
    from egru_compile.targets.stack import extract_stack
    kw, tokens = case
    model = make_model(**kw)
    ref = _torch_steps(model, tokens)
    stack = extract_stack(PassManager(None).run(trace_model(model)))
    rt = TVMStepRunner(stack.embedding, stack_layer_arrays(stack), stack.decoder_bias, stack.decoder_weight)
    for t, r in zip(tokens, ref):
        assert np.abs(rt.step(t) - r).max() < TOL, kw
