"""Where the Penn Treebank text lives: the copy shipped in the repository (``data/ptb``), or ``$EGRU_PTB``.

The repository carries Mikolov's preprocessed ``ptb.{train,valid,test}.txt`` under ``data/ptb/`` (source and
terms in ``data/ptb/README.md``); a source checkout or an editable install finds it there. The wheel does not
carry it (the text is not under the project's licence): point ``EGRU_PTB`` at a folder holding the three files.
"""
from __future__ import annotations

import os
from pathlib import Path

from .vocab import DataError

SPLITS = ("train", "valid", "test")
#: the repository's copy, relative to this file: <repo>/egru_compile/data/ptb.py -> <repo>/data/ptb
REPO_PTB = Path(__file__).resolve().parents[2] / "data" / "ptb"


def ptb_dir() -> Path:
    """The folder holding ``ptb.{train,valid,test}.txt``: ``$EGRU_PTB`` if set, else the repository's
    ``data/ptb``. Raises :class:`DataError` (one line) when the chosen folder lacks a split."""
    env = os.environ.get("EGRU_PTB")
    d = Path(env) if env else REPO_PTB
    missing = [s for s in SPLITS if not (d / f"ptb.{s}.txt").is_file()]
    if missing:
        where = f"EGRU_PTB={env}" if env else f"{d} (the repository's copy; not part of an installed wheel)"
        raise DataError(f"Penn Treebank not found: {where} lacks ptb.{missing[0]}.txt; "
                        "set EGRU_PTB to a folder with ptb.{train,valid,test}.txt")
    return d


def ptb_file(split: str) -> Path:
    """``ptb_dir() / f"ptb.{split}.txt"`` for ``split`` in train / valid / test."""
    if split not in SPLITS:
        raise DataError(f"unknown Penn Treebank split {split!r} (known: {', '.join(SPLITS)})")
    return ptb_dir() / f"ptb.{split}.txt"
