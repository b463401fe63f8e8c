"""Shared fixtures: small random EGRU language models, optionally pruned."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from egru_compile.model import EGRUConfig, EGRULanguageModel

PTB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


def make_model(vocab=40, emb=8, hidden=(12, 8), seed=0, sparsity=0.0, thr=(0.0, 0.3)) -> EGRULanguageModel:
    """A random EGRU LM; `sparsity` > 0 prunes RNN weights globally with torch.nn.utils.prune masks."""
    torch.manual_seed(seed)
    m = EGRULanguageModel(EGRUConfig(vocab, emb, list(hidden)))
    with torch.no_grad():
        for layer in m.rnns:
            layer.thr.uniform_(*thr)
            layer.bias.normal_(0, 0.3)
            layer.recurrent_bias.normal_(0, 0.3)
        m.decoder.decoder.bias.normal_(0, 0.1)
    if sparsity > 0:
        params = [(l, n) for l in m.rnns for n in ("kernel", "recurrent_kernel")]
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    m.eval()
    return m


@pytest.fixture
def small_model():
    return make_model()


def ptb_path(split: str) -> Path:
    p = PTB_DIR / f"ptb.{split}.txt"
    if not p.is_file():
        pytest.skip(f"Penn Treebank not found at {p} (the shared data folder is absent)")
    return p


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_configure(config):
    os.environ.setdefault("TVM_NUM_THREADS", "1")
    # one TVM compile cache for this test session (tests and the CLI subprocesses they start share compiled
    # step libraries of equal specs), never the user's own cache
    cache = tempfile.mkdtemp(prefix="egru-test-cache-")
    os.environ["EGRU_COMPILE_CACHE"] = cache
    atexit.register(shutil.rmtree, cache, True)
