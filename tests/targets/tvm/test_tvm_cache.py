"""The TVM compile cache (`targets/tvm/cache.py`): a compile of a spec already built copies the cached library,
and the copy computes what PyTorch computes; a damaged entry is rebuilt, never loaded; an unsafe folder is
not used."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint

pytest.importorskip("tvm")

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]


def _compile(tmp_path, seed):
    model = make_model(vocab=40, emb=8, hidden=(12, 8), sparsity=0.5, seed=seed)
    save_checkpoint(tmp_path / f"m{seed}.pt", model, WORDS)
    out = tmp_path / f"out{seed}"
    res = CliRunner().invoke(main, [str(tmp_path / f"m{seed}.pt"), "--target", "tvm", "-o", str(out)])
    assert res.exit_code == 0, res.output
    return model, out, (out / "report.txt").read_text()


def _matches_pytorch(model, out):
    from egru_compile.runtime import open_artifact
    runner = open_artifact(out)
    state = model.init_state(1)
    with torch.no_grad():
        for tok in [3, 3, 17, 39, 0, 12, 9, 9, 30]:
            logits, state = model.step(torch.tensor([tok]), state)
            assert np.abs(runner.step(tok) - logits.numpy()[0]).max() < 1e-5
            assert runner.last_stats.events == tuple(int((y != 0).sum()) for _, y in state)


def test_equal_spec_is_copied_from_the_cache_and_a_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    from egru_compile.targets.tvm.cache import cache_dir
    monkeypatch.setenv("EGRU_COMPILE_CACHE", str(tmp_path / "cache"))
    _, _, first = _compile(tmp_path, 0)
    assert "kernels compiled in" in first
    entries = sorted(cache_dir().glob("*.so"))
    assert len(entries) == 1
    model, out, second = _compile(tmp_path, 1)            # other weights, same sizes: same library
    assert "copied from the compile cache" in second
    _matches_pytorch(model, out)

    from egru_compile.targets.tvm.cache import _cached
    key = entries[0].stem
    assert _cached(cache_dir(), key) == entries[0]
    with open(entries[0], "ab") as f:                     # a damaged (or replaced) entry is never loaded
        f.write(b"\0")
    assert _cached(cache_dir(), key) is None


def test_unsafe_or_disabled_cache_is_not_used(tmp_path, monkeypatch):
    from egru_compile.targets.tvm.cache import cache_dir
    monkeypatch.setenv("EGRU_COMPILE_CACHE", "off")
    assert cache_dir() is None
    monkeypatch.setenv("EGRU_COMPILE_CACHE", str(tmp_path / "c"))
    d = cache_dir()
    assert d is not None and d.stat().st_mode & 0o077 == 0
    os.chmod(d, 0o777)                                    # anyone may write there: not used
    assert cache_dir() is None
