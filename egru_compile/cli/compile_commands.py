"""The subcommands that build: ``compile`` (the default command), ``opt`` (passes over an IR file) and
``targets`` (the compilation targets)."""
from __future__ import annotations

import time

import click

from .group import main
from ..guard import _guard
from .options import (
    _echo_json, _merge_option_pairs, _output_options, _progress_wanted, _projection_activation, _target_options,
)


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", help="target name (listed by `egru-compile --help` and `egru-compile targets`)")
@click.option("-o", "--output", "out_dir", type=click.Path(),
              help="output directory (default ./STEM.TARGET in the current directory, STEM = the model file's "
                   "name without extension; with --profile FILE.toml: ./STEM.FILE)")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False),
              help="training text whose first-appearance order gives the vocabulary (EvNN state_dicts)")
@click.option("--passes", "passes", help="comma-separated pass pipeline (default: the standard pipeline)")
@click.option("--print-ir", is_flag=True, help="print the IR as imported by the frontend")
@click.option("--emit-ir", "emit_ir", type=click.Path(dir_okay=False),
              help="write the imported IR (before passes) to FILE, large constants to FILE.npz")
@click.option("--print-ir-after-all", is_flag=True, help="print the IR after every pass")
@click.option("--calib-data", type=click.Path(exists=True, dir_okay=False),
              help="text file used to measure activity (dynamic MACs, placement, chip energy/latency)")
@click.option("--calib-tokens", type=click.IntRange(min=2), default=2000, show_default=True,
              help="calibration tokens to use")
@click.option("--unk", help="map out-of-vocabulary words to this token")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="write the MAC report JSON here")
@_target_options
@_projection_activation
@click.option("--option", "extra_options", multiple=True, metavar="KEY=VALUE",
              help="a target option by its field name (repeatable; e.g. --option max_chips=4): any registered "
                   "target's, a plug-in's included; `egru-compile targets -v` lists them (as flags: --max-chips "
                   "is max_chips)")
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects (runs their code!)")
@click.option("--force", is_flag=True, help="replace a previous egru-compile artifact at -o")
@_output_options
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def compile_cmd(ctx, model, target, out_dir, vocab_file, passes, print_ir, emit_ir, print_ir_after_all, calib_data,
                calib_tokens, unk, report_path, extra_options, projection_activation, trust_checkpoint, force, as_json,
                verbose, quiet, debug, **target_values):
    """Compile MODEL (project checkpoint, EvNN state_dict, torch.export .pt2 or IR file) for --target.
    -v adds pass timings; --json prints {"artifact", "target", "seconds", "summary", "result"}."""
    from click.core import ParameterSource
    given = {k for k in target_values
             if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
    if extra_options:
        target_values, given = _guard(debug, quiet, _merge_option_pairs, extra_options, target_values, given)
    if calib_data is None and ctx.get_parameter_source("calib_tokens") == ParameterSource.COMMANDLINE:
        raise click.UsageError("--calib-tokens needs --calib-data (the text it takes the tokens from)")
    from ..api import compile_request
    from ..compile_driver import CompileRequest
    req = CompileRequest(model=model, target=target, out_dir=out_dir, vocab_file=vocab_file, passes=passes,
                         print_ir=print_ir, emit_ir=emit_ir, print_ir_after_all=print_ir_after_all, calib_data=calib_data,
                         calib_tokens=calib_tokens, unk=unk, report_path=report_path, trust=trust_checkpoint,
                         force=force, verbose=verbose and not quiet, progress=_progress_wanted(quiet, as_json),
                         target_values=target_values,
                         given=frozenset(given), projection_activation=projection_activation)

    def echo(msg="", nl=True, err=False):
        if not (err and quiet):
            click.echo(msg, nl=nl, err=err)
    info = _guard(debug, quiet, compile_request, req, echo)
    if info is None:
        if as_json:
            _echo_json({"artifact": None, "report": report_path, "emit_ir": emit_ir})
        return
    if as_json:
        _echo_json(info)
        return
    # --quiet silences stderr only (progress, notes, warnings), as on every subcommand: the result stays on stdout
    if info.get("summary"):
        click.echo(info["summary"])
    click.echo(f"wrote {info['artifact']} ({info['target']}) in {info['seconds']:.1f} s")


@main.command("opt")
@click.argument("ir_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--passes", help="comma-separated passes to run (default: none)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the IR here (+ OUTPUT.npz)")
@click.option("--split-input-file", is_flag=True,
              help="the file holds several IR texts separated by '// -----' lines: run each on its own")
@click.option("--force", is_flag=True, help="replace an existing -o file (and its .npz)")
@_output_options
@click.option("--debug", is_flag=True, help="show tracebacks")
def opt_cmd(ir_file, passes, output, split_input_file, force, as_json, verbose, quiet, debug):
    """Run passes over an IR file and print the IR (no passes: the file as it is). --json prints {"ir" (the
    text; "" with -o), "passes", "output"}; -v the time the passes took."""
    from ..compile_driver import run_opt
    t0 = time.perf_counter()
    text = _guard(debug, quiet, run_opt, ir_file, passes, output, split_input_file, force=force)
    if verbose and not quiet:
        click.echo(f"opt: {passes or 'no passes'} in {(time.perf_counter() - t0) * 1e3:.0f} ms", err=True)
    if as_json:
        _echo_json({"ir": text, "passes": [p for p in (passes or "").split(",") if p], "output": output})
    else:
        click.echo(text, nl=False)


@main.command("targets")
@_output_options
def targets_cmd(as_json, verbose, quiet):
    """List the compilation targets (chip targets are the bundled chip profiles). -v adds each target's
    options; --json prints {"targets": [{"name", "summary", "family", "options"}]}."""
    from dataclasses import fields as dfields

    from ..targets.registry import all_targets
    specs = all_targets()
    if as_json:
        _echo_json({"targets": [{"name": s.name, "summary": s.summary, "family": s.family or s.name,
                                 "options": [f.name for f in dfields(s.options)]} for s in specs]})
        return
    width = max(len(s.name) for s in specs)
    for s in specs:
        click.echo(f"{s.name:<{width}}  {s.summary}")
        if verbose:
            opts = " ".join("--" + f.name.replace("_", "-") for f in dfields(s.options))
            click.echo(f"{'':<{width}}  options: {opts or '(none)'}")
    click.echo("(chip targets: one TOML file each in egru_compile/targets/chip/profiles/; "
               "--profile FILE.toml compiles for your own)")
