"""Command-line interface: ``egru-compile MODEL --target T -o DIR`` plus ``eval``, ``generate``, ``inspect``,
``opt``, ``targets``, ``train``.

Every user-facing failure prints one line ``error: ...`` and exits non-zero (traceback only with
``--debug``); outputs are built in a temporary directory and renamed into place on success. The commands go
through the Python API (`egru_compile.api`), so both give the same figures. One convention for every
subcommand that prints results: ``--json`` (one JSON object on stdout), ``-v`` / ``--verbose`` (more detail),
``--quiet`` (nothing on stderr but errors: no progress lines, notes or warnings). Progress lines (steps over
~2 s; when stderr is a terminal) and notes go to stderr, and not with ``--json`` (whose fields carry the notes'
facts).

Modules (errors and signals: `egru_compile.guard`, below every layer): `group` (the command group `main`), `options` (shared options and
output helpers), `compile_commands` (compile, opt, targets), `run_commands` (eval, generate, inspect).
"""
from __future__ import annotations

from . import compile_commands, run_commands  # noqa: F401  (register their subcommands on `main`)
from .group import DefaultCommandGroup, main
from .options import MAX_GENERATE

__all__ = ["DefaultCommandGroup", "MAX_GENERATE", "main"]


def _register_train():
    from ..train.cli import train
    main.add_command(train, "train")


_register_train()
