"""Batches that share reads (`targets/tvm/shared.py`): B streams per step, each active column's non-zeros read
once for every stream that needs it — and every stream bit for bit its own batch-1 run (events, MACs, NLL and
logits compared with np.array_equal), on a small random model and on the bundled trained example, f32 and
int8, 1, 2 and 3 threads (more threads than cores: every phase of the step's one parallel region
ends at a barrier), B below / above / not a multiple of the vector width; `eval --threads`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_model, ptb_path
from tvm_reference import check_streams_equal_batch1
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint

pytest.importorskip("tvm")

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "ptb-egru-small" / "model.pt"
WORDS = [f"w{i}" for i in range(47)] + ["<eos>"]


def _compile(src, out, *extra):
    res = CliRunner().invoke(main, [str(src), "--target", "tvm", "-o", str(out), *extra])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The sizes of test_tvm_target's model (its compiled kernels come from the session's compile cache)."""
    d = tmp_path_factory.mktemp("shared")
    model = make_model(vocab=48, emb=16, hidden=(40, 16), sparsity=0.8, seed=7, thr=(0.05, 0.3))
    save_checkpoint(d / "m.pt", model, WORDS)
    rng = np.random.default_rng(1)
    (d / "text.txt").write_text("\n".join(" ".join(rng.choice(WORDS[:-1], 12)) for _ in range(12)) + "\n")
    return d, model


def _open(path, threads=None):
    from egru_compile.runtime import open_artifact
    return open_artifact(path) if threads is None else open_artifact(path, threads=threads)


@pytest.mark.parametrize("B,threads", [(4, 1), (20, 2), (37, 3)])
def test_shared_streams_equal_batch1_f32(small, B, threads):
    d, _ = small
    out = d / "f32"
    if not out.exists():
        _compile(d / "m.pt", out)
    r = _open(out, threads)
    assert r.rt.shared_streams and r.native_streams
    ids = r.vocab.encode_file(d / "text.txt")
    _, ev, _ = check_streams_equal_batch1(r, ids, B=B, steps=3)
    # the union (what the block reads): the units active in any of the first block's streams (0..15), recounted
    # from its stream-minor y; the streams' event sets differ, so it is larger than most streams' sets
    h = r.layer_sizes[0]
    un = r.rt._shared.views["un0"][0]
    assert un == (r.rt._shared.views["y0"][:h * 16].reshape(h, 16) != 0).any(axis=1).sum()
    blk0 = ev[-1, :16, 0]
    assert np.median(blk0) < un <= min(blk0.sum(), h) and blk0.max() <= un


def test_shared_streams_equal_batch1_int8(small):
    """int8 layer rows and int8 decoder rows (the calibrated compile), 2 threads, two vector blocks."""
    d, _ = small
    out = _compile(d / "m.pt", d / "int8", "--weight-dtype", "int8", "--decoder-dtype", "int8", "--calib-data",
                   str(d / "text.txt"))
    assert json.loads((out / "manifest.json").read_text())["spec"]["decoder_dtype"] == "int8"
    r = _open(out, threads=2)
    check_streams_equal_batch1(r, r.vocab.encode_file(d / "text.txt"), B=17, steps=2)


@pytest.mark.parametrize("opts", [dict(embed_mode="csc", weight_dtype="f16"), dict(interleave=8)])
def test_step_runner_streams_equal_batch1(small, opts):
    """The dense-embedding scatter of layer 0 (csc) with float16 values through the shared kernels; and a
    spec with interleave 8 (artifacts compiled before interleave 1 was the default), whose streams fall back
    to each stream's batch-1 code (`streams.py`) — bit for bit too."""
    from egru_compile.targets.tvm import TVMStepRunner
    _, model = small
    rt = TVMStepRunner.from_model(model, **opts)
    assert rt.shared_streams == (opts.get("interleave", 1) == 1)
    rng = np.random.default_rng(3)
    T, B = 12, 6
    tok, tg = rng.integers(0, 48, (T, B)), rng.integers(0, 48, (T, B))
    rt.reset_streams(B, threads=2)
    nll, st = rt.score_streams(tok, tg)
    for b in range(B):
        rt.reset()
        n1, s1 = rt.score(tok[:, b], tg[:, b])
        assert np.array_equal(n1, nll[:, b]) and np.array_equal(s1, st[:, b])
    assert st[..., :-1].sum() > 0


def test_bundled_example_streams_equal_batch1(tmp_path):
    """The trained example (vocabulary 10,000, layers 256 / 128), f32 and int8 layer rows, on PTB text."""
    from egru_compile.data import Vocabulary
    text = tmp_path / "valid.txt"
    text.write_text("\n".join(ptb_path("valid").read_text().splitlines()[:12]) + "\n")
    f32 = _compile(EXAMPLE, tmp_path / "f32")
    r = _open(f32, threads=2)
    ids = Vocabulary(r.vocab.words).encode_file(text, unk="<unk>")[:121]
    check_streams_equal_batch1(r, ids, B=5, steps=2)
    q8 = _compile(EXAMPLE, tmp_path / "int8", "--weight-dtype", "int8", "--decoder-dtype", "f32",
                  "--calib-data", str(text))
    check_streams_equal_batch1(_open(q8), ids, B=3)


def test_eval_threads(small):
    """`eval --threads 2 --batch-size B` prints the same figures as one thread (and says so); bad counts and
    a runner without threads are one-line errors."""
    d, _ = small
    out = d / "f32"
    if not out.exists():
        _compile(d / "m.pt", out)
    res = {}
    for th in (1, 2):
        got = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "text.txt"), "--batch-size", "3",
                                        "--threads", str(th), "--json"])
        assert got.exit_code == 0, got.output
        res[th] = json.loads(got.output)
    assert res[2]["threads"] == 2 and res[1]["threads"] == 1
    for k in ("perplexity", "cross_entropy", "macs_per_token", "activity", "streams"):
        assert res[1][k] == res[2][k]
    bad = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "text.txt"), "--threads", "0"])
    assert bad.exit_code != 0 and "--threads" in bad.output
    src = CliRunner().invoke(main, ["eval", str(d / "m.pt"), "--data", str(d / "text.txt"), "--threads", "2"])
    assert src.exit_code != 0 and src.output.strip().startswith("error:") and "--threads" in src.output
    assert len(src.output.strip().splitlines()) == 1


def test_api_evaluate_threads(small):
    from egru_compile.api import load
    d, _ = small
    out = d / "f32"
    if not out.exists():
        _compile(d / "m.pt", out)
    art = load(out)
    one = art.evaluate(d / "text.txt", batch_size=4)
    two = art.evaluate(d / "text.txt", batch_size=4, threads=2)
    assert one.perplexity == two.perplexity and two.to_dict()["threads"] == 2
    assert one.to_dict()["streams"] == two.to_dict()["streams"]


def test_split_points_recount():
    """Per column, part p's non-zeros are exactly those whose row lies in part p's row range; the row ranges
    cover the rows in order and share the non-zeros about equally."""
    from egru_compile.targets.tvm.layout import to_input_major
    from egru_compile.targets.tvm.shared_runner import row_bounds, split_points
    rng = np.random.default_rng(0)
    W = rng.normal(size=(30, 50)) * (rng.random((30, 50)) < 0.3)
    W[:, 40:] *= rng.random((30, 10)) < 0.1             # sparser rows at the end: unequal row ranges
    W[4] = 0                                            # an empty column
    ptr, idx, _ = to_input_major(W, np.int16)
    for parts in (1, 2, 3):
        rb = row_bounds([idx], 50, parts)
        assert rb[0] == 0 and rb[-1] == 50 and (np.diff(rb) >= 0).all()
        counts = [int(((W[:, rb[p]:rb[p + 1]]) != 0).sum()) for p in range(parts)]
        assert max(counts) - min(counts) <= 2 * (W != 0).sum(axis=0).max()
        sp = split_points(ptr, idx, rb)
        for j in range(30):
            for p in range(parts):
                rows = idx[sp[j, p]:sp[j, p + 1]].astype(int)
                want = [i for i in np.flatnonzero(W[j]) if rb[p] <= i < rb[p + 1]]
                assert rows.tolist() == want
