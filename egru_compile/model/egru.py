"""EGRU layer and EGRU language model in the EvNN parameter layout.

Per layer (gate order z, r, g):

    kernel W [in, 3h], recurrent_kernel R [h, 3h], bias [3h], recurrent_bias [3h], thr [h]

    gx = x @ W + bias                 gh = y @ R + recurrent_bias
    z  = sigmoid(gx_z + gh_z)         r  = sigmoid(gx_r + gh_r)
    g  = tanh(gx_g + r * gh_g)
    c~ = z * c + (1 - z) * g
    o  = H(c~ - thr)                  (thr clamped to [0, 1])
    y  = o * c~                       (the event sent forward and fed back)
    c  = c~ - o * thr                 (reset by subtraction)

Decoder (EvNN's two configurations): without projection the last layer has the embedding size and
``logits = E · y_last + b`` (E the embedding table, tied); with ``projection=True`` every layer may have
any size and ``logits = E · a(P · y_last + p) + b`` (``decoder.projection.weight`` P [emb, h_last],
``decoder.projection.bias`` p [emb]) where the projection activation ``a`` is ``projection_activation``:
``"identity"`` (EvNN >= 0.2.0, the default: a plain ``nn.Linear``) or ``"relu"`` (EvNN's March-2023 code,
``F.relu(self.projection(x))``). A state_dict does not say which of the two trained it.

`EGRULanguageModel.step` is the streaming single-token function the compiler traces; `forward` runs a
whole sequence and gives exactly the same result as a loop over `step`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn


#: the decoder projection's activation: "identity" = EvNN >= 0.2.0 (May 2024), "relu" = EvNN's 2023 code
PROJECTION_ACTIVATIONS = ("identity", "relu")
DEFAULT_PROJECTION_ACTIVATION = "identity"
#: what a project checkpoint / artifact with a projection but no recorded activation was built with
#: (egru-compile applied relu before the activation became an option)
LEGACY_PROJECTION_ACTIVATION = "relu"


def projection_line(activation: str) -> str:
    """One line naming the decoder projection's activation (inspect, reports)."""
    if activation == "relu":
        return "relu(P · y + p), activation relu (EvNN's 2023 code; --projection-activation relu)"
    return "P · y + p, activation identity (EvNN >= 0.2.0; --projection-activation identity)"


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward, EvNN pseudo-derivative backward: dampening * max(0, 1 - support * |v|)."""

    @staticmethod
    def forward(ctx, v, dampening: float, support: float):
        ctx.save_for_backward(v)
        ctx.dampening = dampening
        ctx.support = support
        return (v > 0).to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (v,) = ctx.saved_tensors
        surrogate = ctx.dampening * torch.clamp(1.0 - ctx.support * v.abs(), min=0.0)
        return grad_out * surrogate, None, None


def heaviside(v: torch.Tensor, dampening: float = 0.7, support: float = 1.0) -> torch.Tensor:
    """H(v) = 1 where v > 0 else 0. Uses the surrogate gradient only when autograd needs it, so
    inference traces to plain ATen comparison ops."""
    if torch.is_grad_enabled() and v.requires_grad:
        return SpikeFunction.apply(v, dampening, support)
    return (v > 0).to(v.dtype)


class EGRULayer(nn.Module):
    """One EGRU layer with EvNN parameter names (`kernel`, `recurrent_kernel`, `bias`, `recurrent_bias`, `thr`)."""

    def __init__(self, input_size: int, hidden_size: int, dampening: float = 0.7, support: float = 1.0,
                 thr_init: tuple[float, float] = (0.0, 0.5)):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.dampening = dampening
        self.support = support
        h = hidden_size
        self.kernel = nn.Parameter(torch.empty(input_size, 3 * h))
        self.recurrent_kernel = nn.Parameter(torch.empty(h, 3 * h))
        self.bias = nn.Parameter(torch.zeros(3 * h))
        self.recurrent_bias = nn.Parameter(torch.zeros(3 * h))
        self.thr = nn.Parameter(torch.empty(h))
        self._thr_init = thr_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.kernel)
        nn.init.orthogonal_(self.recurrent_kernel)
        nn.init.zeros_(self.bias)
        nn.init.zeros_(self.recurrent_bias)
        lo, hi = self._thr_init
        with torch.no_grad():
            self.thr.uniform_(lo, hi)

    def cell(self, x: torch.Tensor, c: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: x [B, in], c/y [B, h] -> (c_next, y_next)."""
        h = self.hidden_size
        gx = x @ self.kernel + self.bias
        gh = y @ self.recurrent_kernel + self.recurrent_bias
        gx_z, gx_r, gx_g = gx.split(h, dim=-1)
        gh_z, gh_r, gh_g = gh.split(h, dim=-1)
        z = torch.sigmoid(gx_z + gh_z)
        r = torch.sigmoid(gx_r + gh_r)
        g = torch.tanh(gx_g + r * gh_g)
        c_tilde = z * c + (1.0 - z) * g
        thr = self.thr.clamp(0.0, 1.0)
        o = heaviside(c_tilde - thr, self.dampening, self.support)
        y_next = o * c_tilde
        c_next = c_tilde - o * thr
        return c_next, y_next

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x [B, in] -> one step, returns (y, (c, y)); x [T, B, in] -> (y [T, B, h], final (c, y)).

        Going through `__call__` (not `cell`) lets `torch.nn.utils.prune` hooks refresh masked weights."""
        if x.dim() == 2:
            if state is None:
                state = (x.new_zeros(x.shape[0], self.hidden_size), x.new_zeros(x.shape[0], self.hidden_size))
            c, y = self.cell(x, *state)
            return y, (c, y)
        T, B, _ = x.shape
        if state is None:
            c = x.new_zeros(B, self.hidden_size)
            y = x.new_zeros(B, self.hidden_size)
        else:
            c, y = state
        ys = []
        for t in range(T):
            c, y = self.cell(x[t], c, y)
            ys.append(y)
        return torch.stack(ys), (c, y)


@dataclass
class EGRUConfig:
    """Architecture of an EGRU language model. Without `projection`, `hidden_sizes[-1]` must equal
    `embedding_size` (tied decoder); with it, the projection maps the last layer to the embedding size."""

    vocab_size: int
    embedding_size: int
    hidden_sizes: list[int] = field(default_factory=list)
    dampening: float = 0.7
    support: float = 1.0
    projection: bool = False
    projection_activation: str = DEFAULT_PROJECTION_ACTIVATION

    def __post_init__(self):
        self.projection = bool(self.projection)
        if self.projection_activation not in PROJECTION_ACTIVATIONS:
            raise ValueError(f"projection_activation must be one of {', '.join(PROJECTION_ACTIVATIONS)}, "
                             f"got {self.projection_activation!r}")
        self.hidden_sizes = [int(h) for h in self.hidden_sizes]
        if not self.hidden_sizes:
            raise ValueError("EGRUConfig needs at least one layer in hidden_sizes")
        if not self.projection and self.hidden_sizes[-1] != self.embedding_size:
            raise ValueError(
                f"last layer size {self.hidden_sizes[-1]} must equal embedding size {self.embedding_size} "
                "(decoder is tied to the embedding; a model with a projection decoder sets projection)")
        if self.vocab_size <= 0 or self.embedding_size <= 0 or min(self.hidden_sizes) <= 0:
            raise ValueError("EGRUConfig sizes must be positive")

    @property
    def num_layers(self) -> int:
        return len(self.hidden_sizes)

    def layer_input_sizes(self) -> list[int]:
        return [self.embedding_size] + self.hidden_sizes[:-1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EGRUConfig":
        known = {k: d[k] for k in ("vocab_size", "embedding_size", "hidden_sizes", "dampening", "support",
                                    "projection", "projection_activation") if k in d}
        if known.get("projection") and "projection_activation" not in known:
            # written before the activation was recorded: egru-compile then always applied relu
            known["projection_activation"] = LEGACY_PROJECTION_ACTIVATION
        return cls(**known)


class TiedDecoder(nn.Module):
    """Decoder whose weight is the embedding table (EvNN: `decoder.decoder.weight` is the embedding), with
    EvNN's optional projection first: ``a(projection(y))`` maps the last layer [h] to the embedding size,
    ``a`` = identity (EvNN >= 0.2.0) or relu (EvNN's 2023 code)."""

    def __init__(self, embedding: nn.Embedding, projection_input: int | None = None,
                 projection_activation: str = DEFAULT_PROJECTION_ACTIVATION):
        super().__init__()
        if projection_activation not in PROJECTION_ACTIVATIONS:
            raise ValueError(f"projection_activation must be one of {', '.join(PROJECTION_ACTIVATIONS)}")
        self.projection_activation = projection_activation
        if projection_input is not None:
            self.projection = nn.Linear(projection_input, embedding.embedding_dim)
        self.decoder = nn.Linear(embedding.embedding_dim, embedding.num_embeddings)
        self.decoder.weight = embedding.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "projection"):
            y = self.projection(y)
            if self.projection_activation == "relu":
                y = torch.relu(y)
        return self.decoder(y)


class EGRULanguageModel(nn.Module):
    """Embedding -> EGRU layers -> [projection, relu or not] -> tied decoder, parameter names as in EvNN's
    LanguageModel."""

    def __init__(self, config: EGRUConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        nn.init.uniform_(self.embeddings.weight, -0.1, 0.1)
        sizes = config.layer_input_sizes()
        self.rnns = nn.ModuleList(
            EGRULayer(i, h, config.dampening, config.support) for i, h in zip(sizes, config.hidden_sizes))
        self.decoder = TiedDecoder(self.embeddings, config.hidden_sizes[-1] if config.projection else None,
                                   config.projection_activation)

    def init_state(self, batch_size: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        w = self.embeddings.weight
        return [(w.new_zeros(batch_size, h), w.new_zeros(batch_size, h)) for h in self.config.hidden_sizes]

    def step(self, tokens: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]]):
        """Streaming single token: tokens [B] -> (logits [B, V], new state [(c, y)] per layer)."""
        x = self.embeddings(tokens)
        new_state = []
        for layer, st in zip(self.rnns, state):
            x, st = layer(x, st)
            new_state.append(st)
        return self.decoder(x), new_state

    def forward(self, tokens: torch.Tensor, state=None, return_activity: bool = False):
        """tokens [T, B] -> logits [T, B, V], final state (and per-layer outputs y when return_activity)."""
        T, B = tokens.shape
        if state is None:
            state = self.init_state(B)
        x = self.embeddings(tokens)
        outputs = []
        new_state = []
        for layer, st in zip(self.rnns, state):
            x, st = layer(x, st)
            new_state.append(st)
            outputs.append(x)
        logits = self.decoder(x)
        if return_activity:
            return logits, new_state, outputs
        return logits, new_state


class StepModule(nn.Module):
    """Flat-signature wrapper around `step` for tracing: (tokens, c0, y0, c1, y1, ...) ->
    (logits, c0', y0', c1', y1', ...)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens, *states):
        pairs = [(states[2 * i], states[2 * i + 1]) for i in range(len(states) // 2)]
        logits, new_state = self.model.step(tokens, pairs)
        flat = [logits]
        for c, y in new_state:
            flat += [c, y]
        return tuple(flat)
