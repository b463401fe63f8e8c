"""Runner for chip artifacts: `egru-compile eval DIR` streams tokens through the spiking simulator of the
placed program (weights as the chip holds them), reporting activity and the synaptic ops the cores did."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...runtime.base import ArtifactError, Runner, StepStats, read_vocab_file
from . import load_program
from .network import build_network
from .simulate import ChipSimulator


class ChipRunner(Runner):
    def __init__(self, path: Path, manifest: dict):
        super().__init__()
        program = path / manifest.get("program", "program.npz")
        if not program.is_file():
            raise ArtifactError(f"{path}: program file {program.name} is missing")
        try:
            stack, placement = load_program(program)
        except (OSError, ValueError, KeyError) as e:
            raise ArtifactError(f"{program} is unreadable: {e}") from None
        self.target = manifest["target"]
        self.path = str(path)
        self.layer_sizes = stack.hidden_sizes
        self.vocab_size = stack.vocab_size
        if manifest.get("vocab"):
            self.vocab = read_vocab_file(path / manifest["vocab"])
        self.sim = ChipSimulator(stack, build_network(stack), placement)

    @classmethod
    def from_artifact(cls, path, manifest, **options):
        return cls(Path(path), manifest)

    def reset(self) -> None:
        self.sim.reset()

    def step(self, token: int) -> np.ndarray:
        logits = self.sim.step(self.check_token(token))
        self.last_stats = StepStats(tuple(int(a) for a in self.sim.last_active), int(self.sim.last_synops))
        return logits
