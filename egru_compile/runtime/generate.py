"""Text generation from any runner: feed a prompt, then sample (or pick greedily) one token at a time.

Protocol: zero initial state; every prompt word is stepped through the runner (state carried); the logits
after the last prompt word give the first generated token, which is stepped in turn, and so on. Sampling is
``softmax(logits / temperature)`` over the `top_k` highest logits (all when ``top_k`` is 0/None), in float64,
drawn by inverse CDF over the token ids in id order with one ``numpy.random.default_rng(seed).random()`` per
token; ``temperature == 0`` is greedy (argmax, lowest id on ties). So with the same seed, runners whose
logits agree to float32 rounding (the f32 targets: PyTorch source, onnx f32, tvm) produce the same tokens —
unless a draw lands within that rounding of a CDF boundary.
"""
from __future__ import annotations

import numpy as np

from ..data import DataError, Vocabulary
from ..errors import option
from ..data.vocab import EOS


#: most words one `generate` call produces (the CLI's --tokens limit, the API's tokens=)
MAX_GENERATE = 1_000_000


def encode_prompt(vocab: Vocabulary | None, text: str, unk: str | None = None) -> np.ndarray:
    """Token ids of the whitespace-separated words of `text`. An unknown word raises DataError naming it,
    unless `unk` names a vocabulary word to map it to; an empty prompt raises DataError. Words are taken as
    they are (no case folding; `encode_prompt_folded` folds)."""
    return encode_prompt_folded(vocab, text, unk, fold_case=False)[0]


def encode_prompt_folded(vocab: Vocabulary | None, text: str, unk: str | None = None,
                         fold_case: bool = True) -> tuple[np.ndarray, int]:
    """(`encode_prompt` ids, number of words folded to lower case): with `fold_case`, a word the vocabulary
    lacks whose lower-case form it has is folded when the vocabulary does not distinguish case
    (`Vocabulary.folds_case`: "The company said" with PTB's lower-case vocabulary)."""
    if vocab is None:
        raise DataError(f"no vocabulary to encode the prompt: give {option('vocab', 'TRAIN.txt')}")
    if unk is not None and unk not in vocab.index:
        raise DataError(f"{option('unk')} token {unk!r} is not in the vocabulary")
    words = text.split()
    if not words:
        raise DataError("the prompt has no words")
    ids, folded = [], 0
    for w in words:
        i, f = vocab.lookup(w, fold_case)
        folded += f
        if i is None:
            i = vocab.index.get(unk) if unk is not None else None
        if i is None:
            raise DataError(f"prompt word {w!r} is not in the vocabulary (use {option('unk', 'TOKEN')})")
        ids.append(i)
    return np.asarray(ids, np.int64), folded


def next_token(logits, temperature: float, top_k: int | None, rng: np.random.Generator) -> int:
    """One token from `logits` [V]: argmax when temperature is 0, else a draw from the tempered softmax
    restricted to the `top_k` largest logits (see the module docstring)."""
    z = np.asarray(logits, np.float64).reshape(-1)
    if temperature == 0:
        return int(np.argmax(z))
    z = z / float(temperature)
    if top_k and top_k < len(z):
        kth = np.partition(z, len(z) - top_k)[len(z) - top_k]
        z = np.where(z >= kth, z, -np.inf)
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    u = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), len(z) - 1))


def generate(runner, prompt_ids, n_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             seed: int = 0) -> np.ndarray:
    """`n_tokens` generated token ids after `prompt_ids` (runner reset first; see the module docstring)."""
    if temperature < 0 or not np.isfinite(temperature):
        raise DataError(f"{option('temperature')} must be a finite number >= 0 (got {temperature})")
    if top_k is not None and top_k < 0:
        raise DataError(f"{option('top_k')} must be >= 0 (got {top_k})")
    prompt = np.asarray(prompt_ids, np.int64).reshape(-1)
    if len(prompt) == 0:
        raise DataError("the prompt has no words")
    rng = np.random.default_rng(seed)
    runner.reset()
    logits = None
    for tok in prompt:
        logits = runner.step(int(tok))
    out = np.empty(int(n_tokens), np.int64)
    for t in range(int(n_tokens)):
        out[t] = next_token(logits, temperature, top_k, rng)
        if t + 1 < n_tokens:
            logits = runner.step(int(out[t]))
    return out


def render(words: list[str]) -> str:
    """Words as text: spaces between words, a line break for each ``<eos>``."""
    lines, cur = [], []
    for w in words:
        if w == EOS:
            lines.append(" ".join(cur))
            cur = []
        else:
            cur.append(w)
    return "\n".join(lines + ([" ".join(cur)] if cur else []))
