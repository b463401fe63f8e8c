"""The ``egru-compile`` command group: `main` (`DefaultCommandGroup`: ``egru-compile MODEL ...`` means
``egru-compile compile MODEL ...``; usage errors as one ``error:`` line, exit 2; the targets listed in --help).
The subcommands register on `main` in `compile_commands`, `run_commands` and (``train``) `egru_compile.cli`."""
from __future__ import annotations

import difflib
import os

import click

from ..errors import EgruError
from ..guard import _fail, run_click_main


class DefaultCommandGroup(click.Group):
    """`egru-compile MODEL ...` means `egru-compile compile MODEL ...`. Usage errors print one `error:` line
    (exit 2), Ctrl-C anywhere exits 130."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            self._refuse_unknown_command(args[0])
            args = ["compile"] + list(args)
        return super().parse_args(ctx, args)

    def _refuse_unknown_command(self, word: str) -> None:
        """A first word that is neither a command nor an existing file, and reads like a command (no path
        separator, no extension; or close to a command's name), is a mistyped command: say so, instead of
        compiling a model of that name and complaining about the next argument."""
        if word.startswith("-") or os.path.exists(word):
            return
        close = difflib.get_close_matches(word, list(self.commands), n=1, cutoff=0.6)
        if close or not (os.sep in word or "." in word):
            hint = f"did you mean '{close[0]}'?" if close else "commands: " + ", ".join(sorted(self.commands))
            _fail(f"no such command or model file '{word}' ({hint})", 2)

    def format_epilog(self, ctx, formatter):
        """`--help` ends with the targets of the registry (built-in and chip profiles)."""
        try:
            from ..targets.registry import all_targets
            specs = all_targets()
        except EgruError:                      # pragma: no cover - a broken profile still lets --help print
            specs = []
        if specs:
            with formatter.section("Targets (--target NAME; --profile FILE.toml: your own chip)"):
                formatter.write_dl([(s.name, s.summary) for s in specs])
        super().format_epilog(ctx, formatter)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        run_click_main(lambda: super(DefaultCommandGroup, self).main(args, prog_name, complete_var,
                                                                     standalone_mode=False, **extra), "egru-compile")


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="egru-compile")
def main():
    """egru-compile: compile pruned event-based GRU language models into sparse, event-driven programs.

    \b
    egru-compile MODEL --target TARGET [-o DIR]    (the targets are listed below)
    egru-compile eval ARTIFACT --data FILE
    egru-compile generate ARTIFACT --prompt TEXT
    egru-compile inspect ARTIFACT_OR_CHECKPOINT
    egru-compile train --data-dir DIR -o MODEL.pt

    Every command that prints results takes --json, -v and --quiet.
    """
