"""IR files as models: ``FILE`` (IR text, first line ``// egru-ir v1``) plus its resource file ``FILE.npz``.

* `write_ir` — ``egru-compile MODEL --emit-ir FILE``: the text and the resource arrays (large constants,
  a large vocabulary), both written atomically (each to a temporary file renamed into place, the resource
  file first).
* `load_ir_source` — an IR file as a source for every command (``compile``, ``eval``, ``inspect``, ``opt``),
  with the interface of `checkpoint.SourceModel`: ``kind``, ``path``, ``sha256`` (of the text and the
  resource file), ``vocab``, ``hidden_sizes``, ``to_graph()`` (``eval`` runs it on the runtime's `GraphRunner`,
  the reference interpreter). The resource file is read with ``np.load(allow_pickle=False)`` and every array
  is checked against the declared types by the parser.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EgruError
from ..ir import Graph
from ..ir.parser import ParsedIR, parse_ir
from ..ir.printer import HEADER, print_graph, resource_arrays

#: what the resource file's name adds to the IR file's name
RESOURCE_SUFFIX = ".npz"


class IRSourceError(EgruError):
    """An IR file or its resource file cannot be read or written."""


def resource_path(path: str | Path) -> Path:
    return Path(str(path) + RESOURCE_SUFFIX)


def is_ir_file(path: str | Path) -> bool:
    """Whether `path` starts with the IR header line (content, not file name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(HEADER) + 2)
    except OSError:
        return False
    return head.rstrip(b"\r\n") == HEADER.encode() or head.startswith(HEADER.encode() + b"\n")


# ---------------------------------------------------------------------------------------------- writing
def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_ir(path: str | Path, graph: Graph, vocab=None) -> str:
    """Write `graph` (and `vocab`) as IR text to `path` and its arrays to ``path.npz``; returns the text."""
    path = Path(path)
    text = print_graph(graph, vocab)
    arrays = resource_arrays(graph, vocab)

    def save_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        _atomic_write(resource_path(path), save_npz)
        _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError as e:
        raise IRSourceError(f"cannot write {path}: {e.strerror or e}") from None
    return text


# ---------------------------------------------------------------------------------------------- reading
def _read(path: Path) -> tuple[str, bytes]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise IRSourceError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError as e:
        raise IRSourceError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_text(path: str | Path) -> str:
    """The UTF-8 text of `path` (an IRSourceError when unreadable)."""
    return _read(Path(path))[0]


def read_ir(path: str | Path) -> tuple[ParsedIR, str]:
    """Parse the IR file `path` with its resource file; returns (parsed, sha256 of text + resources)."""
    path = Path(path)
    text, raw = _read(path)
    h = hashlib.sha256(raw)
    res = resource_path(path)
    if not res.is_file():
        parsed = parse_ir(text, None, str(path), res.name)       # fine when every constant is inline
        return parsed, h.hexdigest()
    try:
        h.update(res.read_bytes())
        with np.load(res, allow_pickle=False) as npz:
            parsed = parse_ir(text, npz, str(path), res.name)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise IRSourceError(f"{res}: not a readable .npz resource file ({str(e).splitlines()[0]})") from None
    return parsed, h.hexdigest()


@dataclass
class IRSource:
    """An IR file as a model source (same interface as `checkpoint.SourceModel`)."""

    path: str
    sha256: str
    graph: Graph
    vocab: object = None
    kind: str = "egru-ir"
    model: None = None
    exported: None = None
    meta: dict = field(default_factory=dict)

    @property
    def hidden_sizes(self) -> list[int]:
        return self.graph.layer_sizes()

    def to_graph(self) -> Graph:
        """The graph as the file holds it (a copy: passes may rewrite it)."""
        return self.graph.clone()


def load_ir_source(path: str | Path, vocab_file: str | Path | None = None) -> IRSource:
    from ..data import Vocabulary
    parsed, sha = read_ir(path)
    g = parsed.graph
    logits = [v for v in g.outputs if v.meta.get("role") == "logits"]
    if not g.inputs or not logits:
        raise IRSourceError(f"{path}: the graph is not a step function (needs a tokens input and logits output)")
    vocab = Vocabulary(parsed.vocab) if parsed.vocab is not None else None
    if vocab_file is not None:
        vocab = Vocabulary.from_train_file(vocab_file)
    n = logits[0].type.shape[-1]
    if vocab is not None and len(vocab) != n:
        raise IRSourceError(f"{path}: the model predicts {n} words, the vocabulary has {len(vocab)}")
    return IRSource(str(path), sha, g, vocab)
