"""Runner for tvm artifacts: loads the exported library (no recompilation), packs the weights, and streams
tokens; per-step activity and MACs come from the kernels' own event lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...runtime.base import ArtifactError, Runner, StepStats, read_vocab_file
from .target import load_weights


class TVMRunner(Runner):
    target = "tvm"

    def __init__(self, path: Path, manifest: dict, threads: int | None = None):
        super().__init__()
        from .kernels import EGRUKernelSpec, TVMStepRunner, load_module
        lib = path / manifest.get("library", "egru_step.so")
        if not lib.is_file():
            raise ArtifactError(f"{path}: library {lib.name} is missing")
        try:
            module = load_module(str(lib))
        except Exception as e:  # noqa: BLE001 - TVM raises its own error types
            raise ArtifactError(f"cannot load {lib}: {str(e).splitlines()[0] if str(e) else e}") from None
        emb, layers, dec_w, dec_b = load_weights(path / manifest.get("weights", "weights.npz"))
        spec = EGRUKernelSpec.from_dict(manifest["spec"])
        self.rt = TVMStepRunner(emb, layers, dec_b, dec_w, module=module, spec=spec)
        self.path = str(path)
        self.layer_sizes = list(spec.hidden_sizes)
        self.vocab_size = spec.vocab_size
        if manifest.get("vocab"):
            self.vocab = read_vocab_file(path / manifest["vocab"])
        # fan-out of each input unit (for the MAC count of a step)
        self.fan_w = [np.diff(L["W"][0]) for L in layers]
        self.fan_r = [np.diff(L["R"][0]) for L in layers]
        self.embed_macs = int(self.fan_w[0].sum())
        self.v = self.rt.views

    @classmethod
    def from_artifact(cls, path, manifest, **options):
        return cls(Path(path), manifest, **options)

    def reset(self) -> None:
        self.rt.reset()

    def step(self, token: int) -> np.ndarray:
        """One token through `egru_run` (K = 1): activity and MACs come from the kernel's own counts."""
        logits, stats = self.rt.run(np.array([self.check_token(token)]), with_stats=True)
        L = len(self.layer_sizes)
        self.last_stats = StepStats(tuple(int(x) for x in stats[0, :L]), int(stats[0, L]) + self.embed_macs)
        return logits.reshape(-1)

    def run(self, tokens) -> np.ndarray:
        """K tokens in one packed call (`egru_run`), per-step activity and MACs from the kernel's own counts."""
        from ...runtime.base import RunStats
        toks = np.asarray(tokens, np.int64).reshape(-1)
        if len(toks) and (toks.min() < 0 or toks.max() >= self.vocab_size):
            self.check_token(int(toks.min() if toks.min() < 0 else toks.max()))
        logits, stats = self.rt.run(toks, with_stats=True)
        L = len(self.layer_sizes)
        self.last_run = RunStats(stats[:, :L].astype(np.int64), stats[:, L].astype(np.int64) + self.embed_macs)
        return logits
