"""The runner interface and the registry that maps an artifact's ``manifest.json`` target to its runner."""
from __future__ import annotations

import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifact import ArtifactError, read_manifest
from ..data import Vocabulary
from ..errors import EgruError


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
        carried, as `run`), per-step activity in ``last_run``. `scorer`: a reusable `scoring.NllScorer`.
        Runners override this to score without materialising a copy of the logits."""
        from .scoring import NllScorer
        return (scorer or NllScorer())(self.run(tokens), targets)

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
        raise ArtifactError(f"the {self.target} runner cannot reset its cell states: --chunked needs a source "
                            "checkpoint, onnx or tvm artifact")

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


#: target name -> factory(path: Path, manifest: dict, **options) -> Runner, for runners registered here
#: directly; the targets' own runners come from the target registry (`targets.registry`)
RUNNERS: dict[str, Callable[..., Runner]] = {}


def register_runner(target: str, factory: Callable[..., Runner]) -> None:
    """Make `open_artifact` open directories whose manifest says ``"target": target`` with
    ``factory(path, manifest, **options)`` (a runner without a compile target; targets registered with
    `targets.register_target` bring their runner)."""
    RUNNERS[target] = factory


def _resolve(manifest: dict):
    target = manifest["target"]
    if target in RUNNERS:
        return RUNNERS[target]
    from ..targets.registry import all_targets, for_manifest
    spec = for_manifest(manifest)
    if spec is not None:
        return spec.open_runner
    known = ", ".join(sorted(set(RUNNERS) | {s.name for s in all_targets()}))
    raise ArtifactError(f"no runner for target {target!r} (known: {known})")


#: largest vocabulary file read (a million words of up to 60 bytes)
VOCAB_FILE_LIMIT = 64 << 20


def read_vocab_file(path: Path, data: bytes | None = None) -> Vocabulary:
    """The vocabulary file `path` of an artifact (one word per line); `data`: its bytes, already read and
    checked (`artifact.read_verified`). Reads are bounded (`VOCAB_FILE_LIMIT`)."""
    from ..fsio import FileError, read_bounded
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


def artifact_projection_activation(manifest: dict) -> str | None:
    """The decoder projection's activation an artifact was compiled with (None: no projection). Artifacts
    written before it was recorded have ``projection`` (onnx, tvm) or a projection in their program (chip)
    and applied relu."""
    act = manifest.get("projection_activation")
    if act is None and (manifest.get("projection") or (manifest.get("spec") or {}).get("projection")):
        from ..model import LEGACY_PROJECTION_ACTIVATION
        act = LEGACY_PROJECTION_ACTIVATION
    return act


def open_artifact(path, *, trust: bool = False, vocab_file=None, projection_activation: str | None = None,
                  **options) -> Runner:
    """Open a compiled artifact directory (runner chosen by its manifest's ``target``) or a source
    checkpoint file (`TorchRunner`). `vocab_file` (a training text) supplies or overrides the vocabulary;
    `projection_activation` the activation of an EvNN state_dict's decoder projection (`load_source`; an
    artifact's is compiled in: a different value is refused); `options` go to the runner (e.g. ``threads=1``
    for onnx). The runner's ``projection_activation`` says the decoder's (None: no projection)."""
    p = Path(path)
    if p.is_dir():
        manifest = read_manifest(p)
        act = artifact_projection_activation(manifest)
        if projection_activation is not None and act is not None and projection_activation != act:
            raise ArtifactError(f"{p} was compiled with projection activation {act}; "
                                f"--projection-activation {projection_activation} needs a recompile")
        factory = _resolve(manifest)
        try:
            runner = factory(p, manifest, **options)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, zipfile.BadZipFile, OSError) as e:
            # the files are as compiled (read_manifest verified them): a malformed manifest or file written by
            # hand, or by an incompatible release
            raise ArtifactError(f"{p}: malformed artifact ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
        runner.projection_activation = act
    elif p.is_file():
        from ..frontend import load_source
        from ..frontend.checkpoint import BaselineCheckpointError
        from .torch_runner import TorchRunner
        try:
            source = load_source(p, trust=trust, vocab_file=vocab_file,
                                 projection_activation=projection_activation)
        except BaselineCheckpointError:                  # a dense GRU/LSTM baseline: evaluates, does not compile
            from .baseline_runner import BaselineRunner
            runner = BaselineRunner.from_file(p, **options)
            if vocab_file is not None:
                runner.vocab = Vocabulary.from_train_file(vocab_file)
            return runner
        runner = (source.open_runner(**options) if hasattr(source, "open_runner")      # an IR file
                  else TorchRunner.from_source(source, **options))
        runner.projection_activation = getattr(source, "projection_activation", None)
    else:
        raise ArtifactError(f"{path}: no such file or directory")
    if vocab_file is not None and p.is_dir():
        vocab = Vocabulary.from_train_file(vocab_file)
        if len(vocab) != runner.vocab_size:
            raise ArtifactError(f"{vocab_file} gives {len(vocab)} words but the model predicts {runner.vocab_size}")
        runner.vocab = vocab
    return runner
