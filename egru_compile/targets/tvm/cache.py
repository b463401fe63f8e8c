"""Compiled step libraries, cached by what they are compiled from.

A step library depends only on the kernel spec (sizes, dtypes, decoder mode), the kernels built with it
(decoder, batched streams), the LLVM target, the TVM release and the kernel generator's own source code, so a
compile whose key was already built copies the cached library instead of compiling it again (a model retrained
or re-pruned at the same sizes, every compile of the same model in a test session).

Where: ``$EGRU_COMPILE_CACHE`` (``off`` disables it), else ``$XDG_CACHE_HOME/egru-compile`` or
``~/.cache/egru-compile``. Safety: the folder must belong to the user and be writable by nobody else (otherwise
the cache is not used); each entry's sha256 is stored next to it and checked when read, so a damaged or
replaced entry is rebuilt, never loaded; entries are written atomically (a temporary name, then a rename)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .spec import EGRUKernelSpec, resolve_target

__all__ = ["cache_dir", "library_key", "step_library", "load_step_module", "streams_library", "load_streams_module",
           "load_shared_module"]

_GENERATOR_SOURCES = ("spec.py", "signature.py", "layout.py", "step.py", "streams.py", "shared.py", "region.py",
                      "tir.py", "u8_events.py", "cache.py")


def cache_dir() -> Path | None:
    """The cache folder, or None when disabled or unsafe (owned by someone else, group/world writable)."""
    env = os.environ.get("EGRU_COMPILE_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "no", "none"):
        return None
    if env:
        d = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        d = Path(base) / "egru-compile"
    d = d / "tvm"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = d.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return d


def _generator_digest() -> str:
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in _GENERATOR_SOURCES:
        p = here / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def library_key(spec: EGRUKernelSpec, target=None, with_decoder: bool = True, streams: bool = False,
                kind: str = "step") -> str:
    """sha256 of everything the compiled library depends on (`kind`: ``step`` = the step library of
    :func:`step.build_egru_step`, ``streams`` = the batched-stream library of :func:`streams.build_egru_streams`
    alone)."""
    import tvm
    what = {"spec": spec.to_dict(), "target": str(resolve_target(target)), "tvm": tvm.__version__,
            "with_decoder": bool(with_decoder), "streams": bool(streams), "kind": kind,
            "generator": _generator_digest()}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached(d: Path, key: str) -> Path | None:
    lib, digest = d / f"{key}.so", d / f"{key}.sha256"
    try:
        if lib.is_file() and not lib.is_symlink() and digest.read_text().strip() == _sha256(lib):
            return lib
    except OSError:
        pass
    return None


def _store(d: Path, key: str, built: Path) -> None:
    """Copy `built` into the cache under `key` (atomically; failures leave the cache as it was)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(built, tmp)
            digest = _sha256(Path(tmp))
            os.replace(tmp, d / f"{key}.so")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(digest + "\n")
        os.replace(tmp, d / f"{key}.sha256")
    except OSError:
        pass


def _library(key_args: tuple, build, dest: Path) -> bool:
    """Write the library `build()` compiles to `dest`, through the cache (key :func:`library_key` of
    `key_args`). Returns True when it came from the cache."""
    d = cache_dir()
    key = library_key(*key_args) if d is not None else None
    hit = _cached(d, key) if d is not None else None
    if hit is not None:
        shutil.copyfile(hit, dest)
        if _sha256(dest) == (d / f"{key}.sha256").read_text().strip():
            return True
    build().export_library(str(dest))
    if d is not None:
        _store(d, key, dest)
    return False


def step_library(spec: EGRUKernelSpec, dest: str | os.PathLike, target=None, with_decoder: bool = True,
                 streams: bool = False) -> bool:
    """Write the compiled step library of `spec` (:func:`step.build_egru_step`) to `dest`: a copy of the
    cached build when there is one, else a fresh compile (then cached). Returns True when it came from the
    cache."""
    from .step import build_egru_step
    return _library((spec, target, with_decoder, streams, "step"),
                    lambda: build_egru_step(spec, target, with_decoder=with_decoder, streams=streams), Path(dest))


def streams_library(spec: EGRUKernelSpec, dest: str | os.PathLike, target=None) -> bool:
    """Write the batched-stream library of `spec` (``egru_streams_run`` / ``egru_streams_score`` alone,
    :func:`streams.build_egru_streams`) to `dest`, through the cache like :func:`step_library`."""
    from .streams import build_egru_streams
    return _library((spec, target, True, True, "streams"), lambda: build_egru_streams(spec, target), Path(dest))


def _load(write, build):
    from .library import load_module
    if cache_dir() is None:
        return build()
    with tempfile.TemporaryDirectory(prefix="egru-step-") as tmp:
        path = Path(tmp) / "egru_lib.so"
        write(path)
        return load_module(str(path))


def load_step_module(spec: EGRUKernelSpec, target=None, with_decoder: bool = True, streams: bool = False):
    """The step library of `spec` as a loaded module, through the cache (a fresh compile when disabled)."""
    from .step import build_egru_step
    return _load(lambda p: step_library(spec, p, target, with_decoder, streams),
                 lambda: build_egru_step(spec, target, with_decoder=with_decoder, streams=streams))


def load_streams_module(spec: EGRUKernelSpec, target=None):
    """The batched-stream library of `spec` as a loaded module, through the cache (a fresh compile when
    disabled): what a runner compiles on its first ``reset_streams`` when its step library has no
    batched kernels (artifacts compile them only when used)."""
    from .streams import build_egru_streams
    return _load(lambda p: streams_library(spec, p, target), lambda: build_egru_streams(spec, target))


def load_shared_module(spec: EGRUKernelSpec, target=None):
    """The shared-read batched kernels of `spec` (:func:`shared.build_egru_shared`) as a loaded module, through
    the cache like :func:`load_streams_module` (built on the first B-stream call)."""
    from .shared import build_egru_shared

    def write(p):
        return _library((spec, target, True, True, "shared"), lambda: build_egru_shared(spec, target), Path(p))
    return _load(write, lambda: build_egru_shared(spec, target))
