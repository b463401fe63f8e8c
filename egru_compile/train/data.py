"""Word-level corpora for LM training: PTB-style directories, batchified streams, DDP sharding."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import DataError, Vocabulary

_SPLIT_NAMES = {
    "train": ("ptb.train.txt", "train.txt", "wiki.train.tokens"),
    "valid": ("ptb.valid.txt", "valid.txt", "wiki.valid.tokens"),
    "test": ("ptb.test.txt", "test.txt", "wiki.test.tokens"),
}


def find_split(data_dir: str | Path, split: str) -> Path:
    d = Path(data_dir)
    for name in _SPLIT_NAMES[split]:
        if (d / name).is_file():
            return d / name
    raise DataError(f"{d}: no {split} file (looked for {', '.join(_SPLIT_NAMES[split])})")


@dataclass
class Corpus:
    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor | None


def load_corpus(data_dir: str | Path, vocab: Vocabulary | None = None, train_tokens: int | None = None,
                valid_tokens: int | None = None, need_test: bool = False) -> Corpus:
    """Vocabulary = first appearance in the (full) train file unless given; `<eos>` per line."""
    train_path = find_split(data_dir, "train")
    if vocab is None:
        vocab = Vocabulary.from_train_file(train_path)
    tr = torch.from_numpy(vocab.encode_file(train_path, max_tokens=train_tokens))
    va = torch.from_numpy(vocab.encode_file(find_split(data_dir, "valid"), max_tokens=valid_tokens))
    te = None
    if need_test:
        te = torch.from_numpy(vocab.encode_file(find_split(data_dir, "test")))
    return Corpus(vocab, tr, va, te)


def batchify(data: torch.Tensor, n_streams: int) -> torch.Tensor:
    """1-D token ids -> [L, n_streams] (column j = j-th contiguous slice); the ragged tail is dropped."""
    L = data.numel() // n_streams
    if L < 2:
        raise DataError(f"corpus of {data.numel()} tokens is too small for {n_streams} streams")
    return data[: L * n_streams].view(n_streams, L).t().contiguous()


def shard_streams(data: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Batchify into batch_size * world_size streams and keep this rank's batch_size columns, so every rank
    runs the same number of steps and together they cover the corpus once per epoch."""
    full = batchify(data, batch_size * world_size)
    return full[:, rank * batch_size:(rank + 1) * batch_size].contiguous()


def iter_bptt(source: torch.Tensor, bptt: int):
    """Yield (inputs [T, B], targets [T, B]) windows over a batchified source, in order (truncated BPTT)."""
    n = source.size(0) - 1
    for i in range(0, n, bptt):
        T = min(bptt, n - i)
        yield source[i:i + T], source[i + 1:i + 1 + T]


def num_bptt_steps(source: torch.Tensor, bptt: int) -> int:
    return (source.size(0) - 1 + bptt - 1) // bptt


def synthetic_corpus(path: str | Path, n_lines: int = 200, vocab_size: int = 30, seed: int = 0) -> Path:
    """Write a small learnable corpus (a noisy repeating grammar) as train/valid/test.txt under `path`."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(vocab_size)]

    def line():
        start = int(rng.integers(vocab_size))
        n = int(rng.integers(4, 12))
        toks = [words[(start + 3 * k) % vocab_size] if rng.random() > 0.1 else words[int(rng.integers(vocab_size))]
                for k in range(n)]
        return " ".join(toks)

    for split, n in (("train", n_lines), ("valid", max(n_lines // 8, 8)), ("test", max(n_lines // 8, 8))):
        lines = [line() for _ in range(n)]
        if split == "train":
            lines.insert(0, " ".join(words))  # every word appears in train
        (path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return path
