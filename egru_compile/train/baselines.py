"""Dense GRU / LSTM language model of the same shape as an EGRU LM (embedding -> RNN layers -> tied decoder),
for perplexity / MAC comparisons. Not compiled by the project; saved in its own checkpoint format."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from .forward import ForwardOut, Regularisation, decode, embed, locked_dropout

BASELINE_FORMAT = "egru-compile/baseline-checkpoint"


@dataclass
class DenseRNNConfig:
    vocab_size: int
    embedding_size: int
    hidden_sizes: list[int] = field(default_factory=list)
    cell: str = "gru"  # "gru" | "lstm"

    def __post_init__(self):
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be gru or lstm, not {self.cell!r}")
        if not self.hidden_sizes or self.hidden_sizes[-1] != self.embedding_size:
            raise ValueError("last layer size must equal the embedding size (tied decoder)")

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes)

    def layer_input_sizes(self) -> list[int]:
        return [self.embedding_size] + self.hidden_sizes[:-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DenseRNNConfig":
        return cls(**{k: d[k] for k in ("vocab_size", "embedding_size", "hidden_sizes", "cell") if k in d})


class DenseRNNLanguageModel(nn.Module):
    def __init__(self, config: DenseRNNConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        nn.init.uniform_(self.embeddings.weight, -0.1, 0.1)
        rnn_cls = nn.GRU if config.cell == "gru" else nn.LSTM
        self.rnns = nn.ModuleList(rnn_cls(i, h) for i, h in zip(config.layer_input_sizes(), config.hidden_sizes))
        self.decoder = nn.Linear(config.embedding_size, config.vocab_size)
        self.decoder.weight = self.embeddings.weight
        nn.init.zeros_(self.decoder.bias)

    def init_state(self, batch_size: int = 1):
        w = self.embeddings.weight
        if self.config.cell == "gru":
            return [w.new_zeros(1, batch_size, h) for h in self.config.hidden_sizes]
        return [(w.new_zeros(1, batch_size, h), w.new_zeros(1, batch_size, h)) for h in self.config.hidden_sizes]

    def forward(self, tokens, state=None):
        out = dense_forward(self, tokens, state)
        return out.logits, out.state

    def static_macs(self) -> int:
        gates = 3 if self.config.cell == "gru" else 4
        return sum((i + h) * gates * h for i, h in zip(self.config.layer_input_sizes(), self.config.hidden_sizes))


def dense_forward(model: DenseRNNLanguageModel, tokens: torch.Tensor, state, reg: Regularisation | None = None,
                  training: bool = False, keep_outputs: bool = False, bf16_decoder: bool = False) -> ForwardOut:
    reg = reg or Regularisation()
    if state is None:
        state = model.init_state(tokens.size(1))
    x = embed(model, tokens, reg, training)
    new_state, outs = [], []
    for rnn, st in zip(model.rnns, state):
        if training and reg.dropconnect > 0.0:
            w = rnn.weight_hh_l0
            w = w * (w.new_empty(w.shape).bernoulli_(1.0 - reg.dropconnect) / (1.0 - reg.dropconnect))
            x, st = functional_call(rnn, {"weight_hh_l0": w}, (x, st))
        else:
            x, st = rnn(x, st)
        new_state.append(st)
        if keep_outputs:
            outs.append(x)
        x = locked_dropout(x, reg.dropout, training)
    logits = decode(model, x, bf16_decoder)
    ones = [1.0] * len(model.rnns)
    return ForwardOut(logits, new_state, [], ones, outs if keep_outputs else None)


def save_baseline_checkpoint(path, model: DenseRNNLanguageModel, vocab, meta: dict | None = None) -> None:
    from ..frontend.checkpoint import _atomic_torch_save
    words = vocab.words if hasattr(vocab, "words") else (list(vocab) if vocab is not None else None)
    _atomic_torch_save({"format": BASELINE_FORMAT, "version": 1, "config": model.config.to_dict(), "vocab": words,
                        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "meta": dict(meta or {})}, path)


def load_baseline_checkpoint(path) -> tuple[DenseRNNLanguageModel, list[str] | None, dict]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path}: not a dense baseline checkpoint")
    model = DenseRNNLanguageModel(DenseRNNConfig.from_dict(obj["config"]))
    model.load_state_dict(obj["state_dict"])
    model.eval()
    return model, obj.get("vocab"), dict(obj.get("meta") or {})
