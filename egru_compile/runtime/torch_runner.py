"""Reference runners: `TorchRunner` (PyTorch ``model.step`` of a source checkpoint) and `GraphRunner`
(the IR interpreter). Both report the same activity and MACs as the compiled artifacts."""
from __future__ import annotations

import numpy as np

from ..ir import Stepper, observed_step
from ..passes.count_macs import collect_matrices, step_macs
from ..passes.utils import state_output
from ..artifact import ArtifactError
from ..runner import Runner, StepStats


def _masks_folded(model):
    """`model`, or — when it carries ``torch.nn.utils.prune`` reparametrizations — a copy whose pruned weights
    are plain parameters holding ``orig * mask`` (the values the prune hooks compute, so the logits are the
    same bit for bit). The hooks recompute every masked matrix on every call; a step of the example paid for
    that ~4x over. The caller's model keeps its masks."""
    import copy

    from torch.nn.utils import prune
    hooked = [(name, mod) for name, mod in model.named_modules()
              if any(isinstance(h, prune.BasePruningMethod) for h in mod._forward_pre_hooks.values())]
    if not hooked:
        return model
    for _, mod in hooked:              # the hooks' last product (a non-leaf tensor) cannot be deep-copied
        for hook in [h for h in mod._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]:
            setattr(mod, hook._tensor_name, getattr(mod, hook._tensor_name).detach())
    model = copy.deepcopy(model)
    for name, _ in hooked:
        mod = model.get_submodule(name)
        for hook in [h for h in mod._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]:
            prune.remove(mod, hook._tensor_name)
    return model


class TorchRunner(Runner):
    """Runs ``EGRULanguageModel.step`` (float32, no grad). MACs per step: layer 0's input matrix counts all
    its non-zeros (the embedding input is dense); every other matrix counts the non-zero fan-out of the
    input units that are active (y != 0) — layer l's input matrix the units of layer l-1 that fired this
    step, its recurrent matrix the units of layer l that fired in the previous step. Fan-outs are of
    ``kernel`` / ``recurrent_kernel`` as the model uses them (prune masks applied)."""

    target = "torch"

    def __init__(self, model, vocab=None, path: str | None = None):
        super().__init__()
        import torch
        self.torch = torch
        self.model = _masks_folded(model).eval()
        self.vocab = vocab
        self.path = path
        cfg = model.config
        self.layer_sizes = list(cfg.hidden_sizes)
        self.vocab_size = int(cfg.vocab_size)
        with torch.no_grad():
            self.fan_in, self.fan_rec = [], []
            for layer in model.rnns:
                k = layer.kernel.detach()
                r = layer.recurrent_kernel.detach()
                self.fan_in.append((k != 0).sum(dim=1).cpu().numpy().astype(np.int64))
                self.fan_rec.append((r != 0).sum(dim=1).cpu().numpy().astype(np.int64))
        self.reset()

    @classmethod
    def from_source(cls, source, **options) -> "TorchRunner":
        if source.model is None:
            raise ArtifactError(f"{source.path}: a {source.kind} has no PyTorch model to run; compile it and "
                                "evaluate the compiled artifact")
        unknown = set(options) - {"threads", "io_binding", "profile_prefix"}
        if unknown:
            raise ArtifactError(f"unknown runner option(s) for a PyTorch checkpoint: {', '.join(sorted(unknown))}")
        if options.get("threads"):
            import torch
            torch.set_num_threads(int(options["threads"]))
        return cls(source.model, source.vocab, source.path)

    def reset(self) -> None:
        self.state = self.model.init_state(1)
        self.last_stats = None

    def get_state(self):
        return [(c.clone(), y.clone()) for c, y in self.state]

    def set_state(self, state) -> None:
        self.state = [(c.clone(), y.clone()) for c, y in state]

    def reset_cells(self) -> None:
        self.state = [(c.new_zeros(c.shape), y) for c, y in self.state]

    def step(self, token: int) -> np.ndarray:
        torch = self.torch
        token = self.check_token(token)
        prev = [(y.reshape(-1) != 0).numpy() for _, y in self.state]
        with torch.no_grad():
            logits, self.state = self.model.step(torch.tensor([token], dtype=torch.long), self.state)
        cur = [(y.reshape(-1) != 0).numpy() for _, y in self.state]
        macs = 0
        for l in range(len(self.layer_sizes)):
            macs += int(self.fan_in[l].sum()) if l == 0 else int(self.fan_in[l][cur[l - 1]].sum())
            macs += int(self.fan_rec[l][prev[l]].sum())
        self.last_stats = StepStats(tuple(int(c.sum()) for c in cur), macs)
        return logits.reshape(-1).numpy().astype(np.float32, copy=True)


class GraphRunner(Runner):
    """Runs an IR step graph with the reference interpreter; MACs as the ``count-macs`` pass counts them."""

    target = "ir"

    def __init__(self, graph, vocab=None, path: str | None = None):
        super().__init__()
        self.graph = graph
        self.vocab = vocab
        self.path = path
        self.stepper = Stepper(graph)
        sizes = {v.meta["layer"]: v.type.shape[-1] for v in graph.outputs if v.meta.get("role") == "state_out"}
        self.layer_sizes = [sizes[l] for l in sorted(sizes)]
        self.vocab_size = int(self.stepper.logits_out.type.shape[-1])
        self.mats = [m for m in collect_matrices(graph) if m.layer is not None]
        self.ys = [graph.outputs.index(state_output(graph, l, "y")) for l in sorted(sizes)]
        self._want = {m.x for m in self.mats if m.event}
        self.reset()

    def reset(self) -> None:
        self.stepper.reset()
        self.last_stats = None

    def get_state(self):
        return {i: self.stepper.inputs[i].copy() for i, _ in self.stepper.pairs}

    def set_state(self, state) -> None:
        for i, a in state.items():
            self.stepper.inputs[i] = a.copy()

    def reset_cells(self) -> None:
        for i, _ in self.stepper.pairs:
            if self.graph.inputs[i].meta.get("kind") == "c":
                self.stepper.inputs[i] = np.zeros_like(self.stepper.inputs[i])

    def step(self, token: int) -> np.ndarray:
        outs, seen = observed_step(self.stepper, self._want, self.check_token(token))
        macs = int(step_macs(self.mats, seen).sum())
        events = tuple(int(np.count_nonzero(outs[j])) for j in self.ys)
        self.last_stats = StepStats(events, macs)
        return np.asarray(self.stepper.logits(outs), np.float32).reshape(-1).copy()
