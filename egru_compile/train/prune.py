"""Global magnitude pruning of the RNN weights (kernel + recurrent_kernel of every layer; embedding and the
tied decoder are excluded) with `torch.nn.utils.prune`, so masks stay in the checkpoint as
``<name>_orig`` / ``<name>_mask`` for the compiler to fold."""
from __future__ import annotations

import torch
from torch.nn.utils import prune

from .forward import effective_weight

PRUNED_NAMES = ("kernel", "recurrent_kernel")


def prunable(model) -> list[tuple[torch.nn.Module, str]]:
    return [(layer, name) for layer in model.rnns for name in PRUNED_NAMES]


def refresh_pruned_attributes(model) -> None:
    """Recompute ``module.<name> = orig * mask`` for pruned weights (prune only does it on ``module(...)``)."""
    for module, name in prunable(model):
        if prune.is_pruned(module) and hasattr(module, name + "_mask"):
            setattr(module, name, effective_weight(module, name))


def global_sparsity(model) -> float:
    """Fraction of exactly-zero entries over all pruned-eligible RNN weights (masks applied)."""
    zeros = total = 0
    with torch.no_grad():
        for module, name in prunable(model):
            w = effective_weight(module, name)
            zeros += int((w == 0).sum())
            total += w.numel()
    return zeros / total


def masked_fraction(model) -> float:
    """Fraction of RNN weight entries whose prune mask is 0 (0 when no masks)."""
    masked = total = 0
    for module, name in prunable(model):
        mask = getattr(module, name + "_mask", None)
        n = getattr(module, name + "_orig", getattr(module, name)).numel()
        total += n
        if mask is not None:
            masked += int((mask == 0).sum())
    return masked / total


def prune_to(model, target: float) -> dict:
    """Global L1 (magnitude) pruning of all RNN kernels/recurrent kernels up to exactly
    ``round(target * N)`` masked entries in total (N = their element count). Iterative: entries masked
    earlier stay masked; the remaining ones are ranked by |w| over all layers together."""
    if not 0.0 <= target < 1.0:
        raise ValueError(f"sparsity target must be in [0, 1), got {target}")
    params = prunable(model)
    total = sum(getattr(m, n + "_orig", getattr(m, n)).numel() for m, n in params)
    already = round(masked_fraction(model) * total)
    want = round(target * total)
    if want < already:
        raise ValueError(f"model is already pruned to {already / total:.4f} > target {target}")
    with torch.no_grad():
        scores = {(m, n): effective_weight(m, n).detach().abs().clone() for m, n in params}
    if want > already:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=int(want - already),
                                  importance_scores=scores)
    else:  # make sure masks exist (so the checkpoint layout is uniform) without pruning more
        for m, n in params:
            if not hasattr(m, n + "_mask"):
                prune.identity(m, n)
    refresh_pruned_attributes(model)
    per_layer = {}
    for i, layer in enumerate(model.rnns):
        for n in PRUNED_NAMES:
            mask = getattr(layer, n + "_mask")
            per_layer[f"rnns.{i}.{n}"] = float((mask == 0).float().mean())
    return {"target": target, "sparsity": masked_fraction(model), "per_tensor": per_layer}
