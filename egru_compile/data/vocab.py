"""Word-level vocabulary and corpus reading, AWD-LSTM / EvNN convention.

Words are whitespace-separated; every line gets ``<eos>`` appended. The vocabulary lists words in order of
first appearance in the training file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EgruError, option

EOS = "<eos>"
#: spellings of the unknown-word token a vocabulary may hold (PTB: <unk>)
UNK_WORDS = ("<unk>", "<UNK>", "<oov>")


class DataError(EgruError):
    """Bad text data: empty file, unknown word, unreadable file."""


#: longest word accepted: a longer run of non-whitespace is not word-level text (e.g. /dev/zero, a binary file)
MAX_WORD_CHARS = 10_000
_CHUNK = 1 << 16
#: most whitespace characters read in a row without a word or a line break: a reader of endless blanks (a FIFO,
#: a device) yields no token, so without this bound `--max-tokens` would never be reached
MAX_BLANK_CHARS = 1 << 20


def _tokens(path: str | Path):
    """Yield ``(lineno, word)`` for the whitespace-separated words of a UTF-8 text file, with ``<eos>`` at the
    end of every line (as ``line.split() + [EOS]`` per line would), reading in fixed-size chunks: memory stays
    bounded however long a line is, and a caller that stops early reads no further. Whitespace is counted too:
    a run of more than `MAX_BLANK_CHARS` blanks without a word or line break (endless whitespace from a FIFO or
    device, which would never yield a token for ``--max-tokens`` to count) is a DataError."""
    try:
        with open(path, encoding="utf-8") as f:
            yield from _stream_tokens(f, path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text") from e


def text_tokens(text: str, name: str = "text"):
    """`_tokens` of a string (``(lineno, word)``, ``<eos>`` at the end of every line)."""
    import io
    return _stream_tokens(io.StringIO(text), name)


def _stream_tokens(f, path):
    """The words of text stream `f` (see `_tokens`; `path` names it in errors)."""
    lineno, word, line_open, blank = 1, "", False, 0

    def too_long(w: str) -> str:
        if len(w) > MAX_WORD_CHARS:
            raise DataError(f"{path}:{lineno}: a word longer than {MAX_WORD_CHARS:,} characters "
                            "(is this a word-level text file?)")
        return w

    while chunk := f.read(_CHUNK):
        if "\n" not in chunk and chunk.isspace():
            blank += len(chunk)
        else:
            lead = chunk[:len(chunk) - len(chunk.lstrip())]      # continues the previous chunk's blank run
            if "\n" not in lead and blank + len(lead) > MAX_BLANK_CHARS:
                blank += len(lead)
            else:
                last_line = chunk.rsplit("\n", 1)[-1]
                blank = len(last_line) - len(last_line.rstrip())
        if blank > MAX_BLANK_CHARS:
            raise DataError(f"{path}:{lineno}: more than {MAX_BLANK_CHARS:,} whitespace characters without "
                            "a word or line break (is this a word-level text file?)")
        parts = chunk.split("\n")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                k = max((j for j in range(len(part) - 1, -1, -1) if part[j].isspace()), default=-1) \
                    if part and not part[-1].isspace() else len(part) - 1
                head, tail = (part[:k + 1], part[k + 1:]) if k >= 0 else ("", part)
            else:
                head, tail = part, ""
            if head:
                for w in (word + head).split():
                    yield lineno, too_long(w)
                word = ""
            word += tail
            too_long(word)
            line_open = line_open or bool(part)
            if not last:
                if word:
                    yield lineno, word
                    word = ""
                yield lineno, EOS
                lineno, line_open = lineno + 1, False
    if word:
        yield lineno, word
    if line_open:
        yield lineno, EOS


class Vocabulary:
    """Words in id order. A word is a non-empty string without whitespace (the corpus is split on it)."""

    def __init__(self, words: list[str]):
        self.words = list(words)
        for i, w in enumerate(self.words):
            if not isinstance(w, str) or w.split() != [w]:
                raise DataError(f"vocabulary word {i} ({w!r}) is empty or contains whitespace: word-level text "
                                "could never produce it")
        self.index = {w: i for i, w in enumerate(self.words)}
        self._folds: bool | None = None
        if len(self.index) != len(self.words):
            raise DataError("vocabulary has duplicate words")

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def from_train_file(cls, path: str | Path) -> "Vocabulary":
        words: dict[str, None] = {}
        for _, t in _tokens(path):
            words.setdefault(t, None)
        if len(words) <= 1:
            raise DataError(f"{path} holds no words to build a vocabulary from")
        return cls(list(words))

    @property
    def folds_case(self) -> bool:
        """True when no two words differ only in case (PTB: all lower case but ``N``): a word the vocabulary
        lacks whose lower-case form it has can then be folded to that form without ambiguity."""
        if self._folds is None:
            lower = {w.lower() for w in self.words}
            self._folds = len(lower) == len(self.words) and any(w == w.lower() and w != w.upper()
                                                                 for w in self.words)
        return self._folds

    def lookup(self, word: str, fold_case: bool = True) -> tuple[int | None, bool]:
        """(id of `word` or None, whether it was found by folding it to lower case — `folds_case` only)."""
        i = self.index.get(word)
        if i is None and fold_case and self.folds_case:
            i = self.index.get(word.lower())
            return i, i is not None
        return i, False

    def encode_tokens(self, tokens, name: str, max_tokens: int | None = None, unk: str | None = None,
                      fold_case: bool = False) -> "Encoded":
        """Encode ``(lineno, word)`` pairs (`_tokens`, `text_tokens`), stopping at `max_tokens`: ids plus the
        counts of words, unknown words (mapped to `unk`) and words folded to lower case (`fold_case`, when
        `folds_case`). An unknown word without `unk` raises DataError naming it and its line."""
        if unk is not None and unk not in self.index:
            raise DataError(f"{option('unk')} token {unk!r} is not in the vocabulary")
        unk_id = self.index.get(unk) if unk is not None else None
        marker = unk if unk is not None else next((w for w in UNK_WORDS if w in self.index), None)
        ids: list[int] = []
        words = unknown = folded = marked = 0
        for lineno, t in tokens:
            if max_tokens is not None and len(ids) >= max_tokens:
                break
            words += t != EOS
            marked += t == marker
            i, f = self.lookup(t, fold_case)
            folded += f
            if i is None:
                if unk_id is None:
                    hint = option("unk", marker if marker is not None else "TOKEN")
                    shown = repr(t) if len(t) <= 60 else f"{t[:40]!r}... ({len(t):,} characters)"
                    raise DataError(f"{name}:{lineno}: word {shown} is not in the vocabulary (use {hint})")
                unknown += 1
                i = unk_id
            ids.append(i)
        if words == 0:
            raise DataError(f"{name} is empty (no words)")
        arr = np.asarray(ids, dtype=np.int64)
        if len(arr) < 2:
            raise DataError(f"{name} has fewer than 2 tokens: nothing to predict")
        return Encoded(arr, words, unknown, folded, marked)

    def encode_file(self, path: str | Path, max_tokens: int | None = None, unk: str | None = None,
                    fold_case: bool = False) -> np.ndarray:
        """Token ids of a text file (with `<eos>` per line), reading no further than `max_tokens`. Unknown
        words raise DataError naming the word and line, unless `unk` names a vocabulary word to map them to."""
        return self.encode_tokens(_tokens(path), str(path), max_tokens, unk, fold_case).ids


@dataclass(frozen=True)
class Encoded:
    """An encoded text: token ids, its words (``<eos>`` not counted), how many of them were unknown (mapped to
    the ``unk`` token), how many were folded to lower case to be found, and how many the text itself wrote as
    the unknown-word token (``unk``, else the vocabulary's ``<unk>``)."""

    ids: np.ndarray
    words: int
    unknown: int
    folded: int
    marked: int = 0


def read_tokens(path: str | Path) -> list[str]:
    return [t for _, t in _tokens(path)]
