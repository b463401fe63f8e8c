"""The error every user-facing failure derives from: the CLI prints its message as one line and exits 1.

`option` spells an option in a message the way the user gave it: ``--max-chips`` on the command line (the
default), ``max_chips=`` from the Python API (`egru_compile.compile` runs under `api_spelling()`), so one message
text serves both surfaces.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_API = ContextVar("egru_option_spelling_api", default=False)
_NO_VALUE = object()


class EgruError(Exception):
    """A problem with the user's input or environment (not a compiler bug)."""


def option(name: str, value=_NO_VALUE) -> str:
    """Option `name` (a field or keyword name, ``max_chips``), with `value` if given, as the user wrote it:
    ``--max-chips`` / ``--weight-dtype f16`` / ``--float-weights`` (command line) or ``max_chips=`` /
    ``weight_dtype='f16'`` / ``float_weights=True`` (Python API)."""
    if _API.get():
        return f"{name}=" + ("" if value is _NO_VALUE else repr(value))
    flag = "--" + name.replace("_", "-")
    return flag if value is _NO_VALUE or value is True else f"{flag} {value}"


@contextmanager
def api_spelling():
    """Within this block `option` spells options as Python keywords (``max_chips=``)."""
    token = _API.set(True)
    try:
        yield
    finally:
        _API.reset(token)
