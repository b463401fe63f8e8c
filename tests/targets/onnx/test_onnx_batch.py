"""Batched streams (symbolic B) on the ONNX target and the runner interface: every stream of a B-stream run
equals its own batch-1 run — logits, states, per-stream events and MACs bit for bit, NLL to float64
rounding of the same float32 logits — on a small random model and on the bundled trained example (f32 and
int8 rows); the base-class fallback and the PyTorch runner likewise; the batched model's I/O is symbolic."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from conftest import lm_words, ptb_path, random_lm
from egru_compile.cli import main
from egru_compile.data import Vocabulary
from egru_compile.frontend import load_source
from egru_compile.passes import PassManager
from egru_compile.runtime import GraphRunner, Runner, evaluate, open_artifact
from egru_compile.runtime.evaluate import split_streams
from egru_compile.targets.onnx.batch import BATCH_DIM, batch_model

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "ptb-egru-small" / "model.pt"
WORDS = lm_words(60)


def _compile(src, out, *extra):
    res = CliRunner().invoke(main, [str(src), "--target", "onnx", "-o", str(out), *extra])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d, _ = random_lm(tmp_path_factory, "onnxb", vocab=60, emb=16, hidden=(48, 16), sparsity=0.8, seed=5,
                     thr=(0.05, 0.3), lines=14, words_per_line=15)
    arts = {"f32": _compile(d / "m.pt", d / "f32"),
            "f16": _compile(d / "m.pt", d / "f16", "--weight-dtype", "f16"),
            "int8": _compile(d / "m.pt", d / "int8", "--passes", "default,quantize-int8", "--weight-dtype", "int8"),
            "int8dec": _compile(d / "m.pt", d / "int8dec", "--passes", "default,quantize-int8", "--weight-dtype",
                                "int8", "--decoder-dtype", "int8")}
    ids = Vocabulary(WORDS).encode_file(d / "text.txt")
    return d, arts, ids


def _alone(runner, stream):
    """Batch-1 reference: logits [T, V], events [T, L], macs [T] and NLL [T] of one stream from a zero state."""
    runner.reset()
    logits = runner.run(stream[:-1])
    run = runner.last_run
    runner.reset()
    nll = runner.score(stream[:-1], stream[1:])
    return logits, run.events, run.macs, nll


def _check_streams(runner, ids, B):
    streams = split_streams(ids, B)
    toks, tgts = streams[:, :-1].T, streams[:, 1:].T          # [T, B]
    runner.reset_streams(B)
    logits = []
    ev, mc = [], []
    for t in range(len(toks)):
        logits.append(runner.step_streams(toks[t]))
        ev.append(runner.last_stream_stats.events)
        mc.append(runner.last_stream_stats.macs)
    logits, ev, mc = np.stack(logits), np.stack(ev), np.stack(mc)     # [T,B,V], [T,B,L], [T,B]
    runner.reset_streams(B)
    nll = runner.score_streams(toks, tgts)
    run = runner.last_run
    assert nll.shape == toks.shape and run.events.shape == (len(toks), B, len(runner.layer_sizes))
    for b in range(B):
        a_logits, a_ev, a_mc, a_nll = _alone(runner, streams[b])
        assert np.array_equal(logits[:, b], a_logits), (B, b, np.abs(logits[:, b] - a_logits).max())
        assert np.array_equal(ev[:, b], a_ev) and np.array_equal(run.events[:, b], a_ev), b
        assert np.array_equal(mc[:, b], a_mc) and np.array_equal(run.macs[:, b], a_mc), b
        assert np.array_equal(nll[:, b], a_nll), b
    assert ev.sum() > 0                                        # streams did fire


@pytest.mark.parametrize("dtype", ["f32", "f16", "int8", "int8dec"])
def test_onnx_streams_equal_batch1_small(small, dtype):
    _, arts, ids = small
    r = open_artifact(arts[dtype])
    assert r.native_streams
    if dtype == "int8dec":      # the decoder gathers int8 rows too (EventMatVecQ, batched per stream)
        assert r.manifest["decoder_precision"]["dtype"] == "int8"
    for B in (1, 4, 7):
        _check_streams(r, ids, B)


def test_onnx_streams_equal_batch1_trained_example(tmp_path):
    if not EXAMPLE.is_file():
        pytest.skip("bundled example missing")
    src = load_source(EXAMPLE)
    ids = src.vocab.encode_file(ptb_path("valid"), max_tokens=4 * 120, unk="<unk>")
    for name, extra in (("f32", ()), ("int8", ("--passes", "default,quantize-int8", "--weight-dtype", "int8"))):
        r = open_artifact(_compile(EXAMPLE, tmp_path / name, *extra))
        _check_streams(r, ids, 4)
        # and through eval: each stream's figures equal its own batch-1 evaluation (NLL within 1e-6 rel)
        res = evaluate(r, ids, quiet=True, batch_size=4)
        assert res["native_streams"] is True
        for b, s in enumerate(split_streams(ids, 4)):
            alone = evaluate(r, s, quiet=True)
            got = res["streams"][b]
            assert got["cross_entropy"] == pytest.approx(alone["cross_entropy"], rel=1e-6, abs=0)
            assert got["events_per_token"] == alone["events_per_token"] and got["macs_per_token"] == alone["macs_per_token"]


def test_batched_model_is_symbolic(small):
    _, arts, _ = small
    m = batch_model(onnx.load(str(arts["f32"] / "model.onnx")))
    onnx.checker.check_model(m, full_check=True)
    for vi in list(m.graph.input) + list(m.graph.output):
        assert vi.type.tensor_type.shape.dim[0].dim_param == BATCH_DIM, vi.name
    # the batch-1 file is untouched: leading dimension 1 everywhere
    m1 = onnx.load(str(arts["f32"] / "model.onnx"))
    assert all(vi.type.tensor_type.shape.dim[0].dim_value == 1 for vi in m1.graph.output)


def test_fallback_and_torch_streams_equal_batch1(small):
    """The base-class fallback (IR interpreter, no native streams) and the PyTorch runner."""
    d, _, ids = small
    src = load_source(d / "m.pt")
    g = GraphRunner(PassManager(None).run(src.to_graph()))
    assert not g.native_streams
    _check_streams(g, ids, 3)
    t = open_artifact(d / "m.pt")
    _check_streams(t, ids, 3)


def test_stream_errors(small):
    from egru_compile.errors import EgruError
    _, arts, _ = small
    r = open_artifact(arts["f32"])
    with pytest.raises(EgruError):
        r.step_streams([1, 2])                                  # before reset_streams
    r.reset_streams(2)
    with pytest.raises(EgruError):
        r.step_streams([1, 2, 3])
    with pytest.raises(EgruError, match="outside the vocabulary"):
        r.step_streams([1, 600])
    assert isinstance(r, Runner)


def test_batch_model_refuses_unbatchable_event_uses():
    """compress_events results read by other ops (padded 1-D semantics) cannot be batched: a one-line error."""
    from test_onnx import hand_built
    from egru_compile.targets.onnx import OnnxLoweringError, lower_graph
    low = lower_graph(hand_built(expose_events=True))
    with pytest.raises(OnnxLoweringError, match="only event products can be batched"):
        batch_model(low.model)
