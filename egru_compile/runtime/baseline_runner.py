"""`BaselineRunner`: the dense GRU / LSTM baselines of `egru-compile train --model gru|lstm`, run step by step
so that `eval` and the Python API report their perplexity with the same protocol as every EGRU artifact
(zero state, state carried through the text). They are not compiled (no events to exploit): every unit is
active every step and each step costs the dense MACs of the recurrent layers (`static_macs`)."""
from __future__ import annotations

import numpy as np

from ..artifact import ArtifactError
from ..runner import Runner, StepStats


class BaselineRunner(Runner):
    """PyTorch ``nn.GRU`` / ``nn.LSTM`` layers of a dense baseline checkpoint, one token per step (float32).
    Activity is 1 in every layer (dense outputs); MACs per step are ``(input + hidden) · gates · hidden`` summed
    over the layers (gates: 3 for GRU, 4 for LSTM), as `DenseRNNLanguageModel.static_macs` counts them."""

    def __init__(self, model, vocab=None, path: str | None = None):
        super().__init__()
        import torch
        self.torch = torch
        self.model = model.eval()
        self.vocab = vocab
        self.path = path
        self.target = model.config.cell
        self.layer_sizes = list(model.config.hidden_sizes)
        self.vocab_size = int(model.config.vocab_size)
        self.macs = int(model.static_macs())
        self.reset()

    @classmethod
    def from_file(cls, path, **options) -> "BaselineRunner":
        from ..data import Vocabulary
        from ..train.baselines import load_baseline_checkpoint
        unknown = set(options) - {"threads"}
        if unknown:
            raise ArtifactError(f"unknown runner option(s) for a baseline checkpoint: {', '.join(sorted(unknown))}")
        if options.get("threads"):
            import torch
            torch.set_num_threads(int(options["threads"]))
        try:
            model, words, _ = load_baseline_checkpoint(path)
        except (ValueError, KeyError, RuntimeError, TypeError) as e:
            raise ArtifactError(f"{path}: unreadable baseline checkpoint ({str(e).splitlines()[0][:160]})") from None
        return cls(model, Vocabulary(words) if words else None, str(path))

    def reset(self) -> None:
        self.state = self.model.init_state(1)
        self.last_stats = None

    def get_state(self):
        return self.torch.utils._pytree.tree_map(lambda t: t.clone(), self.state)

    def set_state(self, state) -> None:
        self.state = self.torch.utils._pytree.tree_map(lambda t: t.clone(), state)

    def step(self, token: int) -> np.ndarray:
        torch = self.torch
        token = self.check_token(token)
        with torch.no_grad():
            x = self.model.embeddings(torch.tensor([[token]], dtype=torch.long))       # [1, 1, E]
            new = []
            for rnn, st in zip(self.model.rnns, self.state):
                x, st = rnn(x, st)
                new.append(st)
            self.state = new
            logits = self.model.decoder(x)
        self.last_stats = StepStats(tuple(self.layer_sizes), self.macs)
        return logits.reshape(-1).numpy().astype(np.float32, copy=True)
