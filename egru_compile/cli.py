"""Command-line interface: ``egru-compile MODEL --target T -o DIR`` plus ``eval``, ``generate``, ``inspect``,
``opt``, ``targets``, ``train``.

Every user-facing failure prints one line ``error: ...`` and exits non-zero (traceback only with
``--debug``); outputs are built in a temporary directory and renamed into place on success. The commands go
through the Python API (`egru_compile.api`), so both give the same figures. One convention for every
subcommand that prints results: ``--json`` (one JSON object on stdout), ``-v`` / ``--verbose`` (more detail),
``--quiet`` (nothing on stderr but errors: no progress lines, notes or warnings). Progress lines (steps over
~2 s; when stderr is a terminal) and notes go to stderr, and not with ``--json`` (whose fields carry the notes'
facts).
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import click

from .errors import EgruError

#: most tokens `generate --tokens` produces in one call
MAX_GENERATE = 1_000_000

#: ``--projection-activation``: wherever a state_dict is read (compile, eval, inspect, generate)
_projection_activation = click.option(
    "--projection-activation", "projection_activation", type=click.Choice(["identity", "relu"]),
    help="activation of an EvNN state_dict's decoder projection: identity (EvNN >= 0.2.0, the default for EvNN "
         "state_dicts) or relu (EvNN's 2023 code); project checkpoints record theirs")

def _fail(msg: str, code: int = 1):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


class _Interrupts:
    """Counts fatal signals (SIGINT, SIGTERM, SIGHUP) while a command runs. Each raises KeyboardInterrupt in
    the main thread, so every ``finally`` / ``except BaseException`` on the way out runs: temporaries
    (``.out.tmp-*`` of an artifact being compiled, ``.FILE.tmp-*`` of an atomic write) are removed and the
    command ends with one ``error: interrupted`` line, exit 128 + the signal number (130 for Ctrl-C). Native
    code (TVM's compiler, torch) can catch the KeyboardInterrupt and re-raise it as its own error type; a
    recorded signal still makes the command end as interrupted instead of reporting that error."""

    count = 0
    signum = signal.SIGINT
    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))

    @classmethod
    def install(cls):
        cls.count = 0
        cls.signum = signal.SIGINT
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            cls.count += 1
            cls.signum = signum
            if cls.count != 2:          # a second signal while cleaning up does not cut the cleanup short
                raise KeyboardInterrupt
        for sig in cls.SIGNALS:
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover - not the main thread of the main interpreter
                pass

    @staticmethod
    def saved() -> dict:
        """The SIGTERM / SIGHUP handlers before `install` (restored when an in-process call returns)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.getsignal(sig) for sig in _Interrupts.SIGNALS if sig != signal.SIGINT}

    @staticmethod
    def restore(saved: dict) -> None:
        for sig, h in saved.items():
            try:
                signal.signal(sig, h if h is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover
                pass

    @classmethod
    def fail(cls):
        sig = signal.Signals(cls.signum)
        _fail("interrupted" if sig == signal.SIGINT else f"interrupted ({sig.name})", 128 + int(sig))


def _run_guarded(debug: bool, fn, *args, **kwargs):
    """Run `fn`: the project's errors become one `error:` line (exit 1), Ctrl-C exit 130, MemoryError
    exit 1; anything else is a bug and keeps its traceback."""
    warnings.simplefilter("default")
    warnings.formatwarning = lambda m, c, *a, **k: f"warning: {m}\n"
    _Interrupts.install()
    try:
        return fn(*args, **kwargs)
    except EgruError as e:
        if debug:
            raise
        _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    except (KeyboardInterrupt, click.Abort):
        _Interrupts.fail()
    except MemoryError:
        _fail("out of memory")
    except Exception:
        if _Interrupts.count:
            _Interrupts.fail()
        raise


class DefaultCommandGroup(click.Group):
    """`egru-compile MODEL ...` means `egru-compile compile MODEL ...`. Usage errors print one `error:` line
    (exit 2), Ctrl-C anywhere exits 130."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compile"] + list(args)
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx, formatter):
        """`--help` ends with the targets of the registry (built-in and chip profiles)."""
        try:
            from .targets.registry import all_targets
            specs = all_targets()
        except EgruError:                      # pragma: no cover - a broken profile still lets --help print
            specs = []
        if specs:
            with formatter.section("Targets (--target NAME; --profile FILE.toml: your own chip)"):
                formatter.write_dl([(s.name, s.summary) for s in specs])
        super().format_epilog(ctx, formatter)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        saved = _Interrupts.saved()
        _Interrupts.install()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            msg = " ".join(e.format_message().split())
            cmd = e.ctx.command_path if e.ctx is not None else "egru-compile"
            _fail(f"{msg} (see {cmd} --help)", 2)
        except click.ClickException as e:
            _fail(" ".join(e.format_message().split()), e.exit_code or 1)
        except (click.Abort, KeyboardInterrupt):
            _Interrupts.fail()
        except Exception:
            if _Interrupts.count:
                _Interrupts.fail()
            raise
        finally:
            _Interrupts.restore(saved)
        sys.exit(rv if isinstance(rv, int) else 0)


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

    from .targets.registry import all_targets
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
    from .targets.registry import option_fields
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
        else:
            typ = str
        f = click.option(*flags, name, type=typ, default=default, show_default=default is not None, help=help_)(f)
    return f


def _merge_option_pairs(pairs, values: dict, given: set) -> tuple[dict, set]:
    """``--option KEY=VALUE`` pairs (`targets.registry.parse_option`) added to the target option values; a
    field given twice (``--max-chips 2 --option max_chips=4``) is an error."""
    from .targets.registry import parse_option
    values, given = dict(values), set(given)
    for text in pairs:
        name, value = parse_option(text)
        if name in given:
            raise EgruError(f"--option {name}: given twice (--{name.replace('_', '-')} or another --option)")
        values[name] = value
        given.add(name)
    return values, given


def _guard(debug: bool, quiet: bool, fn, *args, **kwargs):
    """`_run_guarded`, with warnings silenced under --quiet."""
    def call():
        if quiet:
            warnings.simplefilter("ignore")
        return fn(*args, **kwargs)
    return _run_guarded(debug, call)


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", help="target name (listed by `egru-compile --help` and `egru-compile targets`)")
@click.option("-o", "--output", "out_dir", type=click.Path(),
              help="output directory (default MODEL.TARGET; with --profile FILE.toml: MODEL.FILE)")
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
                   "target's, a plug-in's included; `egru-compile targets -v` lists them")
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
    from .api import compile_request
    from .compile_driver import CompileRequest
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
    if quiet:
        return
    if info.get("summary"):
        click.echo(info["summary"])
    click.echo(f"wrote {info['artifact']} ({info['target']}) in {info['seconds']:.1f} s")


@main.command("opt")
@click.argument("ir_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--passes", help="comma-separated passes to run (default: none)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the IR here (+ OUTPUT.npz)")
@click.option("--split-input-file", is_flag=True,
              help="the file holds several IR texts separated by '// -----' lines: run each on its own")
@_output_options
@click.option("--debug", is_flag=True, help="show tracebacks")
def opt_cmd(ir_file, passes, output, split_input_file, as_json, verbose, quiet, debug):
    """Run passes over an IR file and print the IR (no passes: the file as it is). --json prints {"ir" (the
    text; "" with -o), "passes", "output"}; -v the time the passes took."""
    from .compile_driver import run_opt
    t0 = time.perf_counter()
    text = _guard(debug, quiet, run_opt, ir_file, passes, output, split_input_file)
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
    options; --json prints [{"name", "summary", "family", "options"}]."""
    from dataclasses import fields as dfields

    from .targets.registry import all_targets
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


@main.command("eval")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="text file to evaluate on")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), help="training text (vocabulary)")
@click.option("--max-tokens", type=click.IntRange(min=2), help="use only the first N tokens")
@click.option("--unk", help="map out-of-vocabulary words to this token (counted as unknown words)")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="cut the text into B contiguous streams, each evaluated from a zero state")
@click.option("--chunked", "chunked", type=click.IntRange(min=1), metavar="BPTT",
              help="EvNN's eval.py protocol: chunks of BPTT tokens (EvNN: 70), each layer's c reset to 0 and only "
                   "its last y carried into the next chunk (default: the state carried whole)")
@_projection_activation
@_output_options
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def eval_cmd(artifact, data, vocab_file, max_tokens, unk, batch_size, chunked, projection_activation, as_json, verbose,
             quiet, trust_checkpoint, debug):
    """Streaming perplexity, activity, MACs/token (chip artifacts: synops/token, 1 synop = 1 MAC) and unknown
    words of a compiled ARTIFACT dir, a source checkpoint or a dense gru/lstm baseline (train --model gru|lstm).
    -v adds cross-entropy, events/token, time and each stream's figures."""
    _guard(debug, quiet, _eval, artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust_checkpoint,
           batch_size, verbose, chunked, projection_activation)


def _eval(artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust, batch_size=1, verbose=False,
          chunked=None, projection_activation=None):
    from .api import load
    res = load(artifact, vocab=vocab_file, trust=trust, projection_activation=projection_activation).evaluate(
        Path(data), batch_size=batch_size, max_tokens=max_tokens, unk=unk, progress=_progress_wanted(quiet, as_json),
        chunked=chunked)
    result = res.to_dict()
    if res.case_folded and not as_json:         # (--json: the "case_folded" field says it)
        _note(f"{res.case_folded} word(s) of {data} folded to lower case (the vocabulary does not distinguish "
              "case)", quiet)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"target        {res.target}")
    click.echo(f"tokens        {res.tokens}" + (
        f" ({res.batch_size} streams; {result['dropped_tokens']} tail tokens not used)" if res.batch_size > 1 else ""))
    click.echo(f"perplexity    {res.perplexity:.4f}" + (
        f" (EvNN's chunked protocol, bptt {result['bptt']})" if result.get("bptt") else ""))
    click.echo(f"words         {res.words}; unknown {res.unknown_words} ({100 * res.unknown_share:.2f} %"
               + (f", mapped to {unk}" if unk and res.unknown_words else "") + ")"
               + (f"; {res.case_folded} folded to lower case" if res.case_folded else "")
               + (f"; {res.unk_in_text} written as the unknown-word token ({100 * res.unk_in_text / res.words:.2f} %)"
                  if res.unk_in_text else ""))
    # one name per quantity: a chip counts synaptic operations (synops, the glossary of targets/chip/report.py);
    # one synop is one MAC of count-macs, the MACs/token onnx / tvm / checkpoints report (the paper's convention)
    ops = _ops_name(res)
    if not res.chip:                # (a chip artifact: the synops/token line of the chip lines below)
        click.echo(f"MACs/token    {res.macs_per_token:.1f}")
    click.echo("activity      " + " ".join(f"{a:.4f}" for a in res.activity))
    if result.get("projection_activation"):
        from .model import projection_line
        click.echo(f"projection    {projection_line(result['projection_activation'])}")
    if res.tokens_per_second:
        click.echo(f"tokens/s      {res.tokens_per_second:,.0f} ({1e6 / res.tokens_per_second:,.1f} "
                   "µs/token, whole token incl. decoder and log-softmax)")
    if verbose:
        click.echo(f"cross-entropy {res.cross_entropy:.6f} nats")
        click.echo("events/token  " + " ".join(f"{e:.2f}" for e in res.events_per_token))
        click.echo(f"seconds       {res.seconds:.2f}")
        for b, st in enumerate(result.get("streams") or []):
            click.echo(f"stream {b:<6} tokens {st['tokens']}  perplexity {st['perplexity']:.4f}  "
                       f"{ops}/token {st['macs_per_token']:.1f}")
    if res.chip:
        from .targets.chip.report import chip_summary
        click.echo(chip_summary(res.chip), nl=False)


def _ops_name(res) -> str:
    """What eval calls the multiply-accumulates of the RNN layers: ``synops`` on a chip artifact (as its
    report.txt, mapping.json and inspect do), ``MACs`` on every other target."""
    return "synops" if res.chip else "MACs"


@main.command("generate")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--prompt", required=True, help="words to start from (whitespace-separated vocabulary words; folded "
              "to lower case when the vocabulary does not distinguish case)")
@click.option("--tokens", "n_tokens", type=click.IntRange(min=1, max=MAX_GENERATE), default=20, show_default=True,
              help="tokens to generate")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="softmax temperature; 0 = greedy (argmax)")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True,
              help="sample among the K most likely tokens (0: all)")
@click.option("--seed", type=click.IntRange(min=0, max=2 ** 63 - 1), default=0, show_default=True,
              help="random seed of the sampler")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), help="training text (vocabulary)")
@click.option("--unk", help="map out-of-vocabulary prompt words to this token")
@_projection_activation
@_output_options
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def generate_cmd(artifact, prompt, n_tokens, temperature, top_k, seed, vocab_file, unk, projection_activation, as_json,
                 verbose, quiet, trust_checkpoint, debug):
    """Generate text after --prompt with a compiled ARTIFACT dir, a source checkpoint or a gru/lstm baseline.
    -v adds the token ids (stderr)."""
    from .api import load

    def run():
        return load(artifact, vocab=vocab_file, trust=trust_checkpoint,
                    projection_activation=projection_activation).generate_result(
            prompt, n_tokens, temperature=temperature, top_k=top_k or None, seed=seed, unk=unk)
    result = _guard(debug, quiet, run)
    if result["case_folded"] and not as_json:     # (--json: the "case_folded" field says it)
        _note(f"{result['case_folded']} prompt word(s) folded to lower case (the vocabulary does not distinguish "
              f"case): {' '.join(result['prompt'])}", quiet)
    if verbose and not quiet:
        click.echo(f"generated ids: {' '.join(map(str, result['tokens']))}", err=True)
    click.echo(json.dumps(result, sort_keys=True) if as_json else result["text"])


@main.command("inspect")
@click.argument("path", type=click.Path(exists=True))
@click.option("--core", type=int, help="details of one core (chip targets)")
@click.option("--links", is_flag=True, help="the busiest mesh links (chip targets)")
@_projection_activation
@_output_options
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def inspect_cmd(path, core, links, projection_activation, as_json, verbose, quiet, trust_checkpoint, debug):
    """Describe a compiled artifact directory or a source checkpoint. --json prints the manifest (artifacts;
    with --core / --links that part of mapping.json) or the checkpoint's shapes; -v lists the artifact's files."""
    from .api import inspect
    text, data = _guard(debug, quiet, inspect, path, core=core, links=links, trust=trust_checkpoint,
                        projection_activation=projection_activation)
    if as_json:
        _echo_json(data)
        return
    click.echo(text, nl=False)
    if verbose and data.get("files"):
        for name in data["files"]:
            click.echo(f"file          {name}")


def _register_train():
    from .train.cli import train
    main.add_command(train, "train")


_register_train()

if __name__ == "__main__":
    main()
