"""Atomic output directories: build into a temporary sibling, rename into place only on success.

Ownership, not format, decides what ``--force`` may replace: an existing directory is replaced only when it is
an unmodified egru-compile artifact holding nothing but the files its sealed manifest lists
(`artifact.owned_files`); then exactly those files are removed (a directory is removed only once empty), and a
folder holding anything else — a user's notes, results, a hand-written manifest naming files that are not
as sealed — is refused in one line with nothing touched."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from ..errors import EgruError, UsageError, option
from ..fsio import FileError, atomic_write, make_temp_dir
from ..guard import signals_deferred


class OutputError(EgruError):
    pass


class EmptyOutputName(OutputError, UsageError):
    """``-o ""``: a usage error (exit 2)."""


def _contains(outer: Path, inner: Path) -> bool:
    return inner == outer or inner.is_relative_to(outer)


def _is_artifact(folder: Path) -> bool:
    """Whether `folder` holds an egru-compile manifest (its generator says so; another tool's manifest.json is not
    one). Reads it only when it is under 4 MiB; anything unreadable is not an artifact."""
    import json
    f = folder / "manifest.json"
    try:
        if not f.is_file() or f.stat().st_size > 4 << 20:
            return False
        return json.loads(f.read_text(encoding="utf-8")).get("generator") == "egru-compile"
    except (OSError, ValueError, AttributeError):
        return False


def check_output_dir(path: str | Path, force: bool, protect: tuple = ()) -> Path:
    """Check that `path` may become an output directory: new, or — with `force` — a previous egru-compile
    artifact (its manifest says so) that is not the current directory and holds neither the current directory
    nor any of the `protect` paths (the source files). Anything else raises OutputError; nothing is touched."""
    if str(path).strip() == "":
        raise EmptyOutputName("output directory name is empty")
    path = Path(path)
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if _contains(real, cwd):
        raise OutputError(f"output directory {path} is (or contains) the current directory; choose a new directory")
    for p in protect:
        if p is not None and _contains(real, Path(p).resolve()):
            raise OutputError(f"output directory {path} contains the input {p}; choose another directory")
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():     # --force would not help: it replaces artifact folders only
            raise OutputError(f"output path {path} exists and is not a directory (an artifact is a folder): choose "
                              "another path; nothing was replaced")
        if not force:
            raise OutputError(f"output directory {path} already exists (use {option('force', True)} to replace a "
                              "previous egru-compile artifact)")
        from ..artifact import ArtifactError, owned_files
        try:
            owned_files(path)
        except ArtifactError as e:
            raise OutputError(str(e)) from None
    parent = path.absolute().parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: parent directory {parent} does not exist")
    for up in real.parents:           # an artifact inside another one: the outer one could no longer be replaced
        if _is_artifact(up):
            raise OutputError(f"output directory {path} would lie inside the egru-compile artifact {up}; choose a "
                              "folder outside it")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write {path}: parent directory {parent} is not writable")
    return path


@contextlib.contextmanager
def atomic_output_dir(path: str | Path, force: bool = False, protect: tuple = ()):
    """Yield a temporary directory beside `path`; on success it replaces `path` (see `check_output_dir` for
    what may be replaced), on any error (or Ctrl-C) it is removed and `path` is left as it was."""
    path = check_output_dir(path, force, protect)
    parent = path.absolute().parent
    tmp = None
    try:
        try:
            with signals_deferred():        # bound to `tmp` before a signal can interrupt (see signals_deferred)
                tmp = make_temp_dir(f".{path.name}.tmp-", parent)
        except OSError as e:
            raise OutputError(f"cannot write {path}: {e.strerror}") from None
        yield tmp
        if path.exists():
            from ..artifact import ArtifactError, owned_files
            try:
                owned = owned_files(path)          # again: the folder may have changed during the compile
            except ArtifactError as e:
                raise OutputError(str(e)) from None
            # the swap runs whole or not at all: a signal in between would leave the previous artifact hidden
            # in .old-*/x with nothing at `path`
            with signals_deferred():
                old = tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=parent)
                os.replace(path, Path(old) / "x")
                try:
                    os.replace(tmp, path)
                except OSError:                 # put the previous artifact back where it was
                    os.replace(Path(old) / "x", path)
                    os.rmdir(old)
                    raise
                tmp = None
                _remove_owned(Path(old), owned)
        else:
            with signals_deferred():
                os.replace(tmp, path)
                tmp = None
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_owned(old: Path, owned: list[str]) -> None:
    """Remove the replaced artifact (moved to ``old/x``): exactly its `owned` files, then each directory only
    once it is empty. Anything else found there (written during the compile) is kept and named."""
    root = old / "x"
    for name in owned:
        try:
            (root / name).unlink()
        except FileNotFoundError:
            pass
    for d in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()),
                    key=lambda p: len(p.parts), reverse=True) + [root, old]:
        try:
            d.rmdir()
        except OSError:
            warnings.warn(f"kept {d}: it holds files egru-compile did not write")
            return


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file via a temporary sibling and rename, so readers never see half a file (`fsio.atomic_write`)."""
    try:
        atomic_write(path, text)
    except FileError as e:
        raise OutputError(str(e)) from None


VOCAB_FILE = "vocab.txt"


def write_vocab(out_dir: str | Path, source) -> str | None:
    """Write `source`'s vocabulary (one word per line, in id order; `runner.read_vocab_file` reads it)
    into `out_dir`; returns the file name for the manifest, or None when the source has no vocabulary."""
    vocab = getattr(source, "vocab", None) if source is not None else None
    if vocab is None:
        return None
    atomic_write(Path(out_dir) / VOCAB_FILE, "\n".join(vocab.words) + "\n")
    return VOCAB_FILE
