"""The error every user-facing failure derives from: the CLI prints its message as one line and exits 1 (2 for a\n`UsageError`, a malformed request).

`option` spells an option in a message the way the user gave it: ``--max-chips`` on the command line,
``max_chips=`` from the Python API, so one message text serves both surfaces. The surface sets the spelling
for the call: the CLI runs every command under `cli_spelling()` (`guard`), the API's entry points
(`egru_compile.compile`, `Artifact.evaluate` / `generate`) under `api_spelling()`; the outer one wins (the CLI's
``eval`` goes through `Artifact.evaluate` and still names flags), and outside both the flag is named.
"""
from __future__ import annotations

import shlex
from contextlib import contextmanager
from contextvars import ContextVar

_SPELLING: ContextVar[str | None] = ContextVar("egru_option_spelling", default=None)
_NO_VALUE = object()


class EgruError(Exception):
    """A problem with the user's input or environment (not a compiler bug). The CLI exits with `exit_code`."""
    exit_code = 1


class UsageError(EgruError):
    """A malformed request — an option value out of its range, an empty output name — found after the command
    line parsed: the CLI exits 2, as for the usage errors its parser finds."""
    exit_code = 2


def option(name: str, value=_NO_VALUE) -> str:
    """Option `name` (a field or keyword name, ``max_chips``), with `value` if given, as the user wrote it:
    ``--max-chips`` / ``--weight-dtype f16`` / ``--float-weights`` (command line) or ``max_chips=`` /
    ``weight_dtype='f16'`` / ``float_weights=True`` (Python API)."""
    if _SPELLING.get() == "api":
        return f"{name}=" + ("" if value is _NO_VALUE else repr(value))
    flag = "--" + name.replace("_", "-")
    # quoted as a shell needs it, so the hint can be pasted: --unk '<unk>' (a bare <unk> is a redirection)
    return flag if value is _NO_VALUE or value is True else f"{flag} {shlex.quote(str(value))}"


@contextmanager
def _spelling(kind: str):
    token = _SPELLING.set(kind) if _SPELLING.get() is None else None       # the outer surface wins
    try:
        yield
    finally:
        if token is not None:
            _SPELLING.reset(token)


def api_spelling():
    """Within this block (unless a CLI command runs it) `option` spells options as Python keywords."""
    return _spelling("api")


def cli_spelling():
    """Within this block `option` spells options as command-line flags, also inside API calls it makes."""
    return _spelling("cli")
