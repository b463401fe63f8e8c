"""Activity and MAC accounting for EGRU language models (RNN layers only; embedding lookup and decoder are
not counted).

Dynamic MACs per token, the event-driven cost:

* layer 0's input is the embedding vector, counted fully active: every non-zero of ``kernel`` of layer 0;
* layer l > 0's input is y of layer l-1 at the same step: for each unit with y != 0, the non-zeros of its row
  of ``kernel`` (its fan-out);
* the recurrent input is the layer's own y of the previous step: for each unit with y != 0, the non-zeros of
  its row of ``recurrent_kernel``.

Static dense MACs: sum over layers of (in + h) * 3h (a GRU of the same size, all weights, every step).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import batchify, iter_bptt
from .forward import detach_state, effective_weight, egru_forward


def static_dense_macs(model) -> int:
    cfg = model.config
    return sum((i + h) * 3 * h for i, h in zip(cfg.layer_input_sizes(), cfg.hidden_sizes))


def nonzero_weights(model) -> int:
    return sum(int((effective_weight(layer, n) != 0).sum()) for layer in model.rnns
               for n in ("kernel", "recurrent_kernel"))


@torch.no_grad()
def measure_activity_and_macs(model, tokens: torch.Tensor, batch_size: int = 1, bptt: int = 200) -> dict:
    """Run `model` (an `EGRULanguageModel`, eval mode) over `tokens` (1-D ids) as `batch_size` parallel streams
    with carried state and return activity per layer (fraction of y != 0), dynamic MACs/token, the static
    dense MACs, their ratio, the non-zero weight count, and the cross-entropy/perplexity on those tokens."""
    was_training = model.training
    model.eval()
    tokens = torch.as_tensor(tokens).long()
    source = batchify(tokens, batch_size)
    layers = list(model.rnns)
    w_rows = [(effective_weight(l, "kernel") != 0).sum(1).float() for l in layers]          # fan-out per input
    r_rows = [(effective_weight(l, "recurrent_kernel") != 0).sum(1).float() for l in layers]  # per hidden unit
    state = model.init_state(batch_size)
    n_tok = 0
    active_units = [0.0] * len(layers)
    dyn = 0.0
    nll = 0.0
    for inp, tgt in iter_bptt(source, bptt):
        prev_y = [st[1] for st in state]
        out = egru_forward(model, inp, state, training=False, keep_outputs=True)
        T, B = inp.shape
        n = T * B
        n_tok += n
        nll += float(F.cross_entropy(out.logits.view(n, -1), tgt.reshape(n), reduction="sum"))
        dyn += float(w_rows[0].sum()) * n
        for li, y in enumerate(out.outputs):
            act = (y != 0).float()                                     # [T, B, h]
            active_units[li] += float(act.sum())
            prev = torch.cat([(prev_y[li] != 0).float().unsqueeze(0), act[:-1]], 0)  # y_{t-1}
            dyn += float((prev @ r_rows[li]).sum())
            if li + 1 < len(layers):
                dyn += float((act @ w_rows[li + 1]).sum())
        state = detach_state(out.state)
    model.train(was_training)
    static = static_dense_macs(model)
    dyn_per_tok = dyn / n_tok
    activity = [a / (n_tok * h) for a, h in zip(active_units, model.config.hidden_sizes)]
    return {"tokens": n_tok, "activity": activity,
            "activity_mean": sum(a * h for a, h in zip(activity, model.config.hidden_sizes))
            / sum(model.config.hidden_sizes),
            "dynamic_macs_per_token": dyn_per_tok, "static_dense_macs": static,
            "macs_reduction": static / dyn_per_tok if dyn_per_tok > 0 else math.inf,
            "nonzero_weights": nonzero_weights(model), "loss": nll / n_tok, "ppl": math.exp(nll / n_tok)}
