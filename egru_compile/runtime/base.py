"""The runner interface and the registry that maps an artifact's ``manifest.json`` target to its runner."""
from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import Vocabulary
from ..errors import EgruError


class ArtifactError(EgruError):
    """An artifact (compiled directory or source checkpoint) cannot be opened or run."""


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
    (state carried, not reset) and returns logits [T, V], with per-step activity in ``last_run``."""

    #: target name ("onnx", "torch", ...)
    target: str = "?"
    #: where it came from (artifact directory or checkpoint path)
    path: str | None = None
    vocab: Vocabulary | None = None
    layer_sizes: list[int] = []
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

    def check_token(self, token: int) -> int:
        token = int(token)
        if not 0 <= token < self.vocab_size:
            raise ArtifactError(f"token id {token} is outside the vocabulary (0..{self.vocab_size - 1})")
        return token

    def describe(self) -> str:
        return f"{self.target} runner for {self.path} (layers {self.layer_sizes}, vocab {self.vocab_size})"


#: target name -> factory(path: Path, manifest: dict, **options) -> Runner
RUNNERS: dict[str, Callable[..., Runner]] = {}

#: targets whose runner module is imported on first use ("module:attribute")
BUILTIN_RUNNERS = {"onnx": "egru_compile.runtime.onnx_runner:OnnxRunner.from_artifact",
                   "tvm": "egru_compile.targets.tvm.runner:TVMRunner.from_artifact",
                   "loihi-like": "egru_compile.targets.chip.runner:ChipRunner.from_artifact",
                   "spinnaker2-like": "egru_compile.targets.chip.runner:ChipRunner.from_artifact",
                   "loihi2-like": "egru_compile.targets.chip.runner:ChipRunner.from_artifact"}


def register_runner(target: str, factory: Callable[..., Runner]) -> None:
    """Make `open_artifact` open directories whose manifest says ``"target": target`` with
    ``factory(path, manifest, **options)`` (for targets outside this package; the built-in ones are in
    `BUILTIN_RUNNERS`, imported on first use)."""
    RUNNERS[target] = factory


def _resolve(target: str):
    if target in RUNNERS:
        return RUNNERS[target]
    spec = BUILTIN_RUNNERS.get(target)
    if spec is not None:
        mod, attr = spec.split(":")
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
        RUNNERS[target] = obj
        return obj
    known = ", ".join(sorted(set(RUNNERS) | set(BUILTIN_RUNNERS)))
    raise ArtifactError(f"no runner for target {target!r} (known: {known})")


def read_manifest(path: Path) -> dict:
    mf = path / "manifest.json"
    if not mf.is_file():
        raise ArtifactError(f"{path} is not a compiled artifact (no manifest.json)")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{mf} is unreadable: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("target"), str):
        raise ArtifactError(f"{mf} does not name a target")
    return manifest


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
        runner = _resolve(manifest["target"])(p, manifest, **options)
    elif p.is_file():
        from ..frontend import load_source
        from .torch_runner import TorchRunner
        runner = TorchRunner.from_source(load_source(p, trust=trust, vocab_file=vocab_file), **options)
    else:
        raise ArtifactError(f"{path}: no such file or directory")
    if vocab_file is not None and p.is_dir():
        vocab = Vocabulary.from_train_file(vocab_file)
        if len(vocab) != runner.vocab_size:
            raise ArtifactError(f"{vocab_file} gives {len(vocab)} words but the model predicts {runner.vocab_size}")
        runner.vocab = vocab
    return runner
