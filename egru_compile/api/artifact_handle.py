"""`Artifact`: an opened artifact folder, IR file or checkpoint (`load`) with its runner's streaming API,
text encode / decode, generation and evaluation; `evaluate_path`, the CLI's evaluation of a path."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..errors import EgruError, UsageError, api_spelling, option
from .eval_result import EvalResult

#: runner methods and attributes an Artifact passes through (`runtime.Runner`)
_RUNNER_API = ("reset", "step", "run", "score", "get_state", "set_state", "reset_streams", "step_streams",
               "score_streams", "last_stats", "last_run", "last_stream_stats", "layer_sizes", "vocab_size",
               "stream_batch", "native_streams", "supports_state")


@api_spelling()
def load(path, *, vocab=None, trust: bool = False, **runner_options) -> "Artifact":
    """Open an artifact folder (runner chosen by its manifest), an IR file (``--emit-ir``), a source
    checkpoint (run by PyTorch) or a dense GRU / LSTM baseline of ``train --model gru|lstm``. `vocab`: a
    training text giving the vocabulary (EvNN state_dicts have none); `trust`: allow pickled checkpoints;
    `runner_options` go to the runner (``threads=1`` for onnx) — ``projection_activation="identity" | "relu"``
    to `runtime.open_artifact` (an EvNN state_dict's decoder projection). Errors raise `EgruError`."""
    from ..runtime import open_artifact
    p = Path(path)
    runner = open_artifact(p, trust=trust, vocab_file=None if vocab is None else str(vocab), **runner_options)
    return Artifact(p, runner)


class Artifact:
    """A compiled artifact or a checkpoint, ready to run. ``path``, ``target`` (the runner's: "onnx", "tvm", a
    chip name, "torch" for a checkpoint, "gru"/"lstm" for a baseline), ``kind`` ("artifact", "checkpoint",
    "baseline", "ir" for an IR file run by the reference interpreter), ``manifest`` (artifact folders), ``vocab`` (`data.Vocabulary` or None), ``runner``.
    `reset`, `step`, `run`, `score`, `get_state`, `set_state`, `reset_streams`, `step_streams`, `score_streams`
    and the ``last_*`` statistics are the runner's (`runtime.Runner`)."""

    def __init__(self, path, runner):
        from ..runtime.baseline_runner import BaselineRunner
        self.path = Path(path)
        self.runner = runner
        self.summary: str | None = None
        self.compile_info: dict | None = None
        self.manifest = None
        if self.path.is_dir():
            from ..artifact import read_manifest
            self.manifest = read_manifest(self.path, verify_files=False)
        self.kind = ("artifact" if self.path.is_dir() else
                     "baseline" if isinstance(runner, BaselineRunner) else
                     "ir" if runner.target == "ir" else "checkpoint")

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, target={self.target!r}, kind={self.kind!r})"

    def __getattr__(self, name):
        if name in _RUNNER_API:
            return getattr(self.runner, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def target(self) -> str:
        return self.runner.target

    @property
    def vocab(self):
        return self.runner.vocab

    def _vocab(self):
        from ..data import DataError
        v = self.runner.vocab
        if v is None:
            raise DataError(f"{self.path} has no vocabulary: load it with {option('vocab', 'TRAIN.txt')}")
        if len(v) != self.runner.vocab_size:
            raise EgruError(f"vocabulary has {len(v)} words but the model predicts {self.runner.vocab_size}")
        return v

    # ------------------------------------------------------------------ text <-> ids
    @api_spelling()
    def encode(self, text: str, *, unk: str | None = None, fold_case: bool = True) -> np.ndarray:
        """Token ids (int64) of `text`: its whitespace-separated words, ``<eos>`` for each line break.
        Words the vocabulary lacks map to `unk` (a vocabulary word) or raise `EgruError`; with `fold_case`, a
        word found only in lower case is folded when the vocabulary does not distinguish case (PTB)."""
        from ..data.vocab import EOS
        vocab = self._vocab()
        if unk is not None and unk not in vocab.index:
            raise EgruError(f"unk token {unk!r} is not in the vocabulary")
        ids = []
        for n, line in enumerate(str(text).split("\n")):
            if n:
                ids.append(vocab.index[EOS] if EOS in vocab.index else _no_eos())
            for w in line.split():
                i, _ = vocab.lookup(w, fold_case)
                if i is None:
                    if unk is None:
                        raise EgruError(f"word {w!r} is not in the vocabulary (use unk=TOKEN)")
                    i = vocab.index[unk]
                ids.append(i)
        return np.asarray(ids, np.int64)

    def decode(self, ids) -> str:
        """The words of token ids, spaces between them and a line break for each ``<eos>`` (`encode` inverts
        it: ``encode(decode(ids)) == ids``)."""
        from ..data.vocab import EOS
        vocab = self._vocab()
        out = []
        for i in np.asarray(ids, np.int64).reshape(-1):
            i = self.runner.check_token(int(i))
            w = vocab.words[i]
            if w == EOS:
                out.append("\n")
            else:
                out.append(w if not out or out[-1] == "\n" else " " + w)
        return "".join(out)

    # ------------------------------------------------------------------ generate / evaluate
    @api_spelling()
    def generate_result(self, prompt: str, tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
                        seed: int = 0, unk: str | None = None) -> dict:
        """`generate` with the details: {"target", "prompt" (its words as encoded), "tokens" (generated ids),
        "words", "text" (prompt + generated words), "case_folded" (prompt words folded to lower case)}."""
        from ..runtime.generate import encode_prompt_folded, generate, render
        vocab = self._vocab()
        ids, folded = encode_prompt_folded(vocab, prompt, unk)
        _check_generate_args(tokens, temperature, top_k, seed)
        out = generate(self.runner, ids, int(tokens), float(temperature), int(top_k) if top_k else None, int(seed))
        words = [vocab.words[i] for i in out]
        prompt_words = [vocab.words[i] for i in ids]
        return {"target": self.target, "prompt": prompt_words, "tokens": out.tolist(), "words": words,
                "text": render(prompt_words + words), "case_folded": folded}

    def generate(self, prompt: str, tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
                 seed: int = 0, unk: str | None = None) -> str:
        """The prompt followed by `tokens` generated words (``<eos>`` as line breaks): sampled from
        softmax(logits / temperature) over the `top_k` most likely words (None: all), greedy with temperature
        0; the same seed gives the same text (`runtime.generate`). Prompt words are folded to lower case when
        the vocabulary does not distinguish case ("The" -> "the" with PTB)."""
        return self.generate_result(prompt, tokens, temperature=temperature, top_k=top_k, seed=seed,
                                    unk=unk)["text"]

    @api_spelling()
    def evaluate(self, text_or_path, batch_size: int = 1, max_tokens: int | None = None, *, unk: str | None = None,
                 progress: bool = False, chunked: int | None = None, threads: int = 1) -> EvalResult:
        """Streaming perplexity, activity, MACs/token and tokens/s on a text file (a path, or a string without
        whitespace) or on a text itself (a string with whitespace that names no file; ``<eos>`` ends every
        line, as in the corpus). Words the
        vocabulary lacks map to `unk` (counted in ``unknown_words``) or raise `EgruError`; words found only
        in lower case are folded (``case_folded``). `batch_size` B cuts the text into B contiguous streams;
        `max_tokens` uses the first N tokens; `progress` shows a progress bar / line on stderr; `chunked` (bptt):
        EvNN's eval.py protocol (`runtime.evaluate`); `threads`: threads of the batched-stream kernels (tvm
        artifacts; per-stream results identical for any count)."""
        from ..progress import step
        from ..runtime.evaluate import encode_eval_data, evaluate, text_report
        vocab = self._vocab()
        is_text = isinstance(text_or_path, str) and any(c.isspace() for c in text_or_path) \
            and not os.path.exists(text_or_path)
        if not is_text:
            if not os.path.exists(text_or_path):
                raise EgruError(f"{text_or_path}: no such file (a text to evaluate has at least two words)")
            if Path(text_or_path).is_dir():
                raise EgruError(f"{text_or_path} is a directory: give a text file")
        enc = encode_eval_data(str(text_or_path) if not is_text else text_or_path, vocab, max_tokens, unk,
                               fold_case=True, is_text=is_text)
        tty = sys.stderr.isatty()
        with step(f"evaluating {len(enc.ids)} tokens on {self.target}", progress and not tty):
            result = evaluate(self.runner, enc.ids, quiet=not progress, batch_size=batch_size, chunked=chunked,
                              threads=threads)
        result["projection_activation"] = getattr(self.runner, "projection_activation", None)
        result |= text_report(enc)
        result["data"] = None if is_text else str(text_or_path)
        return EvalResult.from_dict(result)


def evaluate_path(artifact, data, vocab_file=None, max_tokens: int | None = None, unk: str | None = None,
                  quiet: bool = False, trust: bool = False, batch_size: int = 1, chunked: int | None = None,
                  **runner_options) -> dict:
    """`evaluate` of `artifact` (compiled directory or source checkpoint) on text file `data`, encoded with its
    vocabulary (or `vocab_file`'s; words folded to lower case where the vocabulary does not distinguish case).
    Adds ``data`` and the text fields (`text_report`) to the result. The same as `Artifact.evaluate(...).to_dict()`.
    `chunked`: EvNN's protocol (`runtime.evaluate`); ``projection_activation`` (in `runner_options`):
    `open_artifact`'s."""
    res = load(artifact, vocab=vocab_file, trust=trust, **runner_options).evaluate(
        Path(data), batch_size=batch_size, max_tokens=max_tokens, unk=unk, progress=not quiet, chunked=chunked)
    return res.to_dict()


def _no_eos():
    raise EgruError("the text has line breaks but the vocabulary has no <eos>")


def _check_generate_args(tokens, temperature, top_k, seed) -> None:
    """The CLI's limits on `generate` (``--tokens``, ``--temperature``, ``--top-k``, ``--seed``) for the API:
    an EgruError naming the keyword, never a raw ValueError / TypeError from numpy."""
    import math

    from ..runtime.generate import MAX_GENERATE

    def whole(name, v, lo, hi=None):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
            rng = f"a whole number >= {lo}" + (f" and <= {hi:,}" if hi is not None else "")
            raise UsageError(f"{option(name)} must be {rng} (got {v!r})")
    whole("tokens", tokens, 1, MAX_GENERATE)
    whole("seed", seed, 0, 2 ** 63 - 1)
    if top_k is not None:
        whole("top_k", top_k, 0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating, np.integer)) \
            or not math.isfinite(float(temperature)) or float(temperature) < 0:
        raise UsageError(f"{option('temperature')} must be a finite number >= 0 (got {temperature!r})")
