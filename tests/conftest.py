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

#: the Penn Treebank text shipped with the repository (data/ptb/README.md: source and terms)
PTB_DIR = Path(__file__).resolve().parents[1] / "data" / "ptb"


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


def lm_words(vocab: int) -> list[str]:
    """The vocabulary of the random test models: w0 … w{vocab-2} and <eos>."""
    return [f"w{i}" for i in range(vocab - 1)] + ["<eos>"]


def save_lm(d: Path, model: EGRULanguageModel, text: str | None = "text.txt", lines: int = 14,
            words_per_line: int = 15, text_seed: int = 0) -> Path:
    """Save `model` as ``d/m.pt`` with the vocabulary `lm_words` of its size and, unless `text` is None, a random
    text ``d/TEXT`` of `lines` lines of `words_per_line` words (no <eos>: lines end it), drawn with
    ``np.random.default_rng(text_seed)``; returns `d`."""
    from egru_compile.frontend import save_checkpoint
    words = lm_words(model.config.vocab_size)
    save_checkpoint(d / "m.pt", model, words)
    if text is not None:
        rng = np.random.default_rng(text_seed)
        (d / text).write_text("\n".join(" ".join(rng.choice(words[:-1], words_per_line)) for _ in range(lines))
                              + "\n")
    return d


def random_lm(tmp_path_factory, name: str, *, text: str | None = "text.txt", lines: int = 14,
              words_per_line: int = 15, text_seed: int = 0, **model_kw) -> tuple[Path, EGRULanguageModel]:
    """(folder, model): a fresh folder `name` holding ``m.pt`` = `make_model(**model_kw)` and its random text
    (`save_lm`) — the module-scoped fixture of the tests that compile a small random model."""
    d = tmp_path_factory.mktemp(name)
    model = make_model(**model_kw)
    return save_lm(d, model, text, lines, words_per_line, text_seed), model


def ptb_path(split: str) -> Path:
    p = PTB_DIR / f"ptb.{split}.txt"
    if not p.is_file():
        pytest.fail(f"Penn Treebank not found at {p}: the repository ships it under data/ptb")
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
