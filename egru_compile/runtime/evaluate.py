"""Streaming evaluation: perplexity, per-layer activity and dynamic MACs/token of any runner.

Protocol: zero initial state; the state is carried through the whole text (no resets, no truncation);
the logits after token t score token t+1, so a text of T tokens gives T-1 predictions (``tokens``).
Activity of layer l = mean over those steps of (units with y != 0) / h_l; MACs as the runner reports them
(active units' non-zero fan-out over the RNN layers' input and recurrent matrices). Batched evaluation
(``batch_size`` B) cuts the text into B contiguous streams, each evaluated with this protocol
(`split_streams`); the next-token NLL is computed by `runner.NllScorer`.

EvNN's protocol (``chunked=BPTT``, ``eval --chunked BPTT``): EvNN's ``eval.py`` evaluates in chunks of
``bptt`` tokens (70 by default, batch 1), and its ``LanguageModel.forward`` hands each EGRU layer only its
last output y as the next chunk's initial state ("takes only the last state as input"); the layer's cell
state c starts every chunk at zero (EvNN's ``egru_forward`` zero-fills h[0] and copies y0). Here: the same
predictions, each layer's c zeroed after every chunk, y kept. (EvNN divides the summed NLL by the number of
tokens N, not the N - 1 predictions; reported here per prediction, as everywhere.)
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from ..data import DataError, Vocabulary
from ..errors import EgruError, UsageError, option


def load_eval_tokens(path, vocab: Vocabulary | None, max_tokens: int | None = None,
                     unk: str | None = None) -> np.ndarray:
    """Token ids of a text file (``<eos>`` per line). Out-of-vocabulary words raise DataError naming the word
    and line unless `unk` names a vocabulary word to map them to; an empty file or fewer than 2 tokens
    (nothing to predict) raise DataError."""
    return encode_eval_data(path, vocab, max_tokens, unk, fold_case=False).ids


def encode_eval_data(data, vocab: Vocabulary | None, max_tokens: int | None = None, unk: str | None = None,
                     fold_case: bool = True, is_text: bool = False):
    """`data.Encoded` of a text file (`data` a path) or, with `is_text`, of the string `data` itself:
    ids plus the counts of words, unknown words (mapped to `unk`) and words folded to lower case (a word the
    vocabulary lacks whose lower-case form it has, when the vocabulary does not distinguish case)."""
    from ..data.vocab import _tokens, text_tokens
    if vocab is None:
        raise DataError(f"no vocabulary to encode the evaluation text: give {option('vocab', 'TRAIN.txt')}")
    if max_tokens is not None and int(max_tokens) < 2:
        raise DataError(f"{option('max_tokens')} must be at least 2 (got {max_tokens}): nothing to predict")
    tokens = text_tokens(data) if is_text else _tokens(data)
    return vocab.encode_tokens(tokens, "the text" if is_text else str(data),
                               None if max_tokens is None else int(max_tokens), unk, fold_case)


def text_report(enc) -> dict:
    """The eval result's text fields of an `Encoded`: ``words``, ``unknown_words`` (not in the vocabulary),
    ``unknown_share`` (of the words; ``<eos>`` not counted), ``case_folded``, and ``unk_in_text``: words the
    text itself writes as the unknown-word token (``<unk>`` in PTB's preprocessed text)."""
    return {"words": enc.words, "unknown_words": enc.unknown,
            "unknown_share": enc.unknown / enc.words if enc.words else 0.0, "case_folded": enc.folded,
            "unk_in_text": enc.marked}


def _progress(total: int, quiet: bool):
    """A tqdm bar on stderr (a terminal only) unless `quiet`."""
    if quiet or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, unit="tok", desc="eval", leave=False, dynamic_ncols=True, mininterval=0.5,
                file=sys.stderr, delay=2.0)


def split_streams(token_ids, batch_size: int = 1) -> np.ndarray:
    """The standard batched-LM split: the text cut into `batch_size` contiguous streams of equal length
    L = len // B ([B, L]; the last len - B·L tokens are dropped). Each stream needs at least 2 tokens."""
    ids = np.asarray(token_ids, np.int64).reshape(-1)
    B = int(batch_size)
    if B < 1:
        raise DataError(f"{option('batch_size')} must be at least 1 (got {batch_size})")
    L = len(ids) // B
    if B == 1 and L < 2:
        raise DataError(f"need at least 2 tokens to evaluate, got {len(ids)}")
    if L < 2:
        raise DataError(f"{len(ids)} tokens cut into {B} streams leave {L} token(s) per stream: each needs at "
                        f"least 2 (lower {option('batch_size')})")
    return ids[:B * L].reshape(B, L)


def _stream_summary(T: int, nll: float, events, macs: int, sizes) -> dict:
    ce = nll / T
    return {"tokens": T, "perplexity": math.exp(ce) if ce < 700 else float("inf"), "cross_entropy": ce,
            "macs_per_token": macs / T,
            "activity": [float(events[l]) / (T * sizes[l]) for l in range(len(sizes))],
            "events_per_token": [float(events[l]) / T for l in range(len(sizes))]}


def evaluate(runner, token_ids, quiet: bool = False, chunk: int = 256, batch_size: int = 1,
             chunked: int | None = None, threads: int = 1) -> dict:
    """Stream `token_ids` through `runner` (reset first). Returns a JSON-serialisable dict with
    ``target``, ``tokens`` (predictions), ``perplexity``, ``cross_entropy`` (nats), ``macs_per_token``,
    ``activity`` (per layer), ``events_per_token`` (per layer), ``layer_sizes``, ``batch_size``, ``seconds``
    and ``tokens_per_second``, plus what the runner's optional ``extra_report()`` returns (chip runners:
    ``chip``, the simulator's per-core / per-link counters). A tqdm progress bar shows unless `quiet` or
    stdout is not a TTY.

    `batch_size` B > 1: the text is cut into B contiguous streams (`split_streams`), each evaluated from a zero
    state with the protocol above (L - 1 predictions per stream), so ``tokens`` = B·(L - 1); the totals are
    over all streams, ``streams`` gives each stream's own figures (equal to evaluating that stream alone),
    ``dropped_tokens`` the tail the split left out and ``native_streams`` whether the runner ran the B streams
    in one call per step. The streams advance together, `chunk` tokens at a time,
    through the runner's ``score_streams`` (native B-streams-per-call where the runner has it, else one saved
    state per stream).

    `chunked` (bptt): EvNN's chunked protocol (module docstring): after every `chunked` tokens each layer's c
    is zeroed and its y kept (batch 1 only); the result says ``"protocol": "evnn-chunked"`` and ``bptt``.

    `threads` N: threads of the runner's batched-stream kernels (``set_threads``; tvm artifacts: the B streams'
    step split over N threads, results bit for bit those of 1 thread); the result gives ``threads``."""
    if chunked is not None:
        if int(chunked) < 1:
            raise UsageError(f"{option('chunked')} must be at least 1 (got {chunked})")
        if int(batch_size) != 1:
            raise UsageError(f"{option('chunked')} evaluates one stream, as EvNN's eval.py does: use "
                            f"{option('batch_size', 1)}")
        chunk = int(chunked)
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or int(threads) < 1:
        raise DataError(f"{option('threads')} must be at least 1 (got {threads})")
    set_threads = getattr(runner, "set_threads", None)
    if int(threads) != 1 and set_threads is None:
        raise UsageError(f"the {runner.target} runner has no {option('threads')} (tvm artifacts have)")
    streams = split_streams(token_ids, batch_size)
    if set_threads is not None:
        set_threads(int(threads))
    S, L = streams.shape
    T = L - 1
    if S > 1 and not getattr(runner, "supports_state", False) and not getattr(runner, "native_streams", False):
        raise EgruError(f"the {runner.target} runner cannot save its state (get_state / set_state): "
                        f"use {option('batch_size', 1)}")
    sizes = list(runner.layer_sizes)
    events = np.zeros((S, len(sizes)), np.int64)
    macs = np.zeros(S, np.int64)
    nll = np.zeros(S, np.float64)
    from ..runner import NllScorer
    scorer = NllScorer()
    bar = _progress(S * T, quiet)
    if S == 1:
        runner.reset()
    else:
        runner.reset_streams(S)
    cols = np.ascontiguousarray(streams.T)                 # [L, S]: time-major, as score_streams takes them
    t0 = time.perf_counter()
    try:
        # chunks of tokens per call: runners with a K-tokens-per-call path (tvm's egru_run) use it; the
        # others step token by token inside Runner.run / score_streams; activity/MACs come back in last_run
        for start in range(0, T, chunk):
            stop = min(start + chunk, T)
            if S == 1:
                nll[0] += float(runner.score(streams[0, start:stop], streams[0, start + 1:stop + 1], scorer).sum())
                run = runner.last_run
                if run is not None:
                    events[0] += run.events.sum(axis=0)
                    macs[0] += int(run.macs.sum())
            else:
                got = runner.score_streams(cols[start:stop], cols[start + 1:stop + 1], scorer)
                run = runner.last_run
                for b in range(S):
                    nll[b] += float(np.ascontiguousarray(got[:, b]).sum())
                    if run is not None:
                        events[b] += run.events[:, b].sum(axis=0)
                        macs[b] += int(run.macs[:, b].sum())
            if chunked is not None:
                runner.reset_cells()          # EvNN: the next chunk starts from (c = 0, y = the last y)
            if bar is not None:
                bar.update(S * (stop - start))
    finally:
        if bar is not None:
            bar.close()
    secs = time.perf_counter() - t0
    extra = runner.extra_report() if hasattr(runner, "extra_report") else {}
    result = extra | {"target": runner.target, "artifact": runner.path} | _stream_summary(
        S * T, float(nll.sum()), events.sum(axis=0), int(macs.sum()), sizes) | {
        "layer_sizes": sizes,
        "batch_size": S,
        "seconds": secs,
        "tokens_per_second": S * T / secs if secs > 0 else None,
        "protocol": "streaming" if chunked is None else "evnn-chunked",
        "threads": int(threads),
    }
    if chunked is not None:
        result["bptt"] = int(chunked)
    if S > 1:
        result["streams"] = [_stream_summary(T, float(nll[b]), events[b], int(macs[b]), sizes) for b in range(S)]
        result["dropped_tokens"] = int(np.asarray(token_ids).size - S * L)
        result["native_streams"] = bool(getattr(runner, "native_streams", False))
    return result


def graph_perplexity(graph, tokens) -> float:
    """Perplexity of an IR step graph on `tokens` over the reference interpreter (`GraphRunner`), with
    `evaluate`'s protocol. The function the compiler gives quantize-int8 (``PassOptions.perplexity``)."""
    from .torch_runner import GraphRunner
    return float(evaluate(GraphRunner(graph), tokens, quiet=True)["perplexity"])
