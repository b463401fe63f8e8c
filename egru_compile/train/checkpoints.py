"""Checkpoint files of a training run, EGRU or dense baseline: `save_any` writes the project format of either
(an EGRU's prune masks kept, its pruned attributes refreshed first), `load_any` reads either back."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import Vocabulary
from ..frontend.checkpoint import load_source, save_checkpoint
from ..model import EGRULanguageModel
from .baselines import BASELINE_FORMAT, load_baseline_checkpoint, save_baseline_checkpoint
from .prune import refresh_pruned_attributes


def save_any(path: Path, model, vocab: Vocabulary, meta: dict) -> None:
    if isinstance(model, EGRULanguageModel):
        refresh_pruned_attributes(model)
        save_checkpoint(path, model, vocab, meta)
    else:
        save_baseline_checkpoint(path, model, vocab, meta)


def load_any(path: str):
    """-> (model, vocab, meta) from a project EGRU checkpoint (masks restored) or a baseline checkpoint."""
    try:
        obj_fmt = torch.load(path, map_location="cpu", weights_only=True).get("format")
    except Exception:  # noqa: BLE001 - let load_source give its one-line reason
        obj_fmt = None
    if obj_fmt == BASELINE_FORMAT:
        model, words, meta = load_baseline_checkpoint(path)
        return model, Vocabulary(words) if words else None, meta
    src = load_source(path)
    return src.model, src.vocab, src.meta
