"""The training log: stage names and the CSV progress log (one row per logged step / validation)."""
from __future__ import annotations

import csv
import time
from pathlib import Path


def stage_name(target: float) -> str:
    return "dense" if target <= 0 else f"sparsity_{round(target * 100):02d}"


def resume_point(progress: dict, stage_epochs: list[int]) -> tuple[int, int]:
    """(stage, epochs done in it) where a run resumed at a checkpoint's `progress` continues, given each
    stage's epochs (dense, then one per pruning step): a completed stage is skipped, and its checkpoint is not
    written again."""
    si, e = int(progress.get("stage", 0)), int(progress.get("epochs_done", 0))
    if si < len(stage_epochs) and e >= stage_epochs[si] and not (si == 0 and e == 0):
        si, e = si + 1, 0
    return si, e


class CsvLog:
    def __init__(self, path: Path, n_layers: int, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.fields = (["time", "kind", "stage", "target_sparsity", "sparsity", "epoch", "step", "lr",
                        "train_loss", "train_ppl", "act_term", "valid_loss", "valid_ppl"]
                       + [f"activity_{i}" for i in range(n_layers)]
                       + ["dynamic_macs_per_token", "macs_reduction", "tokens_per_s", "elapsed_s"])
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists() or path.stat().st_size == 0:
                with open(path, "w", newline="") as f:
                    csv.writer(f).writerow(self.fields)

    def write(self, **row) -> None:
        if not self.enabled:
            return
        row.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%S"))
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k, "")) for k in self.fields])


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return v
