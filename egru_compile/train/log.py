"""The training log: stage names and the CSV progress log (one row per logged step / validation)."""
from __future__ import annotations

import csv
import io
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


def log_fields(n_layers: int) -> list[str]:
    """The CSV log's columns for a model of `n_layers` recurrent layers."""
    return (["time", "kind", "stage", "target_sparsity", "sparsity", "epoch", "step", "lr",
             "train_loss", "train_ppl", "act_term", "valid_loss", "valid_ppl"]
            + [f"activity_{i}" for i in range(n_layers)]
            + ["dynamic_macs_per_token", "macs_reduction", "tokens_per_s", "elapsed_s"])


def _header(n_layers: int) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(log_fields(n_layers))
    return buf.getvalue()


def is_train_log(path: Path, n_layers: int | None = None) -> bool:
    """Whether `path` is a train log: its first line is the CSV header `train` writes (for `n_layers` layers;
    any layer count when None). Reads at most 4 KiB."""
    try:
        with open(path, "rb") as f:
            first = f.read(4096).split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if n_layers is not None:
        return first == _header(n_layers).rstrip("\r\n")
    cols = first.split(",")
    n = sum(c.startswith("activity_") for c in cols)
    return n > 0 and cols == log_fields(n)


def make_dirs(path: Path) -> list[Path]:
    """Create folder `path` and its missing parents; -> the folders created (outermost first)."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        created.append(d)
    return created


class CsvLog:
    """The CSV log at `path`: a new (or empty) file gets the header; an existing train log is appended to,
    or with `replace` replaced by a fresh one. `created` lists what the log created (its folders, its file):
    a run that fails before its first checkpoint removes them again."""

    def __init__(self, path: Path, n_layers: int, enabled: bool, replace: bool = False):
        self.path = Path(path)
        self.enabled = enabled
        self.fields = log_fields(n_layers)
        self.created: list[Path] = []
        if enabled:
            from ..fsio import FileError, atomic_write
            self.created = make_dirs(self.path.parent)
            existed = self.path.exists()
            if replace or not existed or self.path.stat().st_size == 0:
                atomic_write(self.path, _header(n_layers))
                if not existed:
                    self.created.append(self.path)
            elif not is_train_log(self.path, n_layers):
                raise FileError(f"--log {self.path} is not a train log of a {n_layers}-layer model (its first "
                                "line is not the log's CSV header): refusing to append to it")

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
