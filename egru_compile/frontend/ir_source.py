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
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EgruError
from ..fsio import atomic_write
from ..ir import Graph
from ..ir.parser import ParsedIR, parse_ir
from ..ir.content import ContentError, check_graph_content
from ..ir.printer import HEADER, print_graph, resource_arrays
from ..ir.verify import VerificationError, verify_step

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
def write_ir(path: str | Path, graph: Graph, vocab=None) -> str:
    """Write `graph` (and `vocab`) as IR text to `path` and its arrays to ``path.npz``; returns the text."""
    path = Path(path)
    text = print_graph(graph, vocab)
    arrays = resource_arrays(graph, vocab)

    def save_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(resource_path(path), save_npz, mkdir=True)
        atomic_write(path, text, mkdir=True)
    except OSError as e:
        raise IRSourceError(f"cannot write {path}: {e.strerror or e}") from None
    return text


# ---------------------------------------------------------------------------------------------- reading
#: largest IR text read (the PTB model's text is ~7 KB: large constants live in the resource file)
IR_TEXT_LIMIT = 64 << 20
#: resource bytes allowed per declared vocabulary word (a word of up to 256 characters, as numpy's <U stores it)
_VOCAB_WORD_BYTES = 4 * 256
_TENSOR = re.compile(r"tensor<([0-9x]*?)x?(f32|f64|i64|i32|i16|i8|bool)>")
_VOCAB_WORDS = re.compile(r"resource<@vocab, (\d{1,12}) words>")


def _read(path: Path) -> tuple[str, bytes]:
    from ..fsio import FileError, read_bounded
    try:
        raw = read_bounded(path, IR_TEXT_LIMIT, "IR file")
    except FileError as e:
        raise IRSourceError(str(e)) from None
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError as e:
        raise IRSourceError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_text(path: str | Path) -> str:
    """The UTF-8 text of `path` (an IRSourceError when unreadable)."""
    return _read(Path(path))[0]


def declared_resource_bytes(text: str) -> int:
    """An upper bound of the resource bytes an IR text can refer to, from what it declares: every tensor type
    it names counted as dense and three times over (a sparse constant's data, int64 indices and indptr), 8
    bytes per element, plus the declared vocabulary words and 1 MiB. The resource file may not inflate past it
    (`fsio.BoundedNpz`), so a small file cannot make the reader allocate gigabytes."""
    total = 1 << 20
    for dims, _ in _TENSOR.findall(text):
        n = 1
        for d in filter(None, dims.split("x")):
            n *= int(d)
        total += 3 * 8 * (n + 1)
    for words in _VOCAB_WORDS.findall(text):
        total += int(words) * _VOCAB_WORD_BYTES
    return total


def _file_sha256_update(h, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def read_ir(path: str | Path) -> tuple[ParsedIR, str]:
    """Parse the IR file `path` with its resource file; returns (parsed, sha256 of text + resources)."""
    from ..fsio import BoundedNpz, FileError
    path = Path(path)
    text, raw = _read(path)
    h = hashlib.sha256(raw)
    res = resource_path(path)
    if not res.is_file():
        parsed = parse_ir(text, None, str(path), res.name)       # fine when every constant is inline
        return parsed, h.hexdigest()
    try:
        _file_sha256_update(h, res)
        with BoundedNpz(res, declared_resource_bytes(text)) as npz:
            parsed = parse_ir(text, npz, str(path), res.name)
    except FileError as e:
        raise IRSourceError(str(e)) from None
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
    try:
        verify_step(g)          # every target and runner needs a recurrent step function
        check_graph_content(g, str(path))
    except (VerificationError, ContentError) as e:
        raise IRSourceError(f"{path}: {e}" if isinstance(e, VerificationError) else str(e)) from None
    logits = [v for v in g.outputs if v.meta.get("role") == "logits"]
    vocab = Vocabulary(parsed.vocab) if parsed.vocab is not None else None
    if vocab_file is not None:
        vocab = Vocabulary.from_train_file(vocab_file)
    n = logits[0].type.shape[-1]
    if vocab is not None and len(vocab) != n:
        raise IRSourceError(f"{path}: the model predicts {n} words, the vocabulary has {len(vocab)}")
    return IRSource(str(path), sha, g, vocab)
