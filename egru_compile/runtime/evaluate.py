"""Streaming evaluation: perplexity, per-layer activity and dynamic MACs/token of any runner.

Protocol: zero initial state; the state is carried through the whole text (no resets, no truncation);
the logits after token t score token t+1, so a text of T tokens gives T-1 predictions (``tokens``).
Activity of layer l = mean over those steps of (units with y != 0) / h_l; MACs as the runner reports them
(active units' non-zero fan-out over the RNN layers' input and recurrent matrices).
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from ..data import DataError, Vocabulary


def load_eval_tokens(path, vocab: Vocabulary | None, max_tokens: int | None = None,
                     unk: str | None = None) -> np.ndarray:
    """Token ids of a text file (``<eos>`` per line). Out-of-vocabulary words raise DataError naming the word
    and line unless `unk` names a vocabulary word to map them to; an empty file or fewer than 2 tokens
    (nothing to predict) raise DataError."""
    if vocab is None:
        raise DataError("no vocabulary to encode the evaluation text: give --vocab TRAIN.txt")
    if max_tokens is not None and int(max_tokens) < 2:
        raise DataError(f"--max-tokens must be at least 2 (got {max_tokens}): nothing to predict")
    return vocab.encode_file(path, max_tokens=None if max_tokens is None else int(max_tokens), unk=unk)


def _progress(total: int, quiet: bool):
    if quiet or not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="tok", desc="eval", leave=False, dynamic_ncols=True, mininterval=0.5)


def evaluate(runner, token_ids, quiet: bool = False, chunk: int = 256) -> dict:
    """Stream `token_ids` through `runner` (reset first). Returns a JSON-serialisable dict with
    ``target``, ``tokens`` (predictions = len(token_ids) - 1), ``perplexity``, ``cross_entropy`` (nats),
    ``macs_per_token``, ``activity`` (per layer), ``events_per_token`` (per layer), ``layer_sizes``,
    ``seconds`` and ``tokens_per_second``, plus what the runner's optional ``extra_report()`` returns
    (chip runners: ``chip``, the simulator's per-core / per-link counters). A tqdm progress bar shows
    unless `quiet` or stdout is not a TTY."""
    ids = np.asarray(token_ids, np.int64).reshape(-1)
    if len(ids) < 2:
        raise DataError(f"need at least 2 tokens to evaluate, got {len(ids)}")
    T = len(ids) - 1
    sizes = list(runner.layer_sizes)
    events = np.zeros(len(sizes), np.int64)
    macs = 0
    nll = 0.0
    bar = _progress(T, quiet)
    runner.reset()
    t0 = time.perf_counter()
    try:
        # chunks of tokens per call: runners with a K-tokens-per-call path (tvm's egru_run) use it; the
        # others step token by token inside Runner.run; per-step activity/MACs come back in last_run
        for start in range(0, T, chunk):
            stop = min(start + chunk, T)
            logits = np.asarray(runner.run(ids[start:stop]), np.float64).reshape(stop - start, -1)
            m = logits.max(axis=1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
            nll += float((lse - logits[np.arange(stop - start), ids[start + 1:stop + 1]]).sum())
            run = runner.last_run
            if run is not None:
                events += run.events.sum(axis=0)
                macs += int(run.macs.sum())
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    secs = time.perf_counter() - t0
    ce = nll / T
    extra = runner.extra_report() if hasattr(runner, "extra_report") else {}
    return extra | {
        "target": runner.target,
        "artifact": runner.path,
        "tokens": T,
        "perplexity": math.exp(ce) if ce < 700 else float("inf"),
        "cross_entropy": ce,
        "macs_per_token": macs / T,
        "activity": [float(events[l]) / (T * sizes[l]) for l in range(len(sizes))],
        "events_per_token": [float(events[l]) / T for l in range(len(sizes))],
        "layer_sizes": sizes,
        "seconds": secs,
        "tokens_per_second": T / secs if secs > 0 else None,
    }


def graph_perplexity(graph, tokens) -> float:
    """Perplexity of an IR step graph on `tokens` over the reference interpreter (`GraphRunner`), with
    `evaluate`'s protocol. The function the compiler gives quantize-int8 (``PassOptions.perplexity``)."""
    from .torch_runner import GraphRunner
    return float(evaluate(GraphRunner(graph), tokens, quiet=True)["perplexity"])


def evaluate_path(artifact, data, vocab_file=None, max_tokens: int | None = None, unk: str | None = None,
                  quiet: bool = False, trust: bool = False, **runner_options) -> dict:
    """`egru-compile eval`: open `artifact` (compiled directory or source checkpoint), encode `data` with
    its vocabulary (or `vocab_file`'s), and `evaluate`. Adds ``data`` to the result."""
    from .base import ArtifactError, open_artifact
    runner = open_artifact(artifact, trust=trust, vocab_file=vocab_file, **runner_options)
    if runner.vocab is None:
        raise DataError(f"{artifact} has no vocabulary: give --vocab TRAIN.txt")
    if len(runner.vocab) != runner.vocab_size:
        raise ArtifactError(f"vocabulary has {len(runner.vocab)} words but the model predicts {runner.vocab_size}")
    ids = load_eval_tokens(data, runner.vocab, max_tokens, unk)
    result = evaluate(runner, ids, quiet=quiet)
    result["data"] = str(data)
    return result
