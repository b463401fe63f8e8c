"""The runner interface every target implements and the runtime dispatches to (the bottom layer under the
targets): `Runner`, its statistics (`StepStats`, `RunStats`, `StreamStats`), `read_vocab_file` (an artifact's
``vocab.txt``) and the next-token NLL scorer (`NllScorer`, `nll_reference`).

Scoring logits: ``nll(logits [K, V], targets [K]) = logsumexp(logits[k]) - logits[k, targets[k]]`` per row, in
nats (float64). The row maximum m is subtracted in float32 (exact for the terms that matter: a rounding of
d = x - m costs ≤ |d|·2^-24 relative in exp(d), and exp(d) ≤ e^-|d|), exp runs in float32 (numpy's SIMD path,
~3× faster than float64 here) and the sum, log, m and the target logit are float64: the result is within
~1e-7 nats of the all-float64 formula (`nll_reference`; tests/runtime/test_batch_eval.py checks 1e-6) — far below the
printed precision of perplexity — at about a quarter of its time. Scratch buffers are reused across calls, so
scoring a chunk allocates only its [K] results.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifact import ArtifactError
from .data import Vocabulary
from .errors import EgruError, UsageError, option


@dataclass(frozen=True)
class StepStats:
    """Activity of one step: active units of each layer's new output y, and the step's MACs (active input
    units' non-zero fan-out over the RNN layers' input and recurrent matrices; dense inputs fully active)."""

    events: tuple[int, ...]
    macs: int


@dataclass
class RunStats:
    """Per-step statistics of `Runner.run`: events [T, L] and macs [T]."""

    events: np.ndarray
    macs: np.ndarray


@dataclass
class StreamStats:
    """Activity of one `Runner.step_streams` call: per-stream events int64 [B, L] and macs int64 [B]."""

    events: np.ndarray
    macs: np.ndarray


class Runner(ABC):
    """Streams tokens through a compiled (or source) EGRU language model at batch 1.

    ``reset()`` zeroes the recurrent state; ``step(token)`` returns the logits [V] (float32) for the next
    token and leaves the step's activity in ``last_stats``; ``run(tokens)`` steps through a sequence
    (state carried, not reset) and returns logits [T, V], with per-step activity in ``last_run``; ``score``
    returns the next-token NLL instead of the logits; ``get_state()`` / ``set_state()`` snapshot and restore
    the recurrent state exactly.

    Batched streams: ``reset_streams(B)`` starts B independent streams from a zero state; ``step_streams(tokens
    [B])`` advances each by one token (logits [B, V], activity in ``last_stream_stats``); ``score_streams(tokens
    [T, B], targets [T, B])`` returns the NLL [T, B] (activity in ``last_run``: events [T, B, L], macs [T, B]).
    This class implements them with one saved state per stream (`get_state` / `set_state` around the batch-1
    `step` / `score`), so every runner with a state snapshot has them; runners that compute the B streams in
    one call override them (``native_streams``). Either way each stream's numbers equal its own batch-1 run.
    The batch-1 state (`reset` / `step`) and the streams are separate: the base implementation clobbers the
    batch-1 state, native ones leave it alone."""

    #: target name ("onnx", "torch", ...)
    target: str = "?"
    #: where it came from (artifact directory or checkpoint path)
    path: str | None = None
    vocab: Vocabulary | None = None
    #: hidden size of each layer (runners set their own; the class default is immutable)
    layer_sizes: tuple[int, ...] | list[int] = ()
    vocab_size: int = 0
    #: number of streams `reset_streams` started (0 before)
    stream_batch: int = 0

    def __init__(self):
        self.last_stats: StepStats | None = None
        self.last_run: RunStats | None = None
        self.last_stream_stats: StreamStats | None = None

    @abstractmethod
    def reset(self) -> None:
        ...

    @abstractmethod
    def step(self, token: int) -> np.ndarray:
        ...

    def run(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens, np.int64).reshape(-1)
        logits = np.empty((len(tokens), self.vocab_size), np.float32)
        events = np.zeros((len(tokens), len(self.layer_sizes)), np.int64)
        macs = np.zeros(len(tokens), np.int64)
        for t, tok in enumerate(tokens):
            logits[t] = self.step(int(tok))
            events[t] = self.last_stats.events
            macs[t] = self.last_stats.macs
        self.last_run = RunStats(events, macs)
        return logits

    def score(self, tokens, targets, scorer=None) -> np.ndarray:
        """Negative log-likelihood (nats, float64 [K]) of ``targets[k]`` after stepping ``tokens[k]`` (state
        carried, as `run`), per-step activity in ``last_run``. `scorer`: a reusable `NllScorer`.
        Runners override this to score without materialising a copy of the logits."""
        tokens, targets = self.check_score_args(tokens, targets)
        return (scorer or NllScorer())(self.run(tokens), targets)

    def check_score_args(self, tokens, targets) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, targets) as int64 vectors of one length, every id in the vocabulary; else ArtifactError
        (every runner refuses what the tvm library refuses)."""
        toks = np.asarray(tokens).reshape(-1)
        tg = np.asarray(targets).reshape(-1)
        for name, a in (("token", toks), ("target", tg)):
            if a.size and not np.issubdtype(a.dtype, np.integer):
                raise ArtifactError(f"{name} ids must be integers (got {a.dtype})")
        if len(tg) != len(toks):
            raise ArtifactError(f"score needs one target per token ({len(toks)} tokens, {len(tg)} targets)")
        for name, a in (("token", toks), ("target", tg)):
            bad = a[(a < 0) | (a >= self.vocab_size)]
            if bad.size:
                raise ArtifactError(f"{name} id {int(bad[0])} is outside the vocabulary (0..{self.vocab_size - 1})")
        return toks.astype(np.int64), tg.astype(np.int64)

    # ------------------------------------------------------------------ batched streams
    def reset_streams(self, batch: int) -> None:
        """Start `batch` independent streams, every state zero."""
        batch = int(batch)
        if batch < 1:
            raise ArtifactError(f"batch must be at least 1 (got {batch})")
        if not self.supports_state:
            raise EgruError(f"the {self.target} runner cannot save its state (get_state / set_state), so it "
                            "cannot run several streams: use batch size 1")
        self.reset()
        self.stream_states = [self.get_state() for _ in range(batch)]
        self.stream_batch = batch
        self.last_stream_stats = None

    def _stream_tokens(self, tokens, ndim: int) -> np.ndarray:
        B = self.stream_batch
        if B == 0:
            raise EgruError("call reset_streams(batch) before stepping streams")
        t = np.asarray(tokens, np.int64)
        if t.ndim != ndim or t.shape[-1] != B:
            want = "[B]" if ndim == 1 else "[T, B]"
            raise EgruError(f"tokens of shape {list(t.shape)} for {B} streams: expected {want} with B = {B}")
        return t

    def step_streams(self, tokens) -> np.ndarray:
        """One token per stream (int [B]) -> logits float32 [B, V]; per-stream activity in
        ``last_stream_stats`` (`StreamStats`: events [B, L], macs [B])."""
        tokens = self._stream_tokens(tokens, 1)
        B = len(tokens)
        logits = np.empty((B, self.vocab_size), np.float32)
        events = np.zeros((B, len(self.layer_sizes)), np.int64)
        macs = np.zeros(B, np.int64)
        for b in range(B):
            self.set_state(self.stream_states[b])
            logits[b] = self.step(int(tokens[b]))
            events[b] = self.last_stats.events
            macs[b] = self.last_stats.macs
            self.stream_states[b] = self.get_state()
        self.last_stream_stats = StreamStats(events, macs)
        return logits

    def score_streams(self, tokens, targets, scorer=None) -> np.ndarray:
        """NLL (nats, float64 [T, B]) of ``targets[t, b]`` after stream b steps ``tokens[t, b]`` (each stream's
        state carried, as `score`); activity in ``last_run`` (events [T, B, L], macs [T, B])."""
        tokens = self._stream_tokens(tokens, 2)
        targets = np.asarray(targets, np.int64)
        if targets.shape != tokens.shape:
            raise EgruError(f"targets of shape {list(targets.shape)} for tokens of shape {list(tokens.shape)}")
        T, B = tokens.shape
        nll = np.zeros((T, B), np.float64)
        events = np.zeros((T, B, len(self.layer_sizes)), np.int64)
        macs = np.zeros((T, B), np.int64)
        for b in range(B):
            self.set_state(self.stream_states[b])
            nll[:, b] = self.score(tokens[:, b], targets[:, b], scorer)
            run = self.last_run
            if run is not None:
                events[:, b] = run.events
                macs[:, b] = run.macs
            self.stream_states[b] = self.get_state()
        self.last_run = RunStats(events, macs)
        return nll

    @property
    def native_streams(self) -> bool:
        """True when this runner computes the streams in one call (overrides the per-stream fallback)."""
        return type(self).score_streams is not Runner.score_streams

    def get_state(self):
        """A snapshot of the recurrent state (opaque; `set_state` restores it exactly). Runners that support
        batched streams (`eval --batch-size`) implement both."""
        raise NotImplementedError

    def set_state(self, state) -> None:
        raise NotImplementedError

    def reset_cells(self) -> None:
        """Zero every layer's cell state c and keep its output y: EvNN's chunk boundary (its
        ``LanguageModel.forward`` hands each layer only its last y as the next chunk's initial state), used by
        ``eval --chunked BPTT``."""
        raise UsageError(f"the {self.target} runner cannot reset its cell states: {option('chunked')} needs a "
                            "source checkpoint, onnx or tvm artifact")

    @property
    def supports_state(self) -> bool:
        return type(self).get_state is not Runner.get_state and type(self).set_state is not Runner.set_state

    def check_token(self, token: int) -> int:
        token = int(token)
        if not 0 <= token < self.vocab_size:
            raise ArtifactError(f"token id {token} is outside the vocabulary (0..{self.vocab_size - 1})")
        return token

    def describe(self) -> str:
        return f"{self.target} runner for {self.path} (layers {self.layer_sizes}, vocab {self.vocab_size})"


#: largest vocabulary file read (a million words of up to 60 bytes)
VOCAB_FILE_LIMIT = 64 << 20


def read_vocab_file(path: Path, data: bytes | None = None) -> Vocabulary:
    """The vocabulary file `path` of an artifact (one word per line); `data`: its bytes, already read and
    checked (`artifact.read_verified`). Reads are bounded (`VOCAB_FILE_LIMIT`)."""
    from .fsio import FileError, read_bounded
    try:
        if data is None:
            data = read_bounded(path, VOCAB_FILE_LIMIT, "vocabulary")
        words = data.decode("utf-8").split("\n")
    except FileError as e:
        raise ArtifactError(str(e)) from None
    except UnicodeDecodeError as e:
        raise ArtifactError(f"cannot read vocabulary {path}: {e}") from None
    if words and words[-1] == "":
        words.pop()
    return Vocabulary(words)


#: bytes of float32 scratch per block of rows: the block stays in L2 between max, subtract, exp and sum
BLOCK_BYTES = 1 << 18


class NllScorer:
    """Reusable scratch for the NLL of logits rows (one per evaluation; not thread-safe). Rows are processed
    in blocks of ~`BLOCK_BYTES` so each row is read from memory once (≈ 2× faster than whole-array passes over
    a [256, 10,000] chunk on this machine)."""

    def __init__(self):
        self._buf: np.ndarray | None = None

    def __call__(self, logits, targets) -> np.ndarray:
        tg = np.asarray(targets, np.int64).reshape(-1)
        x = np.asarray(logits)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        x = x.reshape(len(tg), -1)
        K, V = x.shape
        R = max(1, BLOCK_BYTES // (4 * max(V, 1)))
        if self._buf is None or self._buf.shape != (R, V):
            self._buf = np.empty((R, V), np.float32)
        out = np.empty(K, np.float64)
        for i in range(0, K, R):
            xb = x[i:i + R]
            b = self._buf[:len(xb)]
            m = xb.max(axis=1, keepdims=True)
            np.subtract(xb, m, out=b)
            np.exp(b, out=b)
            out[i:i + R] = m[:, 0] + np.log(b.sum(axis=1, dtype=np.float64))
        return out - x[np.arange(K), tg]


def nll_reference(logits, targets) -> np.ndarray:
    """The same quantity entirely in float64 (the test reference)."""
    x = np.asarray(logits, np.float64).reshape(len(targets), -1)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return lse - x[np.arange(len(targets)), np.asarray(targets, np.int64)]
