"""Runtime: open_artifact / runners / streaming evaluation (ONNX vs PyTorch vs IR), data errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_model
from egru_compile.data import DataError, Vocabulary
from egru_compile.frontend import load_source, save_checkpoint
from egru_compile.passes import PassManager, count_macs_for_tokens
from egru_compile.api import evaluate_path
from egru_compile.runtime import (ArtifactError, GraphRunner, Runner, StepStats, TorchRunner, evaluate,
                                  load_eval_tokens, open_artifact, register_runner)
from egru_compile.artifact import seal
from egru_compile.targets import get_target

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """(checkpoint path, compiled dir, data file, optimised graph) of a small pruned 2-layer model."""
    d = tmp_path_factory.mktemp("rt")
    m = make_model(vocab=40, emb=8, hidden=(12, 8), sparsity=0.6, seed=1)
    save_checkpoint(d / "m.pt", m, WORDS)
    src = load_source(d / "m.pt")
    g = PassManager(None).run(src.to_graph())
    (d / "m.onnx").mkdir()
    get_target("onnx")(g, src, d / "m.onnx", {})
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS[:-1], int(rng.integers(5, 15)))) for _ in range(30)]
    (d / "data.txt").write_text("\n".join(lines) + "\n")
    return d / "m.pt", d / "m.onnx", d / "data.txt", g


def test_onnx_eval_matches_torch(artifact):
    ckpt, art, data, g = artifact
    a = evaluate_path(art, data, quiet=True)
    b = evaluate_path(ckpt, data, quiet=True)
    assert a["target"] == "onnx" and b["target"] == "torch"
    assert a["tokens"] == b["tokens"] == len(Vocabulary(WORDS).encode_file(data)) - 1
    assert abs(a["perplexity"] / b["perplexity"] - 1) < 1e-3
    assert abs(a["macs_per_token"] / b["macs_per_token"] - 1) < 5e-3
    assert np.allclose(a["activity"], b["activity"], atol=2e-3)
    assert all(0 < x < 1 for x in a["activity"])
    json.dumps(a)                                   # JSON-serialisable


def test_macs_agree_with_count_macs_pass(artifact):
    ckpt, art, data, g = artifact
    ids = Vocabulary(WORDS).encode_file(data)[:80]
    rep = count_macs_for_tokens(g, ids[:-1])
    for runner in (open_artifact(art), TorchRunner.from_source(load_source(ckpt)), GraphRunner(g)):
        r = evaluate(runner, ids, quiet=True)
        assert r["macs_per_token"] == pytest.approx(rep["macs_per_token"]["dynamic"], rel=5e-3), runner.target
        assert r["activity"] == pytest.approx(rep["activity"], abs=2e-3)


def test_runner_api(artifact):
    _, art, data, _ = artifact
    r = open_artifact(art)
    assert isinstance(r, Runner) and r.target == "onnx" and r.layer_sizes == [12, 8] and r.vocab_size == 40
    assert r.vocab.words == WORDS
    ids = np.array([3, 1, 4, 1, 5, 9, 2, 6], np.int64)
    r.reset()
    logits = r.run(ids)
    assert logits.shape == (8, 40) and logits.dtype == np.float32
    assert r.last_run.events.shape == (8, 2) and r.last_run.macs.shape == (8,)
    r.reset()
    first = r.step(3)
    assert np.array_equal(first, logits[0]) and isinstance(r.last_stats, StepStats)
    slow = open_artifact(art, io_binding=False)
    assert np.array_equal(slow.run(ids), logits)
    assert np.array_equal(slow.last_run.macs, r.last_run.macs)
    torch_r = open_artifact(artifact[0])
    assert np.allclose(torch_r.run(ids), logits, atol=1e-5)
    assert np.array_equal(torch_r.last_run.events, r.last_run.events)
    assert np.array_equal(torch_r.last_run.macs, r.last_run.macs)
    with pytest.raises(ArtifactError, match="outside the vocabulary"):
        r.step(40)


def test_open_artifact_errors_and_registry(tmp_path, artifact, monkeypatch):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        open_artifact(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"target": "fpga-xyz"}))
    with pytest.raises(ArtifactError, match="no file checksums"):
        open_artifact(tmp_path)
    seal(tmp_path)
    with pytest.raises(ArtifactError, match="no runner for target 'fpga-xyz'"):
        open_artifact(tmp_path)
    with pytest.raises(ArtifactError, match="no such file"):
        open_artifact(tmp_path / "nope")

    class Echo(Runner):
        target = "fpga-xyz"
        layer_sizes = [1]
        vocab_size = 3

        def reset(self):
            pass

        def step(self, token):
            self.last_stats = StepStats((1,), 7)
            return np.log(np.full(3, 1 / 3, np.float32))

    from egru_compile.runtime import open as rt_open
    monkeypatch.setattr(rt_open, "RUNNERS", dict(rt_open.RUNNERS))     # the registration ends with the test
    register_runner("fpga-xyz", lambda path, manifest, **kw: Echo())
    r = open_artifact(tmp_path)
    res = evaluate(r, [0, 1, 2, 1], quiet=True)
    assert res["perplexity"] == pytest.approx(3.0) and res["macs_per_token"] == 7 and res["tokens"] == 3
    # vocabulary override must match the model
    (tmp_path / "train.txt").write_text("a b c d\n")
    with pytest.raises(ArtifactError, match="words"):
        open_artifact(artifact[1], vocab_file=tmp_path / "train.txt")


def test_eval_data_errors(tmp_path, artifact):
    _, art, _, _ = artifact
    vocab = Vocabulary(WORDS)
    (tmp_path / "oov.txt").write_text("w1 w2\nw3 zebra w4\n")
    with pytest.raises(DataError, match=r"oov.txt:2: word 'zebra'"):
        load_eval_tokens(tmp_path / "oov.txt", vocab)
    with pytest.raises(DataError, match="zebra"):
        evaluate_path(art, tmp_path / "oov.txt", quiet=True)
    ids = load_eval_tokens(tmp_path / "oov.txt", vocab, unk="w0")
    assert list(ids) == [1, 2, 39, 3, 0, 4, 39]
    res = evaluate_path(art, tmp_path / "oov.txt", unk="w0", quiet=True, max_tokens=5)
    assert res["tokens"] == 4
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_eval_tokens(tmp_path / "empty.txt", vocab)
    with pytest.raises(DataError, match="empty"):
        evaluate_path(art, tmp_path / "empty.txt", quiet=True)
    with pytest.raises(DataError, match="--unk"):
        load_eval_tokens(tmp_path / "oov.txt", vocab, unk="nope")
    with pytest.raises(DataError, match="max-tokens"):
        load_eval_tokens(tmp_path / "oov.txt", vocab, max_tokens=1)
    with pytest.raises(DataError, match="vocabulary"):
        load_eval_tokens(tmp_path / "oov.txt", None)
    with pytest.raises(DataError):
        evaluate(GraphRunner(artifact[3]), [5], quiet=True)


def test_cli_eval(artifact):
    from click.testing import CliRunner
    from egru_compile.cli import main
    _, art, data, _ = artifact
    res = CliRunner().invoke(main, ["eval", str(art), "--data", str(data), "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["target"] == "onnx" and out["perplexity"] > 1
