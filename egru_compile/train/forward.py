"""Training-time forward pass for `EGRULanguageModel`.

Numerically the same cell as `EGRULayer.cell` (z, r, g gate order, reset by subtraction, thr clamped to
[0, 1], EvNN surrogate gradient), with three differences that only matter for speed and regularisation:

* the input projection ``x @ W + bias`` is computed for the whole window in one matmul;
* DropConnect multiplies ``recurrent_kernel`` by a (rescaled) Bernoulli mask *inside* the forward, so the
  saved parameters stay the plain EvNN ones (no ``weight_raw`` copies, no hooks);
* prune masks are applied explicitly (``<name>_orig * <name>_mask``), so the optimizer's in-place updates of
  ``*_orig`` are always seen (the prune pre-hook only refreshes ``module.<name>`` on ``module(...)`` calls).

In eval mode with no dropout it matches ``EGRULanguageModel.forward`` (tested).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model import EGRULanguageModel, EGRULayer, SpikeFunction


def effective_weight(module: torch.nn.Module, name: str) -> torch.Tensor:
    """The weight a forward uses: ``orig * mask`` when `torch.nn.utils.prune` is applied, else the parameter."""
    mask = getattr(module, name + "_mask", None)
    if mask is not None:
        return getattr(module, name + "_orig") * mask
    return getattr(module, name)


@dataclass
class Regularisation:
    dropout: float = 0.0          # locked dropout between layers and before the decoder
    dropout_emb: float = 0.0      # locked dropout on the embedding output
    dropout_words: float = 0.0    # drop whole word types (AWD "embedding dropout")
    dropconnect: float = 0.0      # DropConnect on recurrent weights (one mask per window)


@dataclass
class ForwardOut:
    logits: torch.Tensor                       # [T, B, V]
    state: list                                # [(c, y)] per layer (not detached)
    spikes: list = field(default_factory=list)  # per layer: mean of o over T, B, h (differentiable, surrogate)
    active: list = field(default_factory=list)  # per layer: fraction of y != 0 (float, no grad)
    outputs: list | None = None                 # per layer y [T, B, h] when asked


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout: one mask per sequence, shared over time. x [T, B, d]."""
    if not training or p <= 0.0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)
    return x * mask


def embed(model: torch.nn.Module, tokens: torch.Tensor, reg: Regularisation, training: bool) -> torch.Tensor:
    emb = model.embeddings.weight
    x = F.embedding(tokens, emb)
    if training and reg.dropout_words > 0.0:
        keep = emb.new_empty(emb.size(0)).bernoulli_(1.0 - reg.dropout_words) / (1.0 - reg.dropout_words)
        x = x * keep[tokens].unsqueeze(-1)
    return locked_dropout(x, reg.dropout_emb, training)


def egru_layer_seq(layer: EGRULayer, x: torch.Tensor, state, dropconnect: float = 0.0, training: bool = False):
    """x [T, B, in] -> (y [T, B, h], (c, y) final, mean spike rate (tensor), fraction y != 0 (float))."""
    T, B, _ = x.shape
    h = layer.hidden_size
    W = effective_weight(layer, "kernel")
    R = effective_weight(layer, "recurrent_kernel")
    if training and dropconnect > 0.0:
        R = R * (R.new_empty(R.shape).bernoulli_(1.0 - dropconnect) / (1.0 - dropconnect))
    gx_all = torch.addmm(layer.bias, x.reshape(T * B, -1), W).view(T, B, 3 * h)
    rb = layer.recurrent_bias
    thr = layer.thr.clamp(0.0, 1.0)
    c, y = state
    use_surrogate = torch.is_grad_enabled()
    ys = []
    o_sum = None
    for t in range(T):
        gx = gx_all[t]
        gh = torch.addmm(rb, y, R)
        zr = torch.sigmoid(gx[:, :2 * h] + gh[:, :2 * h])
        z, r = zr[:, :h], zr[:, h:]
        g = torch.tanh(gx[:, 2 * h:] + r * gh[:, 2 * h:])
        c_tilde = z * c + (1.0 - z) * g
        v = c_tilde - thr
        if use_surrogate:
            o = SpikeFunction.apply(v, layer.dampening, layer.support)
        else:
            o = (v > 0).to(v.dtype)
        y = o * c_tilde
        c = c_tilde - o * thr
        o_sum = o if o_sum is None else o_sum + o
        ys.append(y)
    y_seq = torch.stack(ys)
    with torch.no_grad():
        active = float((y_seq != 0).float().mean())
    spike_rate = o_sum.mean() / T
    return y_seq, (c, y), spike_rate, active


def decode(model: torch.nn.Module, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
    """Tied decoder; `bf16` runs its matmul (the largest cost of a 10k-word LM on a CPU) in bfloat16 with
    float32 logits out (training speed only; weights stay float32)."""
    if not bf16:
        return model.decoder(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return model.decoder(x).float()


def egru_forward(model: EGRULanguageModel, tokens: torch.Tensor, state, reg: Regularisation | None = None,
                 training: bool = False, keep_outputs: bool = False, bf16_decoder: bool = False) -> ForwardOut:
    reg = reg or Regularisation()
    if state is None:
        state = model.init_state(tokens.size(1))
    x = embed(model, tokens, reg, training)
    new_state, spikes, active, outs = [], [], [], []
    for layer, st in zip(model.rnns, state):
        x, st, rate, act = egru_layer_seq(layer, x, st, reg.dropconnect, training)
        new_state.append(st)
        spikes.append(rate)
        active.append(act)
        if keep_outputs:
            outs.append(x)
        x = locked_dropout(x, reg.dropout, training)
    logits = decode(model, x, bf16_decoder)
    return ForwardOut(logits, new_state, spikes, active, outs if keep_outputs else None)


def detach_state(state):
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)
