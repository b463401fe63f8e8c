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


class Runner(ABC):
    """Streams tokens through a compiled (or source) EGRU language model at batch 1.

    ``reset()`` zeroes the recurrent state; ``step(token)`` returns the logits [V] (float32) for the next
    token and leaves the step's activity in ``last_stats``; ``run(tokens)`` steps through a sequence
    (state carried, not reset) and returns logits [T, V], with per-step activity in ``last_run``; ``score``
    returns the next-token NLL instead of the logits; ``get_state()`` / ``set_state()`` snapshot and restore
    the recurrent state exactly (what batched streams need)."""

    #: target name ("onnx", "torch", ...)
    target: str = "?"
    #: where it came from (artifact directory or checkpoint path)
    path: str | None = None
    vocab: Vocabulary | None = None
    #: hidden size of each layer (runners set their own; the class default is immutable)
    layer_sizes: tuple[int, ...] | list[int] = ()
    vocab_size: int = 0

    def __init__(self):
        self.last_stats: StepStats | None = None
        self.last_run: RunStats | None = None

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

    def get_state(self):
        """A snapshot of the recurrent state (opaque; `set_state` restores it exactly). Runners that support
        batched streams (`eval --batch-size`) implement both."""
        raise NotImplementedError

    def set_state(self, state) -> None:
        raise NotImplementedError

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


def read_vocab_file(path: Path) -> Vocabulary:
    try:
        words = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read vocabulary {path}: {e}") from None
    if words and words[-1] == "":
        words.pop()
    return Vocabulary(words)


def open_artifact(path, *, trust: bool = False, vocab_file=None, **options) -> Runner:
    """Open a compiled artifact directory (runner chosen by its manifest's ``target``) or a source
    checkpoint file (`TorchRunner`). `vocab_file` (a training text) supplies or overrides the vocabulary;
    `options` go to the runner (e.g. ``threads=1`` for onnx)."""
    p = Path(path)
    if p.is_dir():
        manifest = read_manifest(p)
        factory = _resolve(manifest)
        try:
            runner = factory(p, manifest, **options)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, zipfile.BadZipFile, OSError) as e:
            # the files are as compiled (read_manifest verified them): a malformed manifest or file written by
            # hand, or by an incompatible release
            raise ArtifactError(f"{p}: malformed artifact ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    elif p.is_file():
        from ..frontend import load_source
        from .torch_runner import TorchRunner
        source = load_source(p, trust=trust, vocab_file=vocab_file)
        runner = (source.open_runner(**options) if hasattr(source, "open_runner")      # an IR file
                  else TorchRunner.from_source(source, **options))
    else:
        raise ArtifactError(f"{path}: no such file or directory")
    if vocab_file is not None and p.is_dir():
        vocab = Vocabulary.from_train_file(vocab_file)
        if len(vocab) != runner.vocab_size:
            raise ArtifactError(f"{vocab_file} gives {len(vocab)} words but the model predicts {runner.vocab_size}")
        runner.vocab = vocab
    return runner
