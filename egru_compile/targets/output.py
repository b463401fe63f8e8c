"""Atomic output directories: build into a temporary sibling, rename into place only on success."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import EgruError


class OutputError(EgruError):
    pass


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or inner.is_relative_to(outer)


def check_output_dir(path: str | Path, force: bool, protect: tuple = ()) -> Path:
    """Check that `path` may become an output directory: new, or — with `force` — a previous egru-compile
    artifact (its manifest says so) that is not the current directory and holds neither the current directory
    nor any of the `protect` paths (the source files). Anything else raises OutputError; nothing is touched."""
    if str(path).strip() == "":
        raise OutputError("output directory name is empty")
    path = Path(path)
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if _contains(real, cwd):
        raise OutputError(f"output directory {path} is (or contains) the current directory; choose a new directory")
    for p in protect:
        if p is not None and _contains(real, Path(p).resolve()):
            raise OutputError(f"output directory {path} contains the input {p}; choose another directory")
    if path.exists() or path.is_symlink():
        if not force:
            raise OutputError(f"output directory {path} already exists (use --force to replace a previous "
                              "egru-compile artifact)")
        if not path.is_dir() or path.is_symlink():
            raise OutputError(f"output path {path} exists and is not a directory; nothing was replaced")
        from ..artifact import is_artifact
        if not is_artifact(path):
            raise OutputError(f"--force replaces only a previous egru-compile artifact, and {path} is not one "
                              "(no egru-compile manifest.json); nothing was touched")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {path}: parent directory {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, force: bool = False, protect: tuple = ()):
    """Yield a temporary directory beside `path`; on success it replaces `path` (see `check_output_dir` for
    what may be replaced), on any error (or Ctrl-C) it is removed and `path` is left as it was."""
    path = check_output_dir(path, force, protect)
    parent = path.absolute().parent
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from None
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file via a temporary sibling and rename, so readers never see half a file."""
    path = Path(path)
    if not path.absolute().parent.is_dir():
        raise OutputError(f"cannot write {path}: directory {path.absolute().parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.absolute().parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


VOCAB_FILE = "vocab.txt"


def write_vocab(out_dir: str | Path, source) -> str | None:
    """Write `source`'s vocabulary (one word per line, in id order; `runner.read_vocab_file` reads it)
    into `out_dir`; returns the file name for the manifest, or None when the source has no vocabulary."""
    vocab = getattr(source, "vocab", None) if source is not None else None
    if vocab is None:
        return None
    (Path(out_dir) / VOCAB_FILE).write_text("\n".join(vocab.words) + "\n", encoding="utf-8")
    return VOCAB_FILE
