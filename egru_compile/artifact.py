"""The artifact-directory contract shared by every target (writer side) and every reader (runtime, inspect).

An artifact is a directory holding ``manifest.json`` plus the files its target wrote. `seal` — the last step
of every compile — records in the manifest who wrote it (``"generator": "egru-compile"``), the size and
sha256 of every other file (``"files"``), and a digest of the manifest itself (``"manifest_sha256"``).
`read_manifest` — the first step of every reader — refuses, with one line, a directory that is not a
sealed egru-compile artifact, whose manifest or any file changed (size or content), or that lacks a listed
file; `artifact_file` resolves a file name from a manifest only when it is a relative path listed in
``files`` (so no manifest can point a reader outside its directory, e.g. at an absolute ``library`` path).

`owned_files` — what ``--force`` may replace: the manifest and the files it lists, each still as sealed, when
the directory holds nothing else. `read_verified` — what a runner uses: a file's bytes, read once and checked
against the sealed size and sha256, so the bytes used are the bytes checked (no swap between check and load).

The digests catch corruption, truncation and hand edits; they are not signatures (a forger can recompute
them): a tvm artifact is native code and must be trusted like any shared library. A resealed manifest can
name other weights or another library (which then runs), and can list a user's files with their hashes (which
``--force`` then replaces); it cannot point outside the directory, swap a file after the check, or make a
reader inflate an npz past the file's own size.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import EgruError, option
from .fsio import FileError, atomic_write, read_bounded

MANIFEST = "manifest.json"
GENERATOR = "egru-compile"
#: manifest keys whose value names a file of the artifact (checked against the sealed file table)
#: largest manifest.json read (a real one is a few KB)
MANIFEST_LIMIT = 4 << 20
FILE_KEYS = ("model", "library", "weights", "program", "vocab", "mapping", "report")


class ArtifactError(EgruError):
    """An artifact (compiled directory or source checkpoint) cannot be opened or run."""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def seal(out_dir: str | Path) -> dict:
    """Record the size and sha256 of every file of `out_dir` (except the manifest) and the manifest's own
    digest in ``out_dir/manifest.json``; returns the sealed manifest. Call after the target wrote everything."""
    out_dir = Path(out_dir)
    mf = out_dir / MANIFEST
    manifest = json.loads(read_bounded(mf, MANIFEST_LIMIT, "manifest"))
    files = {}
    for p in sorted(out_dir.rglob("*")):
        rel = p.relative_to(out_dir).as_posix()
        if p.is_symlink():
            raise ArtifactError(f"{p}: a target wrote a symbolic link into the artifact")
        if p.is_file() and rel != MANIFEST:
            files[rel] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    manifest["generator"] = GENERATOR
    manifest["files"] = files
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    atomic_write(mf, json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
    return manifest


def _load_json(mf: Path) -> dict:
    try:
        manifest = json.loads(read_bounded(mf, MANIFEST_LIMIT, "manifest").decode("utf-8"))
    except FileError as e:
        raise ArtifactError(str(e)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ArtifactError(f"{mf} is unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{mf} is not a JSON object")
    return manifest


def owned_files(path: str | Path) -> list[str]:
    """The files of artifact directory `path` that egru-compile wrote — ``manifest.json`` and every file its
    sealed manifest lists, each still as sealed (size and sha256) — when the directory holds nothing else
    (sub-directories only as parents of listed files). Otherwise ArtifactError naming what is not ours:
    ``--force`` replaces exactly these files and refuses a directory holding anything the user put there.
    (A manifest written by hand can list the user's own files with their hashes: see the module docstring.)"""
    path = Path(path)
    try:
        manifest = read_manifest(path, verify_files=True)
    except ArtifactError as e:
        why = str(e).removesuffix("; recompile")   # (recompiling into it is what the user is doing)
        raise ArtifactError(f"{option('force')} replaces only a previous, unmodified egru-compile artifact: "
                            f"{why}; nothing was touched (it may hold your changes: move it away or choose another "
                            f"output folder)") from None
    listed = set(manifest["files"]) | {MANIFEST}
    dirs = {str(PurePosixPath(n).parent) for n in listed} - {"."}
    dirs |= {str(p) for d in list(dirs) for p in PurePosixPath(d).parents} - {"."}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if rel in listed and p.is_file() and not p.is_symlink():
            continue
        if rel in dirs and p.is_dir() and not p.is_symlink():
            continue
        raise ArtifactError(f"{option('force')} replaces only the files egru-compile wrote, and {path} also holds "
                            f"{rel}; nothing was touched (move it away or choose another output folder)")
    return sorted(listed)


def _check_name(path: Path, name) -> str:
    if not isinstance(name, str) or not name:
        raise ArtifactError(f"{path}/{MANIFEST}: file name {name!r} is not a non-empty string")
    p = PurePosixPath(name)
    if p.is_absolute() or "\\" in name or any(part in ("..", "") for part in name.split("/")) or ":" in name:
        raise ArtifactError(f"{path}/{MANIFEST}: file {name!r} is not a relative path inside the artifact")
    return name


def read_manifest(path: str | Path, verify_files: bool = True) -> dict:
    """The verified manifest of artifact directory `path` (see the module docstring); ArtifactError with one
    line for anything not as sealed."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise ArtifactError(f"{path} is not a compiled artifact (no {MANIFEST})")
    manifest = _load_json(mf)
    if not isinstance(manifest.get("target"), str):
        raise ArtifactError(f"{mf} does not name a target")
    if manifest.get("generator") != GENERATOR or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{path} carries no file checksums (written by an older egru-compile or by hand); "
                            "recompile it")
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise ArtifactError(f"{mf} was modified after compilation (its digest does not match); recompile")
    root = path.resolve()
    for name, entry in manifest["files"].items():
        _check_name(path, name)
        f = path / name
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) \
                or not isinstance(entry.get("sha256"), str):
            raise ArtifactError(f"{mf}: malformed entry for {name}")
        if f.is_symlink() or not f.resolve().is_relative_to(root):
            raise ArtifactError(f"{f} leaves the artifact directory")
        if not f.is_file():
            raise ArtifactError(f"{path}: {name} is missing")
        if not verify_files:
            continue
        size = f.stat().st_size
        if size != entry["size"]:
            raise ArtifactError(f"{f} was modified after compilation ({size} bytes, the manifest says "
                                f"{entry['size']}); recompile")
        if file_sha256(f) != entry["sha256"]:
            raise ArtifactError(f"{f} was modified after compilation (sha256 differs from the manifest); recompile")
    for key in FILE_KEYS:
        if isinstance(manifest.get(key), str):        # (some targets use "weights" for statistics)
            artifact_file(path, manifest, key)
    return manifest


def artifact_file(path: str | Path, manifest: dict, key: str, default: str | None = None) -> Path:
    """The file that ``manifest[key]`` (or `default`) names inside artifact `path`: a relative name listed in
    the manifest's sealed ``files`` table, else ArtifactError."""
    name = manifest.get(key, default)
    _check_name(Path(path), name)
    if name not in manifest.get("files", {}):
        raise ArtifactError(f"{path}/{MANIFEST}: {key} names {name!r}, which is not a file of the artifact")
    return Path(path) / name


def load_npz(path, name: str | Path | None = None) -> dict[str, np.ndarray]:
    """All arrays of an .npz file — a path, or a binary file object named `name` in messages — (never
    unpickling objects), refusing non-finite floating-point values; one line on any problem."""
    src = path
    path = Path(name) if name is not None else Path(path)
    try:
        with np.load(src, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError) as e:
        raise ArtifactError(f"{path} is unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except Exception as e:  # noqa: BLE001 - zipfile/zlib raise their own types on corrupt members
        raise ArtifactError(f"{path} is corrupt: {type(e).__name__}: {str(e)[:120]}") from None
    for k, a in arrays.items():
        if a.dtype == object:
            raise ArtifactError(f"{path}: array {k} holds Python objects")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ArtifactError(f"{path}: array {k} contains NaN or Inf")
    return arrays


def read_verified(path: str | Path, manifest: dict, key: str, default: str | None = None) -> tuple[Path, bytes]:
    """(file, bytes) of the artifact file ``manifest[key]`` (or `default`), read ONCE and checked against the
    sealed size and sha256: a reader that uses these bytes (not the path again) uses exactly what was checked,
    so a file swapped after `read_manifest` verified it is refused or never seen."""
    f = artifact_file(path, manifest, key, default)
    entry = manifest["files"][f.relative_to(Path(path)).as_posix()]
    size = entry.get("size") if isinstance(entry, dict) else None
    if not isinstance(size, int) or size < 0:
        raise ArtifactError(f"{Path(path) / MANIFEST}: malformed entry for {f.name}")
    try:
        fd = os.open(f, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise ArtifactError(f"cannot read {f}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(size + 1)
    if len(data) != size or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise ArtifactError(f"{f} was modified after compilation (it no longer matches the manifest); recompile")
    return f, data

