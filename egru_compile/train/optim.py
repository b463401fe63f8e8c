"""The optimiser and its schedule: AdamW with decoupled weight decay on weight matrices only (`make_optimizer`),
warmup then cosine decay per stage (`lr_at`)."""
from __future__ import annotations

import math

import torch


def make_optimizer(model, lr: float, weight_decay: float, input_wd_mult: float = 1.0) -> torch.optim.Optimizer:
    """AdamW; decay on weight matrices only. The first layer's input kernel (its non-zeros cost MACs on every
    token, the embedding input being dense) can get `input_wd_mult` times the decay."""
    decay, decay_in, no_decay = [], [], []
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.dim() < 2:
            no_decay.append(p)
        elif name in ("rnns.0.kernel", "rnns.0.kernel_orig"):
            decay_in.append(p)
        else:
            decay.append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": decay_in, "weight_decay": weight_decay * input_wd_mult},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999))


def lr_at(step: int, total: int, base: float, warmup: int, min_ratio: float) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    frac = min(1.0, step / max(1, total))
    return base * warm * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac)))
