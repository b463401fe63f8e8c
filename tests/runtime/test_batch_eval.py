"""Batched evaluation (`eval --batch-size B`): the text cut into B contiguous streams; every stream's numbers
equal its own batch-1 run exactly, on every target's runner (PyTorch, IR interpreter, onnx, tvm, chip
simulator with each backend). The scorer's NLL against the all-float64 formula; tokens/s in `eval`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import lm_words, random_lm
from egru_compile.cli import main
from egru_compile.data import DataError, Vocabulary
from egru_compile.frontend import load_source
from egru_compile.passes import PassManager
from egru_compile.runtime import GraphRunner, Runner, StepStats, evaluate, open_artifact
from egru_compile.runtime.evaluate import split_streams
from egru_compile.runner import NllScorer, nll_reference

WORDS = lm_words(60)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d, model = random_lm(tmp_path_factory, "batch", vocab=60, emb=16, hidden=(48, 16), sparsity=0.8, seed=5,
                         thr=(0.05, 0.3), lines=14, words_per_line=15)
    from egru_compile.targets.chip.profile import PROFILE_DIR
    small = (PROFILE_DIR / "loihi-like.toml").read_text().replace("compartments = 1024 ", "compartments = 24 ")
    (d / "small.toml").write_text(small)
    arts = {}
    targets = [("onnx", []), ("loihi-like", ["--profile", str(d / "small.toml"), "--calib-data",
                                             str(d / "text.txt"), "--calib-tokens", "60"])]
    try:
        import tvm  # noqa: F401
        targets.append(("tvm", []))
    except ImportError:
        pass
    for t, extra in targets:
        res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", t, "-o", str(d / t), *extra])
        assert res.exit_code == 0, res.output
        arts[t] = d / t
    return d, arts


def _runners(d, arts):
    src = load_source(d / "m.pt")
    yield "torch", open_artifact(d / "m.pt")
    yield "ir", GraphRunner(PassManager(None).run(src.to_graph()))
    for name, path in arts.items():
        if name == "loihi-like":
            for backend in ("layer", "numpy", "tir"):
                yield f"chip-{backend}", open_artifact(path, backend=backend)
        else:
            yield name, open_artifact(path)


@pytest.mark.parametrize("B,chunk", [(3, 256), (4, 7)])
def test_each_stream_equals_its_batch1_run(setup, B, chunk):
    d, arts = setup
    ids = Vocabulary(WORDS).encode_file(d / "text.txt")
    streams = split_streams(ids, B)
    seen = []
    for name, runner in _runners(d, arts):
        batched = evaluate(runner, ids, quiet=True, chunk=chunk, batch_size=B)
        assert batched["batch_size"] == B and len(batched["streams"]) == B
        L = len(ids) // B
        assert batched["tokens"] == B * (L - 1) and batched["dropped_tokens"] == len(ids) - B * L
        for b in range(B):
            alone = evaluate(runner, streams[b], quiet=True, chunk=chunk)
            got = batched["streams"][b]
            for k in ("tokens", "cross_entropy", "perplexity", "macs_per_token", "activity", "events_per_token"):
                assert got[k] == alone[k], (name, b, k)
        # the totals are over every stream's predictions
        T = L - 1
        assert batched["cross_entropy"] == pytest.approx(
            sum(s["cross_entropy"] for s in batched["streams"]) / B, rel=1e-12)
        assert batched["macs_per_token"] == pytest.approx(
            sum(s["macs_per_token"] * T for s in batched["streams"]) / (B * T), rel=1e-12)
        seen.append(name)
    assert {"torch", "ir", "onnx", "chip-layer", "chip-numpy", "chip-tir"} <= set(seen)


def test_streams_are_contiguous_and_start_from_zero_state(setup):
    """Stream b is ids[b·L:(b+1)·L], evaluated from a zero state: the PyTorch model stepped directly on that
    slice gives the same cross-entropy."""
    import torch
    d, _ = setup
    ids = Vocabulary(WORDS).encode_file(d / "text.txt")
    B, L = 3, len(ids) // 3
    src = load_source(d / "m.pt")
    model = src.model
    res = evaluate(open_artifact(d / "m.pt"), ids, quiet=True, batch_size=B)
    for b in range(B):
        s = ids[b * L:(b + 1) * L]
        state = model.init_state(1)
        nll = 0.0
        with torch.no_grad():
            for t in range(L - 1):
                logits, state = model.step(torch.tensor([int(s[t])]), state)
                nll -= float(torch.log_softmax(logits[0].double(), 0)[int(s[t + 1])])
        assert res["streams"][b]["cross_entropy"] == pytest.approx(nll / (L - 1), rel=1e-6)


def test_split_streams_errors():
    assert split_streams(np.arange(10), 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(DataError, match="at least 2"):
        split_streams(np.arange(5), 3)
    with pytest.raises(DataError):
        split_streams(np.arange(5), 0)


def test_runner_without_state_is_refused():
    class NoState(Runner):
        target = "nostate"
        layer_sizes = (2,)
        vocab_size = 3

        def reset(self):
            pass

        def step(self, token):
            self.last_stats = StepStats((0,), 0)
            return np.zeros(3, np.float32)

    r = NoState()
    assert evaluate(r, [0, 1, 2, 1], quiet=True)["perplexity"] == pytest.approx(3.0)
    with pytest.raises(Exception, match="cannot save its state"):
        evaluate(r, [0, 1, 2, 1], quiet=True, batch_size=2)


def test_scorer_matches_float64_formula():
    rng = np.random.default_rng(1)
    for K, V in ((1, 5), (37, 10_000), (300, 97)):
        x = (rng.standard_normal((K, V)) * 4).astype(np.float32)
        x[0, 0] = 60.0                                   # a large logit: exp must not overflow
        tg = rng.integers(0, V, K)
        sc = NllScorer()
        assert np.abs(sc(x, tg) - nll_reference(x, tg)).max() < 1e-6
        assert np.abs(sc(x[:3], tg[:3]) - nll_reference(x[:3], tg[:3])).max() < 1e-6   # scratch reuse


def test_cli_batch_size_and_tokens_per_second(setup):
    d, arts = setup
    art = str(arts["onnx"])
    res = CliRunner().invoke(main, ["eval", art, "--data", str(d / "text.txt"), "--batch-size", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["batch_size"] == 2 and len(out["streams"]) == 2 and out["tokens_per_second"] > 0
    res = CliRunner().invoke(main, ["eval", art, "--data", str(d / "text.txt")])
    assert res.exit_code == 0 and "tokens/s" in res.output
    res = CliRunner().invoke(main, ["eval", art, "--data", str(d / "text.txt"), "--batch-size", "1000"])
    assert res.exit_code == 1 and res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(main, ["eval", art, "--data", str(d / "text.txt"), "--batch-size", "0"])
    assert res.exit_code == 2
