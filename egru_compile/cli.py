"""Command-line interface: ``egru-compile MODEL --target T -o DIR`` plus ``eval``, ``inspect``, ``train``.

Every user-facing failure prints one line ``error: ...`` and exits non-zero (traceback only with
``--debug``); outputs are built in a temporary directory and renamed into place on success.
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

def _fail(msg: str, code: int = 1):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


class _Interrupts:
    """Counts SIGINTs while a command runs. Native code (TVM's compiler, torch) can catch the
    KeyboardInterrupt the handler raises and re-raise it as its own error type; a recorded SIGINT still makes
    the command end as interrupted (exit 130) instead of reporting that error."""

    count = 0

    @classmethod
    def install(cls):
        cls.count = 0
        if threading.current_thread() is not threading.main_thread():
            return
        def handler(signum, frame):
            cls.count += 1
            raise KeyboardInterrupt
        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # pragma: no cover - not the main thread of the main interpreter
            pass


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
        _fail("interrupted", 130)
    except MemoryError:
        _fail("out of memory")
    except Exception:
        if _Interrupts.count:
            _fail("interrupted", 130)
        raise


class DefaultCommandGroup(click.Group):
    """`egru-compile MODEL ...` means `egru-compile compile MODEL ...`. Usage errors print one `error:` line
    (exit 2), Ctrl-C anywhere exits 130."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compile"] + list(args)
        return super().parse_args(ctx, args)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
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
            _fail("interrupted", 130)
        except Exception:
            if _Interrupts.count:
                _fail("interrupted", 130)
            raise
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="egru-compile")
def main():
    """egru-compile: compile pruned event-based GRU language models into sparse, event-driven programs.

    \b
    egru-compile MODEL --target TARGET -o DIR      (egru-compile targets: the list)
    egru-compile eval ARTIFACT --data FILE
    egru-compile generate ARTIFACT --prompt TEXT
    egru-compile inspect DIR
    """


def _target_options(f):
    """Add every registered target's options (`targets.registry`) as command-line options of `compile`."""
    from .targets.registry import option_fields
    for name, default, meta, takers in reversed(option_fields()):
        flags = ["--" + n.replace("_", "-") for n in (name, *meta.get("aliases", ()))]
        help_ = f"[{', '.join(takers) if len(takers) < 3 else 'chip targets'}] {meta.get('help', '')}"
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


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", help="target name (`egru-compile targets` lists them)")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="output directory (default MODEL.TARGET)")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False),
              help="training text whose first-appearance order gives the vocabulary (EvNN state_dicts)")
@click.option("--passes", "passes", help="comma-separated pass pipeline (default: the standard pipeline)")
@click.option("--print-ir", is_flag=True, help="print the IR as imported by the frontend")
@click.option("--emit-ir", "emit_ir", type=click.Path(dir_okay=False),
              help="write the imported IR (before passes) to FILE, large constants to FILE.npz")
@click.option("--print-ir-after-all", is_flag=True, help="print the IR after every pass")
@click.option("--calib-data", type=click.Path(exists=True, dir_okay=False),
              help="text used to measure activity (dynamic MACs, placement)")
@click.option("--calib-tokens", type=click.IntRange(min=2), default=2000, show_default=True,
              help="calibration tokens to use")
@click.option("--unk", help="map out-of-vocabulary words to this token")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="write the MAC report JSON here")
@_target_options
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects (runs their code!)")
@click.option("--force", is_flag=True, help="replace a previous egru-compile artifact at -o")
@click.option("-v", "--verbose", is_flag=True, help="print pass timings and progress")
@click.option("--debug", is_flag=True, help="show tracebacks")
@click.pass_context
def compile_cmd(ctx, model, target, out_dir, vocab_file, passes, print_ir, emit_ir, print_ir_after_all, calib_data,
                calib_tokens, unk, report_path, trust_checkpoint, force, verbose, debug, **target_values):
    """Compile MODEL (project checkpoint, EvNN state_dict or torch.export .pt2) for --target."""
    from click.core import ParameterSource
    given = {k for k in target_values
             if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
    from .compile_driver import CompileRequest, run_compile
    req = CompileRequest(model=model, target=target, out_dir=out_dir, vocab_file=vocab_file, passes=passes,
                         print_ir=print_ir, emit_ir=emit_ir, print_ir_after_all=print_ir_after_all, calib_data=calib_data,
                         calib_tokens=calib_tokens, unk=unk, report_path=report_path, trust=trust_checkpoint,
                         force=force, verbose=verbose, target_values=target_values, given=frozenset(given))
    _run_guarded(debug, run_compile, req, click.echo)


@main.command("opt")
@click.argument("ir_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--passes", help="comma-separated passes to run (default: none)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write the IR here (+ OUTPUT.npz)")
@click.option("--split-input-file", is_flag=True,
              help="the file holds several IR texts separated by '// -----' lines: run each on its own")
@click.option("--debug", is_flag=True, help="show tracebacks")
def opt_cmd(ir_file, passes, output, split_input_file, debug):
    """Run passes over an IR file and print the IR (no passes: the file as it is)."""
    from .compile_driver import run_opt
    click.echo(_run_guarded(debug, run_opt, ir_file, passes, output, split_input_file), nl=False)


@main.command("targets")
def targets_cmd():
    """List the compilation targets (chip targets are the bundled chip profiles)."""
    from .targets.registry import all_targets
    specs = all_targets()
    width = max(len(s.name) for s in specs)
    for s in specs:
        click.echo(f"{s.name:<{width}}  {s.summary}")
    click.echo("(chip targets: one TOML file each in egru_compile/targets/chip/profiles/; "
               "--profile FILE.toml compiles for your own)")


@main.command("eval")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="text to evaluate on")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), help="training text (vocabulary)")
@click.option("--max-tokens", type=click.IntRange(min=2), help="use only the first N tokens")
@click.option("--unk", help="map out-of-vocabulary words to this token")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="cut the text into B contiguous streams, each evaluated from a zero state")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def eval_cmd(artifact, data, vocab_file, max_tokens, unk, batch_size, as_json, quiet, trust_checkpoint, debug):
    """Streaming perplexity, activity and MACs/token of a compiled ARTIFACT dir or a source checkpoint."""
    _run_guarded(debug, _eval, artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust_checkpoint,
                 batch_size)


def _eval(artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust, batch_size=1):
    from .runtime import evaluate_path
    quiet = quiet or not sys.stdout.isatty()
    result = evaluate_path(artifact, data, vocab_file=vocab_file, max_tokens=max_tokens, unk=unk, quiet=quiet,
                           trust=trust, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(f"target        {result['target']}")
        click.echo(f"tokens        {result['tokens']}" + (
            f" ({result['batch_size']} streams; {result['dropped_tokens']} tail tokens not used)"
            if result["batch_size"] > 1 else ""))
        click.echo(f"perplexity    {result['perplexity']:.4f}")
        click.echo(f"MACs/token    {result['macs_per_token']:.1f}")
        click.echo("activity      " + " ".join(f"{a:.4f}" for a in result["activity"]))
        if result.get("tokens_per_second"):
            click.echo(f"tokens/s      {result['tokens_per_second']:,.0f} ({1e6 / result['tokens_per_second']:,.1f} "
                       "µs/token, whole token incl. decoder and log-softmax)")
        if result.get("chip"):
            from .targets.chip.report import chip_summary
            click.echo(chip_summary(result["chip"]), nl=False)


@main.command("generate")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--prompt", required=True, help="words to start from (whitespace-separated vocabulary words)")
@click.option("--tokens", "n_tokens", type=click.IntRange(min=1), default=20, show_default=True,
              help="tokens to generate")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="softmax temperature; 0 = greedy (argmax)")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True,
              help="sample among the K most likely tokens (0: all)")
@click.option("--seed", type=int, default=0, show_default=True, help="random seed of the sampler")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), help="training text (vocabulary)")
@click.option("--unk", help="map out-of-vocabulary prompt words to this token")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def generate_cmd(artifact, prompt, n_tokens, temperature, top_k, seed, vocab_file, unk, as_json, trust_checkpoint,
                 debug):
    """Generate text after --prompt with a compiled ARTIFACT dir or a source checkpoint."""
    from .runtime.generate import generate_path
    result = _run_guarded(debug, generate_path, artifact, prompt, n_tokens, temperature, top_k or None, seed,
                          vocab_file=vocab_file, unk=unk, trust=trust_checkpoint)
    click.echo(json.dumps(result, sort_keys=True) if as_json else result["text"])


@main.command("inspect")
@click.argument("path", type=click.Path(exists=True))
@click.option("--core", type=int, help="details of one core (chip targets)")
@click.option("--links", is_flag=True, help="the busiest mesh links (chip targets)")
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def inspect_cmd(path, core, links, trust_checkpoint, debug):
    """Describe a compiled artifact directory or a source checkpoint."""
    _run_guarded(debug, _inspect, path, core, trust_checkpoint, links)


def _inspect(path, core, trust, links=False):
    p = Path(path)
    if p.is_dir():
        from .artifact import read_manifest
        from .targets.registry import for_manifest
        info = read_manifest(p)
        if for_manifest(info) is None:
            raise EgruError(f"{path}: no target of this installation opens {info['target']!r} artifacts "
                            f"(format {info.get('format')!r})")
        from .targets.describe import describe_artifact
        click.echo(describe_artifact(p, info, core=core, links=links), nl=False)
        return
    from .frontend import load_source
    src = load_source(path, trust=trust)
    click.echo(f"source        {src.kind}")
    click.echo(f"sha256        {src.sha256}")
    if src.model is not None:
        cfg = src.model.config
        click.echo(f"vocab         {cfg.vocab_size} words" + ("" if src.vocab else " (no vocabulary stored)"))
        click.echo(f"embedding     {cfg.embedding_size}")
        click.echo(f"layers        {' '.join(str(h) for h in cfg.hidden_sizes)}")
        for i, layer in enumerate(src.model.rnns):
            for name in ("kernel", "recurrent_kernel"):
                w = getattr(layer, name)
                nnz = int((w != 0).sum())
                click.echo(f"rnns.{i}.{name:<17} {tuple(w.shape)}  density {nnz / w.numel():.4f}")
        proj = getattr(src.model.decoder, "projection", None)
        if proj is not None:           # EvNN's projection decoder
            nnz = int((proj.weight != 0).sum())
            click.echo(f"decoder       E · relu(P · y + p) + b (tied E), P {tuple(proj.weight.shape)}  "
                       f"density {nnz / proj.weight.numel():.4f}")
        else:
            click.echo("decoder       E · y + b (tied to the embedding)")
    else:
        click.echo(f"layers        {' '.join(str(h) for h in src.hidden_sizes)}")


def _register_train():
    from .train.cli import train
    main.add_command(train, "train")


_register_train()

if __name__ == "__main__":
    main()
