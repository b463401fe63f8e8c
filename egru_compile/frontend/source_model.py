"""What a checkpoint loader produces: `SourceModel` (a PyTorch model or an exported program, plus its
vocabulary), and the loaders' errors (`CheckpointError`, `BaselineCheckpointError`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data import Vocabulary
from ..errors import EgruError
from ..model import EGRULanguageModel


class CheckpointError(EgruError):
    """A checkpoint cannot be loaded; the message says why in one line."""


class BaselineCheckpointError(CheckpointError):
    """A dense GRU / LSTM baseline (`train --model gru|lstm`): it evaluates (`runtime.baseline_runner`) but
    has no events to compile."""

    def __init__(self, path: str, cell: str):
        super().__init__(f"{path} is a dense {cell.upper()} baseline (train --model {cell}): it has no event "
                         "units to compile; `egru-compile eval` evaluates it for comparison")
        self.path, self.cell = path, cell


@dataclass
class SourceModel:
    """What a loader produced: a PyTorch model (or an exported program) plus its vocabulary."""

    kind: str                                   # "egru-checkpoint" | "evnn-state-dict" | "exported-program" | "pickled-module"
    path: str
    sha256: str
    model: EGRULanguageModel | None = None
    exported: torch.export.ExportedProgram | None = None
    vocab: Vocabulary | None = None
    meta: dict = field(default_factory=dict)

    @property
    def hidden_sizes(self) -> list[int]:
        if self.model is not None:
            return list(self.model.config.hidden_sizes)
        sig = self.exported.graph_signature
        vals = {n.name: n.meta.get("val") for n in self.exported.graph.nodes if n.op == "placeholder"}
        return [int(vals[name].shape[-1]) for name in sig.user_inputs[1::2]]

    @property
    def projection_activation(self) -> str | None:
        """The decoder projection's activation ("identity" / "relu"; None without a projection or a model)."""
        if self.model is None or not self.model.config.projection:
            return None
        return self.model.config.projection_activation

    def to_graph(self):
        """Trace into the IR (torch.export of the step, then ATen pattern matching); its constants and value
        bounds checked (`ir.content.check_graph_content`)."""
        from ..ir.content import ContentError, check_graph_content
        from ..ir.verify import VerificationError, verify_step
        from .trace import import_exported_program, trace_model
        graph = import_exported_program(self.exported) if self.exported is not None else trace_model(self.model)
        try:        # also what a pickled module or an exported program holds (not loaded through `_build`)
            verify_step(graph)
            check_graph_content(graph, self.path)
        except VerificationError as e:
            raise CheckpointError(f"{self.path}: {e}") from None
        except ContentError as e:
            raise CheckpointError(str(e)) from None
        return graph

