"""count-macs: the MAC report, its exactness invariant and the multiplicative law.

dynamic MACs/token == (sum over tokens of the active input units' non-zero fan-outs) / #tokens, with the
embedding input fully active, zero initial state and state carried across tokens.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from egru_compile.frontend import trace_model
from egru_compile.passes import MacReport, PassManager, PassOptions, count_macs_for_tokens, macs_report
from egru_compile.passes.testing import make_pruned_model


def exact_macs(model, masks: dict, tokens: np.ndarray) -> tuple[int, list[int], list[int], list[np.ndarray]]:
    """Independent count from the PyTorch model's y's and the masks: (total, input per layer, recurrent
    per layer, y's per layer)."""
    with torch.no_grad():
        _, _, ys = model(torch.as_tensor(tokens)[:, None], return_activity=True)
    ys = [y[:, 0].numpy() for y in ys]
    T = len(tokens)
    inp, rec = [], []
    for l in range(len(ys)):
        fan_in = masks[f"rnns.{l}.kernel"].astype(bool).sum(axis=1)        # fan-out of each input unit
        fan_rec = masks[f"rnns.{l}.recurrent_kernel"].astype(bool).sum(axis=1)
        if l == 0:
            inp.append(int(fan_in.sum()) * T)                             # embedding: fully active
        else:
            inp.append(int(sum(fan_in[ys[l - 1][t] != 0].sum() for t in range(T))))
        rec.append(int(sum(fan_rec[ys[l][t - 1] != 0].sum() for t in range(1, T))))   # y_{-1} = 0
    return sum(inp) + sum(rec), inp, rec, ys


@pytest.fixture(scope="module")
def small():
    model, masks = make_pruned_model(40, 16, [24, 16], density=0.4, seed=3)
    with torch.no_grad():
        model.embeddings.weight.uniform_(-1.0, 1.0)
        for layer in model.rnns:
            layer.thr.fill_(0.02)
    return model, masks, trace_model(model)


def test_report_structure_and_static(small):
    model, masks, g = small
    out = PassManager().run(g)
    rep = macs_report(out)
    assert rep == out.analyses.get(MacReport).to_json()
    json.dumps(rep)                                     # JSON-serialisable
    assert set(rep) >= {"macs_per_token", "layers", "activity", "density", "decoder_macs_per_token",
                        "calib_tokens"}
    mp = rep["macs_per_token"]
    assert mp["dense"] == (16 + 24) * 72 + (24 + 16) * 48
    assert mp["static"] == sum(int(m.sum()) for m in masks.values())
    assert mp["dynamic"] is None and rep["activity"] == [None, None] and rep["calib_tokens"] == 0
    for row in rep["layers"]:
        l = row["layer"]
        assert set(row) >= {"layer", "input", "recurrent", "input_static", "recurrent_static", "activity",
                            "input_density", "recurrent_density"}
        assert row["input_static"] == int(masks[f"rnns.{l}.kernel"].sum())
        assert row["recurrent_static"] == int(masks[f"rnns.{l}.recurrent_kernel"].sum())
        assert row["input_density"] == pytest.approx(masks[f"rnns.{l}.kernel"].mean())
        assert row["input"] is None and row["recurrent"] is None
    assert rep["density"] == {k: pytest.approx(float(m.mean())) for k, m in masks.items()}
    assert rep["decoder_macs_per_token"] == 40 * 16


def test_dynamic_equals_exact_fanout_sum(small):
    model, masks, g = small
    tokens = np.random.default_rng(0).integers(0, 40, 120)
    out = PassManager(options=PassOptions(calib_tokens=tokens)).run(g)
    rep = out.analyses.get(MacReport).to_json()
    total, inp, rec, ys = exact_macs(model, masks, tokens)
    T = len(tokens)
    assert rep["calib_tokens"] == T
    assert rep["macs_per_token"]["dynamic"] * T == pytest.approx(total, rel=1e-12, abs=0)
    for row in rep["layers"]:
        l = row["layer"]
        assert row["input"] * T == pytest.approx(inp[l], rel=1e-12)
        assert row["recurrent"] * T == pytest.approx(rec[l], rel=1e-12)
        assert row["activity"] == pytest.approx(float(np.mean(ys[l] != 0)))
        assert 0.05 < row["activity"] < 0.95, "test model should be partially active"
    # reusable entry point, and the same count on the un-compiled traced graph (dense matmuls of mask*orig)
    assert count_macs_for_tokens(out, tokens) == rep
    raw = count_macs_for_tokens(g, tokens)
    assert raw["macs_per_token"] == rep["macs_per_token"]
    assert [r["layer"] for r in raw["layers"]] == [0, 1]


def test_static_macs_of_750_1350_1350_750(monkeypatch):
    """Dense EGRU, embedding 750, hidden [1350, 1350, 750]: sum over layers of (in + h) * 3h."""
    from egru_compile.model import EGRUConfig, EGRULanguageModel

    def fill(t, *a, **k):       # skip the slow (QR) initialisation; any non-zero weights will do
        with torch.no_grad():
            return t.fill_(0.01)
    monkeypatch.setattr(torch.nn.init, "orthogonal_", fill)
    monkeypatch.setattr(torch.nn.init, "xavier_uniform_", fill)
    model = EGRULanguageModel(EGRUConfig(vocab_size=100, embedding_size=750, hidden_sizes=[1350, 1350, 750]))
    g = trace_model(model)
    expected = (750 + 1350) * 3 * 1350 + (1350 + 1350) * 3 * 1350 + (1350 + 750) * 3 * 750
    out = PassManager().run(g)
    mp = macs_report(out)["macs_per_token"]
    assert mp["dense"] == mp["static"] == expected == 24_165_000
    assert macs_report(out)["decoder_macs_per_token"] == 750 * 100


def _set_thr_for_activity(model, tokens, target: float) -> None:
    """Per-layer scalar threshold found by bisection so that each layer's activity is about `target`."""
    x = torch.as_tensor(tokens)[:, None]
    with torch.no_grad():
        for l, layer in enumerate(model.rnns):
            lo, hi = 0.0, 0.5
            for _ in range(9):
                layer.thr.fill_((lo + hi) / 2)
                _, _, ys = model(x, return_activity=True)
                if float((ys[l] != 0).float().mean()) > target:
                    lo = (lo + hi) / 2
                else:
                    hi = (lo + hi) / 2
            layer.thr.fill_((lo + hi) / 2)


def _with_thresholds(graph, model):
    """Copy of the traced graph with the model's current thresholds (saves re-tracing per threshold)."""
    g = graph.clone()
    for n in g.const_nodes():
        label = n.attrs.get("label", "")
        if label.startswith("rnns.") and label.endswith(".thr"):
            n.attrs["data"] = model.rnns[int(label.split(".")[1])].thr.detach().numpy().copy()
    return g


@pytest.mark.parametrize("density", [1.0, 0.5, 0.15])
def test_multiplicative_law(density):
    """For activity ≈ 0.5 and ≈ 0.2: dynamic MACs == exact fan-out sum (from the PyTorch y's and the masks),
    and ≈ dense × density × activity (within 5 %)."""
    H, V, T = 224, 100, 250
    model, masks = make_pruned_model(V, H, [H, H], density=density, seed=7)
    with torch.no_grad():
        model.embeddings.weight.uniform_(-1.0, 1.0)
    tokens = np.random.default_rng(7).integers(0, V, T)
    traced = trace_model(model)
    for target in (0.5, 0.2):
        _set_thr_for_activity(model, tokens[:80], target)
        out = PassManager(options=PassOptions(calib_tokens=tokens)).run(_with_thresholds(traced, model))
        rep = out.analyses.get(MacReport).to_json()
        total, _, _, ys = exact_macs(model, masks, tokens)
        dyn = rep["macs_per_token"]["dynamic"]
        assert dyn * T == pytest.approx(total, rel=1e-12)
        act = rep["activity"]
        assert all(abs(a - target) < 0.1 for a in act), act
        law = 0.0
        for row in rep["layers"]:
            l = row["layer"]
            a_in = 1.0 if l == 0 else act[l - 1]
            law += row["input_dense"] * row["input_density"] * a_in
            law += row["recurrent_dense"] * row["recurrent_density"] * act[l]
            assert row["input_density"] == pytest.approx(density, abs=0.02)
        assert dyn == pytest.approx(law, rel=0.05)


def test_count_macs_reuses_quantize_activity_only_when_valid(small):
    """quantize-int8's perplexity run leaves an ObservedActivity; count-macs right after it gives exactly the
    MacReport / UnitActivity a fresh count-macs (own interpreter run) gives on the same int8 graph, and the
    record is not used for other tokens or a changed graph."""
    from egru_compile.passes import UnitActivity, build_pipeline
    from egru_compile.passes.count_macs import ObservedActivity, measure_macs
    from egru_compile.runtime.evaluate import graph_perplexity
    model, masks, g = small
    tokens = np.random.default_rng(5).integers(0, 40, 90)
    names = build_pipeline(None, {"int8-weights"})
    assert names.index("quantize-int8") < names.index("count-macs")
    pre = PassManager(names[:names.index("count-macs")],
                      options=PassOptions(calib_tokens=tokens, perplexity=graph_perplexity)).run(g)
    obs = pre.analyses.get(ObservedActivity)
    assert obs is not None and obs.valid_for(pre, tokens)
    assert not obs.valid_for(pre, tokens[:-1]) and not obs.valid_for(pre, tokens[::-1].copy())
    rep_fresh, units_fresh = measure_macs(pre.clone(), tokens)      # a clone holds no ObservedActivity
    import egru_compile.passes.count_macs as cm
    measure = cm._measure
    cm._measure = None                               # the reused record must serve: no interpreter run
    try:
        out = PassManager(["count-macs"], options=PassOptions(calib_tokens=tokens)).run(pre, inplace=True)
    finally:
        cm._measure = measure
    assert out.analyses.get(ObservedActivity) is None                # consumed
    assert out.analyses.get(MacReport).to_json() == rep_fresh.to_json()
    u = out.analyses.get(UnitActivity)
    assert u.fires.keys() == units_fresh.fires.keys()
    for l in u.fires:
        np.testing.assert_array_equal(u.fires[l], units_fresh.fires[l])
        np.testing.assert_array_equal(u.last[l], units_fresh.last[l])
    # a graph changed after the record (a constant replaced) does not match it
    obs2 = PassManager(names[:names.index("count-macs")],
                       options=PassOptions(calib_tokens=tokens, perplexity=graph_perplexity)).run(g)
    rec = obs2.analyses.get(ObservedActivity)
    c = next(n for n in obs2.nodes if n.is_const)
    c.attrs["data"] = np.array(c.attrs["data"], copy=True)
    assert not rec.valid_for(obs2, tokens)
