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
from ..data.vocab import EOS


def encode_prompt(vocab: Vocabulary | None, text: str, unk: str | None = None) -> np.ndarray:
    """Token ids of the whitespace-separated words of `text`. An unknown word raises DataError naming it,
    unless `unk` names a vocabulary word to map it to; an empty prompt raises DataError."""
    if vocab is None:
        raise DataError("no vocabulary to encode the prompt: give --vocab TRAIN.txt")
    if unk is not None and unk not in vocab.index:
        raise DataError(f"--unk token {unk!r} is not in the vocabulary")
    words = text.split()
    if not words:
        raise DataError("the prompt has no words")
    ids = []
    for w in words:
        i = vocab.index.get(w, vocab.index.get(unk) if unk is not None else None)
        if i is None:
            raise DataError(f"prompt word {w!r} is not in the vocabulary (use --unk TOKEN)")
        ids.append(i)
    return np.asarray(ids, np.int64)


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
        raise DataError(f"--temperature must be a finite number >= 0 (got {temperature})")
    if top_k is not None and top_k < 0:
        raise DataError(f"--top-k must be >= 0 (got {top_k})")
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


def generate_path(artifact, prompt: str, n_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                  seed: int = 0, vocab_file=None, unk: str | None = None, trust: bool = False,
                  **runner_options) -> dict:
    """`egru-compile generate`: open `artifact` (compiled directory or source checkpoint), encode `prompt`
    with its vocabulary, generate. Returns {"target", "prompt", "tokens" (generated ids), "words", "text"}
    (text = prompt + generated words, `render`ed)."""
    from ..artifact import ArtifactError
    from .open import open_artifact
    runner = open_artifact(artifact, trust=trust, vocab_file=vocab_file, **runner_options)
    if runner.vocab is None:
        raise DataError(f"{artifact} has no vocabulary: give --vocab TRAIN.txt")
    if len(runner.vocab) != runner.vocab_size:
        raise ArtifactError(f"vocabulary has {len(runner.vocab)} words but the model predicts {runner.vocab_size}")
    ids = encode_prompt(runner.vocab, prompt, unk)
    out = generate(runner, ids, n_tokens, temperature, top_k, seed)
    words = [runner.vocab.words[i] for i in out]
    prompt_words = [runner.vocab.words[i] for i in ids]
    return {"target": runner.target, "prompt": prompt_words, "tokens": out.tolist(), "words": words,
            "text": render(prompt_words + words)}
