"""Word-level vocabulary and corpus reading, AWD-LSTM / EvNN convention.

Words are whitespace-separated; every line gets ``<eos>`` appended. The vocabulary lists words in order of
first appearance in the training file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EgruError

EOS = "<eos>"


class DataError(EgruError):
    """Bad text data: empty file, unknown word, unreadable file."""


def _lines(path: str | Path):
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.split() + [EOS]
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text") from e


class Vocabulary:
    def __init__(self, words: list[str]):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise DataError("vocabulary has duplicate words")

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def from_train_file(cls, path: str | Path) -> "Vocabulary":
        words: dict[str, None] = {}
        for _, toks in _lines(path):
            for t in toks:
                words.setdefault(t, None)
        if len(words) <= 1:
            raise DataError(f"{path} holds no words to build a vocabulary from")
        return cls(list(words))

    def encode_file(self, path: str | Path, max_tokens: int | None = None, unk: str | None = None) -> np.ndarray:
        """Token ids of a text file (with `<eos>` per line). Unknown words raise DataError naming the word and
        line, unless `unk` names a vocabulary word to map them to."""
        if unk is not None and unk not in self.index:
            raise DataError(f"--unk token {unk!r} is not in the vocabulary")
        unk_id = self.index.get(unk) if unk is not None else None
        ids: list[int] = []
        words = 0
        for lineno, toks in _lines(path):
            words += len(toks) - 1
            for t in toks:
                i = self.index.get(t, unk_id)
                if i is None:
                    raise DataError(f"{path}:{lineno}: word {t!r} is not in the vocabulary (use --unk TOKEN)")
                ids.append(i)
            if max_tokens is not None and len(ids) >= max_tokens:
                break
        if words == 0:
            raise DataError(f"{path} is empty (no words)")
        arr = np.asarray(ids, dtype=np.int64)
        if max_tokens is not None:
            arr = arr[:max_tokens]
        if len(arr) < 2:
            raise DataError(f"{path} has fewer than 2 tokens: nothing to predict")
        return arr


def read_tokens(path: str | Path) -> list[str]:
    return [t for _, toks in _lines(path) for t in toks]
