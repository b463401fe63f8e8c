"""File-system primitives every writer and reader of the package uses (bottom-level: imports nothing of ours
but `errors`).

* `atomic_write` — THE atomic file writer: the content goes to a temporary sibling (``.NAME.tmp-*``), is
  flushed, given the permissions a plain ``open(..., "w")`` would give (``0666 & ~umask``), and renamed over
  `path` only when complete; on any error or signal the temporary is removed and `path` is as it was.
* `make_dir` — a directory with the user's umask (``0777 & ~umask``; `tempfile.mkdtemp` makes 0700).
* `read_bounded` — read a file (or device, FIFO) into memory, refusing after `limit` bytes: no file the tool
  reads can make it allocate more than the caller allows (``/dev/zero`` as a profile is refused at once).
* `check_new_files` — refuse an output path that already exists unless the user passed --force.
* `check_outputs` — refuse, before anything is written, an output path that is (resolved, or by inode) one of
  the command's input files, or another output of the same command.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import EgruError, UsageError
from .guard import signals_deferred


class FileError(EgruError):
    """A file cannot be read or written as asked (one line)."""


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows; else set-and-restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    return 0o777 & ~current_umask()


def make_dir(path: str | Path) -> Path:
    """Create directory `path` (parents too) with the user's umask; an existing directory is kept."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_temp_dir(prefix: str, parent: str | Path) -> Path:
    """A fresh temporary directory in `parent` with the permissions a plain mkdir would give."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, dir_mode())
    return tmp


def atomic_write(path: str | Path, data: bytes | str | Callable[[str], None], *, encoding: str = "utf-8",
                 mkdir: bool = False) -> Path:
    """Write `data` (bytes, text, or a callable that writes the temporary file whose path it is given) to
    `path` atomically: readers see the old file or the whole new one, never half of it."""
    path = Path(path)
    parent = path.absolute().parent
    if mkdir:
        make_dir(parent)
    if not parent.is_dir():
        raise FileError(f"cannot write {path}: directory {parent} does not exist")
    tmp = None
    try:
        try:
            with signals_deferred():        # the name is bound before a signal can interrupt: cleanup knows it
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=parent)
        except OSError as e:
            raise FileError(f"cannot write {path}: {e.strerror or e}") from None
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode(encoding) if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    return path


#: default bound of `read_bounded` (profiles, manifests, configs, vocabularies): far above any real one
SMALL_FILE_LIMIT = 16 << 20


def read_bounded(path: str | Path, limit: int = SMALL_FILE_LIMIT, what: str = "file") -> bytes:
    """The bytes of `path`, refusing (FileError, one line) a file larger than `limit` bytes — checked on the
    size a regular file declares before reading, and on the bytes actually read for anything else (a device,
    a FIFO), so the read stops after `limit` + 1 bytes whatever the file is."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise FileError(f"{what} {path} is a directory")
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise FileError(f"{what} {path} is {st.st_size:,} bytes, more than the {limit:,} accepted")
            # read in chunks (f.read(limit + 1) would allocate the whole limit up front)
            parts, got = [], 0
            while got <= limit and (chunk := f.read(min(1 << 20, limit + 1 - got))):
                parts.append(chunk)
                got += len(chunk)
            data = b"".join(parts)
    except FileNotFoundError:
        raise FileError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise FileError(f"{what} {path} is a directory") from None
    except OSError as e:
        raise FileError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise FileError(f"{what} {path} holds more than the {limit:,} bytes accepted (not a regular file?)")
    return data


def _identity(p: Path):
    """(resolved path, (dev, inode) or None) of `p`."""
    try:
        st = os.stat(p)
        ino = (st.st_dev, st.st_ino)
    except OSError:
        ino = None
    return p.resolve(), ino


def check_outputs(outputs: Iterable[tuple[str, str | Path | None]],
                  inputs: Iterable[tuple[str, str | Path | None]]) -> None:
    """Refuse (FileError, one line) when an output path names an input file or another output — by resolved
    path or by (device, inode), so a symbolic or hard link to an input counts too. Call before writing
    anything; `outputs` / `inputs` are (label, path) pairs, None paths skipped."""
    ins = [(label, Path(p), *_identity(Path(p))) for label, p in inputs if p is not None and str(p) != ""]
    seen: list = []
    for label, p in outputs:
        if p is None or str(p) == "":
            continue
        p = Path(p)
        real, ino = _identity(p)
        for ilabel, ip, ireal, iino in ins:
            if real == ireal or (ino is not None and ino == iino):
                raise FileError(f"{label} {p} is the input {ilabel} {ip}: refusing to overwrite it; choose "
                                "another path")
        for olabel, op, oreal, oino in seen:
            if real == oreal or (ino is not None and ino == oino):
                raise FileError(f"{label} {p} is also the {olabel} {op}: give each output its own path")
        seen.append((label, p, real, ino))


def check_new_files(outputs: Iterable[tuple[str, str | Path | None]], force: bool, flag: str = "--force") -> None:
    """Refuse (FileError, one line) an output path that already holds something, unless `force` (the user's
    explicit ``--force`` / ``force=True``): a file the user owns is never replaced silently. A directory is
    refused even with `force` (an output here is one file); an empty name is a usage error (None: not given).
    Call before writing anything."""
    for label, p in outputs:
        if p is None:
            continue
        if str(p).strip() == "":
            raise UsageError(f"{label}: the file name is empty")
        p = Path(p)
        if p.is_dir():
            raise FileError(f"{label} {p} is a directory; give a file path")
        if (p.exists() or p.is_symlink()) and not force:
            raise FileError(f"{label} {p} already exists: refusing to overwrite it (choose another path, or pass "
                            f"{flag} to replace it)")


class BoundedNpz:
    """Read-only mapping over the arrays of an ``.npz`` file (a path or a binary file object) that inflates
    nothing it has not checked: each member's ``.npy`` header is read first (a few bytes) and its declared
    array size must equal the size the zip directory declares for the member — which is all `zipfile` ever
    inflates — and the running total of the arrays read must stay within `budget` bytes (what the caller's
    input declares, e.g. the tensor types of an IR text). Arrays of Python objects are refused (no pickle).
    Anything else is a FileError with one line. Use as a context manager (or call `close`)."""

    def __init__(self, src, budget: int, name: str | Path | None = None):
        import zipfile
        self.name = str(name if name is not None else src)
        self.budget = int(budget)
        self.used = 0
        self.counted: set = set()            # a member read twice counts once (each read is bounded anyway)
        try:
            self.zf = zipfile.ZipFile(src)
            self.members = {i.filename[:-4]: i for i in self.zf.infolist() if i.filename.endswith(".npy")}
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
            raise FileError(f"{self.name} is unreadable: not a readable .npz file ({_first(e)})") from None
        self.files = list(self.members)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.zf.close()

    def __contains__(self, key) -> bool:
        return key in self.members

    def __iter__(self):
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def keys(self):
        return list(self.files)

    def __getitem__(self, key: str):
        import numpy as np
        fmt = np.lib.format
        info = self.members.get(key)
        if info is None:
            raise KeyError(key)
        try:
            with self.zf.open(info) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = fmt.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = fmt.read_array_header_2_0(f)
                header_len = f.tell()
            if dtype.hasobject:
                raise FileError(f"{self.name}: array {key} holds Python objects")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if header_len + nbytes != info.file_size:
                raise FileError(f"{self.name}: array {key} declares {nbytes:,} bytes of data but its archive entry "
                                f"{info.file_size - header_len:,}; refusing to inflate it")
            if key not in self.counted and self.used + nbytes > self.budget:
                raise FileError(f"{self.name}: array {key} ({nbytes:,} bytes) is larger than what the input "
                                f"declares ({self.budget - self.used:,} bytes left of {self.budget:,}); refusing "
                                "to inflate it")
            if key not in self.counted:
                self.used += nbytes
                self.counted.add(key)
            with self.zf.open(info) as f:
                return fmt.read_array(f, allow_pickle=False)
        except FileError:
            raise
        except Exception as e:  # noqa: BLE001 - zipfile / zlib / numpy raise their own types on corrupt members
            raise FileError(f"{self.name}: array {key} cannot be read ({_first(e)})") from None


def _first(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:160] if s else type(e).__name__
