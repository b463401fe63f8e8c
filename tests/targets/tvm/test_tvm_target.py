"""TVM target end to end: compile a checkpoint, load the exported library without recompiling, and match
PyTorch (perplexity, activity, MACs) through `egru-compile eval`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import lm_words, random_lm
from tvm_reference import check_streams_equal_batch1
from egru_compile.cli import main

pytest.importorskip("tvm")

WORDS = lm_words(48)


@pytest.fixture(scope="module")
def tvm_artifact(tmp_path_factory):
    d, model = random_lm(tmp_path_factory, "tvm", vocab=48, emb=16, hidden=(40, 16), sparsity=0.8, seed=2,
                         thr=(0.05, 0.3), lines=25, words_per_line=12)
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "tvm", "-o", str(d / "out")])
    assert res.exit_code == 0, res.output
    return d, model


def test_tvm_artifact_files(tvm_artifact):
    d, _ = tvm_artifact
    manifest = json.loads((d / "out" / "manifest.json").read_text())
    assert manifest["target"] == "tvm"
    assert (d / "out" / manifest["library"]).is_file() and (d / "out" / manifest["weights"]).is_file()


def test_tvm_stream_matches_pytorch_step(tvm_artifact):
    from egru_compile.runtime import open_artifact
    d, model = tvm_artifact
    runner = open_artifact(d / "out")
    ref = open_artifact(d / "m.pt")
    state = model.init_state(1)
    with torch.no_grad():
        for tok in [3, 3, 17, 40, 0, 47, 12, 9, 9, 9, 30]:
            logits, state = model.step(torch.tensor([tok]), state)
            assert np.abs(runner.step(tok) - logits.numpy()[0]).max() < 1e-5
            assert runner.last_stats.events == tuple(int((y != 0).sum()) for _, y in state)
            ref.step(tok)                  # the kernel's own MAC count == the PyTorch runner's
            assert runner.last_stats.macs == ref.last_stats.macs


def test_tvm_eval_matches_source_eval(tvm_artifact):
    d, _ = tvm_artifact
    out = []
    for art in (d / "out", d / "m.pt"):
        res = CliRunner().invoke(main, ["eval", str(art), "--data", str(d / "text.txt"), "--json"])
        assert res.exit_code == 0, res.output
        out.append(json.loads(res.output))
    tvm, src = out
    assert tvm["target"] == "tvm" and src["target"] == "torch"
    assert abs(tvm["perplexity"] / src["perplexity"] - 1) < 1e-3
    assert tvm["macs_per_token"] == src["macs_per_token"]
    assert tvm["tokens"] == src["tokens"] == 12 * 25 + 25 - 1
    assert np.allclose(tvm["activity"], src["activity"])


def test_k_tokens_per_call_matches_streaming(tvm_artifact):
    """egru_run (K tokens per call, used by eval) == egru_step token by token, including activity and MACs."""
    from egru_compile.runtime import open_artifact
    d, _ = tvm_artifact
    a, b = open_artifact(d / "out"), open_artifact(d / "out")
    toks = [3, 3, 17, 40, 0, 47, 12, 9, 9, 9, 30, 5]
    batched = a.run(toks)
    for t, tok in enumerate(toks):
        assert np.abs(b.step(tok) - batched[t]).max() < 1e-6
        assert b.last_stats.events == tuple(a.last_run.events[t]) and b.last_stats.macs == a.last_run.macs[t]


def test_fused_score_matches_the_float64_nll_of_the_logits(tvm_artifact):
    """egru_score (log-softmax + NLL inside the library) == nll_reference of egru_run's logits (<= 1e-6 nats),
    with the same per-step activity and MACs."""
    from egru_compile.runtime import open_artifact
    from egru_compile.runner import nll_reference
    d, _ = tvm_artifact
    r = open_artifact(d / "out")
    toks = r.vocab.encode_file(d / "text.txt")[:120]
    nll = r.score(toks[:-1], toks[1:])
    ev, macs = r.last_run.events.copy(), r.last_run.macs.copy()
    r.reset()
    ref = nll_reference(r.run(toks[:-1]), toks[1:])
    assert nll.dtype == np.float64 and np.abs(nll - ref).max() <= 1e-6
    assert (ev == r.last_run.events).all() and (macs == r.last_run.macs).all()


def test_batched_streams_equal_their_batch1_runs(tvm_artifact):
    from egru_compile.runtime import open_artifact
    d, _ = tvm_artifact
    r = open_artifact(d / "out")
    check_streams_equal_batch1(r, r.vocab.encode_file(d / "text.txt"))


def test_batched_kernels_compiled_on_first_use(tvm_artifact, tmp_path, monkeypatch):
    """The compile leaves the batched-stream kernels out of egru_step.so (compile time); the runner still runs
    B streams natively: it compiles them in a library of their own on the first B-stream call, into the
    compile cache, which the next runner copies instead of compiling."""
    import tvm
    from egru_compile.runtime import open_artifact
    from egru_compile.targets.tvm.step_runner import _function
    d, _ = tvm_artifact
    lib = tvm.runtime.load_module(str(d / "out" / "egru_step.so"))
    assert _function(lib, "egru_score") is not None and _function(lib, "egru_streams_run") is None
    cache = tmp_path / "cache"
    monkeypatch.setenv("EGRU_COMPILE_CACHE", str(cache))
    r = open_artifact(d / "out")
    assert r.native_streams
    before = set(cache.rglob("*.so"))
    r.reset_streams(2)
    built = set(cache.rglob("*.so")) - before
    assert len(built) == 1                                  # the streams library, cached on first use
    r2 = open_artifact(d / "out")
    r2.reset_streams(3)
    assert set(cache.rglob("*.so")) - before == built       # copied from the cache, not compiled again
    res = CliRunner().invoke(main, ["eval", str(d / "out"), "--data", str(d / "text.txt"), "--batch-size", "2",
                                    "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["native_streams"] is True


def _broken_copy(tvm_artifact, tmp_path, edit):
    """A copy of the compiled artifact with `edit(dir, manifest)` applied (manifest written back) and
    re-sealed: a crafted artifact whose checksums are right, so the runner's own checks are what is tested
    (an edit without re-sealing is refused before: tests/e2e/test_security.py)."""
    from egru_compile.artifact import seal
    import shutil
    d, _ = tvm_artifact
    out = tmp_path / "broken"
    shutil.copytree(d / "out", out)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(out, manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    seal(out)
    return out


def _truncate(name):
    def edit(out, manifest):
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[:len(data) // 3])
    return edit


def _set(key, value):
    def edit(out, manifest):
        manifest[key] = value
    return edit


def _set_spec(key, value):
    def edit(out, manifest):
        manifest["spec"][key] = value
    return edit


def _drop_array(name):
    def edit(out, manifest):
        with np.load(out / "weights.npz") as z:
            arrays = {k: z[k] for k in z.files if k != name}
        with open(out / "weights.npz", "wb") as f:
            np.savez(f, **arrays)
    return edit


@pytest.mark.parametrize("edit,needle", [
    (lambda out, m: (out / "egru_step.so").unlink(), "library names 'egru_step.so', which is not a file of the artifact"),
    (lambda out, m: (out / "egru_step.so").write_bytes(b"\x7fELF not really"), "cannot load"),
    (lambda out, m: (out / "weights.npz").unlink(), "weights names 'weights.npz', which is not a file of the artifact"),
    (_truncate("weights.npz"), "weights.npz is unreadable"),
    (_drop_array("l1_R_indices"), "weights.npz is incomplete: no array l1_R_indices"),
    (_set("library", "../m.pt"), "'../m.pt' is not a relative path inside the artifact"),
    (_set("library", "/usr/lib/libc.so.6"), "is not a relative path inside the artifact"),
    (_set("weights", 7), "file name 7 is not a non-empty string"),
    (_set("vocab", "nope.txt"), "vocab names 'nope.txt', which is not a file of the artifact"),
    (_set("spec", None), "has no kernel spec"),
    (_set_spec("index_dtype", "int8"), "bad kernel spec: index_dtype"),
    (_set_spec("colour", "red"), "bad kernel spec"),
    (_set_spec("hidden_sizes", [40, 17]), "does not match the kernel spec"),
    (_set_spec("embed_mode", "csc"), "does not match the weights and kernel spec"),   # the .so has the table
])
def test_broken_artifact_is_a_one_line_error(tvm_artifact, tmp_path, edit, needle):
    from egru_compile.runtime import ArtifactError, open_artifact
    out = _broken_copy(tvm_artifact, tmp_path, edit)
    with pytest.raises(ArtifactError) as e:
        open_artifact(out)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)
    d, _ = tvm_artifact
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(d / "text.txt")])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.output
