"""Options and output helpers the subcommands share: --json / -v / --quiet (`_output_options`),
--projection-activation, every registered target's options (`_target_options`, ``--option KEY=VALUE``),
JSON output, progress and notes on stderr."""
from __future__ import annotations

import json
import sys

import click

from ..errors import EgruError, UsageError
from ..runtime.generate import MAX_GENERATE  # noqa: F401 - most tokens `generate --tokens` produces (re-exported)

#: ``--projection-activation``: wherever a state_dict is read (compile, eval, inspect, generate)
_projection_activation = click.option(
    "--projection-activation", "projection_activation", type=click.Choice(["identity", "relu"]),
    help="activation of an EvNN state_dict's decoder projection: identity (EvNN >= 0.2.0, the default for EvNN "
         "state_dicts) or relu (EvNN's 2023 code); project checkpoints record theirs")


def _output_options(f):
    """--json, -v/--verbose and --quiet: the same three on every subcommand that prints results."""
    f = click.option("--quiet", "-q", is_flag=True,
                     help="nothing on stderr but errors (no progress lines, notes or warnings)")(f)
    f = click.option("-v", "--verbose", is_flag=True, help="more detail")(f)
    f = click.option("--json", "as_json", is_flag=True, help="print one JSON object on stdout")(f)
    return f


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, sort_keys=True, default=str))


def _progress_wanted(quiet: bool, as_json: bool) -> bool:
    """Progress lines / bars (steps over ~2 s) when stderr is a terminal, as git does; never with --quiet or
    --json."""
    return not (quiet or as_json) and sys.stderr.isatty()


def _note(msg: str, quiet: bool) -> None:
    if not quiet:
        click.echo(f"note: {msg}", err=True)


def _target_option_help() -> dict[str, str]:
    """Each target option's help, per target that takes it: ``[onnx] ... [tvm] ... [chip targets] ...`` when
    the targets describe it differently, one ``[takers] help`` when they agree."""
    from dataclasses import fields as dfields

    from ..targets.registry import all_targets
    by: dict[str, dict[str, list[str]]] = {}
    for spec in all_targets():
        for f in dfields(spec.options):
            label = "chip targets" if spec.family == "chip" else spec.name
            labels = by.setdefault(f.name, {}).setdefault(f.metadata.get("help", ""), [])
            if label not in labels:
                labels.append(label)
    return {name: "; ".join(f"[{', '.join(labels)}] {h}" for h, labels in helps.items())
            for name, helps in by.items()}


def _target_options(f):
    """Add every registered target's options (`targets.registry`) as command-line options of `compile`."""
    from ..targets.registry import option_fields
    helps = _target_option_help()
    for name, default, meta, takers in reversed(option_fields()):
        flags = ["--" + n.replace("_", "-") for n in (name, *meta.get("aliases", ()))]
        help_ = helps[name]
        if isinstance(default, bool):
            f = click.option(*flags, name, is_flag=True, default=default, help=help_)(f)
            continue
        if meta.get("choices"):
            typ = click.Choice(list(meta["choices"]))
        elif meta.get("path"):
            typ = click.Path(exists=True, dir_okay=False)
        elif isinstance(default, int):
            typ = click.IntRange(min=meta.get("min")) if meta.get("min") is not None else int
        elif isinstance(default, float):
            typ = click.FloatRange(min=meta.get("min")) if meta.get("min") is not None else float
        else:
            typ = str
        f = click.option(*flags, name, type=typ, default=default, show_default=default is not None, help=help_)(f)
    return f


def _merge_option_pairs(pairs, values: dict, given: set) -> tuple[dict, set]:
    """``--option KEY=VALUE`` pairs (`targets.registry.parse_option`) added to the target option values; a
    field given twice (``--max-chips 2 --option max_chips=4``) is an error."""
    from ..targets.registry import parse_option
    values, given = dict(values), set(given)
    for text in pairs:
        name, value = parse_option(text)
        if name in given:
            raise UsageError(f"--option {name}: given twice (--{name.replace('_', '-')} or another --option)")
        values[name] = value
        given.add(name)
    return values, given
