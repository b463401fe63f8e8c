"""Command-line interface: ``egru-compile MODEL --target T -o DIR`` plus ``eval``, ``inspect``, ``train``.

Every user-facing failure prints one line ``error: ...`` and exits non-zero (traceback only with
``--debug``); outputs are built in a temporary directory and renamed into place on success.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import click

from .errors import EgruError

SUBCOMMANDS = ("compile", "eval", "inspect", "train")


def _fail(msg: str, code: int = 1):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _run_guarded(debug: bool, fn, *args, **kwargs):
    """Run `fn`, turning user errors into one-line messages."""
    warnings.simplefilter("default")
    warnings.formatwarning = lambda m, c, *a, **k: f"warning: {m}\n"
    try:
        return fn(*args, **kwargs)
    except EgruError as e:
        if debug:
            raise
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except MemoryError:
        _fail("out of memory")


class DefaultCommandGroup(click.Group):
    """`egru-compile MODEL ...` means `egru-compile compile MODEL ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compile"] + list(args)
        return super().parse_args(ctx, args)


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="egru-compile")
def main():
    """egru-compile: compile pruned event-based GRU language models into sparse, event-driven programs.

    \b
    egru-compile MODEL --target {onnx,tvm,loihi-like,loihi2-like,spinnaker2-like} -o DIR
    egru-compile eval ARTIFACT --data FILE
    egru-compile inspect DIR
    """


def _default_out(model: str, target: str) -> str:
    return f"{Path(model).stem}.{target}"


def _load_calibration(path, source, n_tokens, unk):
    from .data import Vocabulary
    if source.vocab is None:
        raise EgruError("--calib-data needs a vocabulary: the checkpoint has none, give --vocab TRAIN.txt")
    vocab: Vocabulary = source.vocab
    return vocab.encode_file(path, max_tokens=n_tokens, unk=unk)


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", "-t", help="onnx, tvm, loihi-like, loihi2-like or spinnaker2-like")
@click.option("-o", "--output", "out_dir", type=click.Path(), help="output directory (default MODEL.TARGET)")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False),
              help="training text whose first-appearance order gives the vocabulary (EvNN state_dicts)")
@click.option("--passes", "passes", help="comma-separated pass pipeline (default: the standard pipeline)")
@click.option("--print-ir", is_flag=True, help="print the IR as imported by the frontend")
@click.option("--print-ir-after-all", is_flag=True, help="print the IR after every pass")
@click.option("--calib-data", type=click.Path(exists=True, dir_okay=False),
              help="text used to measure activity (dynamic MACs, placement)")
@click.option("--calib-tokens", type=int, default=2000, show_default=True, help="calibration tokens to use")
@click.option("--unk", help="map out-of-vocabulary words to this token")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="write the MAC report JSON here")
@click.option("--profile", "profile_path", type=click.Path(exists=True, dir_okay=False),
              help="chip profile file (neuromorphic targets)")
@click.option("--max-chips", type=int, default=16, show_default=True, help="most chips a placement may use")
@click.option("--float-weights", is_flag=True, help="keep float weights on chip targets (no int8 quantization)")
@click.option("--placement-objective", type=click.Choice(["traffic", "latency"]), default="traffic",
              show_default=True, help="chip targets: fewest spike hops within the baseline's cores, or use spare "
              "cores to cut the busiest core's load")
@click.option("--onnx-weight-dtype", type=click.Choice(["auto", "f32", "f16", "int8"]), default="auto",
              show_default=True, help="onnx target: dtype of gathered weight rows (auto: f32, or int8 after "
              "quantize-int8; int8: adds quantize-int8 — a quarter of the bytes, the fastest in ORT)")
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects (runs their code!)")
@click.option("--force", is_flag=True, help="replace an existing output directory")
@click.option("-v", "--verbose", is_flag=True, help="print pass timings and progress")
@click.option("--debug", is_flag=True, help="show tracebacks")
def compile_cmd(model, target, out_dir, vocab_file, passes, print_ir, print_ir_after_all, calib_data,
                calib_tokens, unk, report_path, profile_path, max_chips, float_weights, placement_objective,
                onnx_weight_dtype, trust_checkpoint, force, verbose, debug):
    """Compile MODEL (project checkpoint, EvNN state_dict or torch.export .pt2) for --target."""
    options = dict(target=target, passes=passes, calib_data=calib_data, calib_tokens=calib_tokens, unk=unk,
                   profile=profile_path, max_chips=max_chips, float_weights=float_weights,
                   placement_objective=placement_objective, onnx_weight_dtype=onnx_weight_dtype)
    _run_guarded(debug, _compile, model, out_dir, vocab_file, print_ir, print_ir_after_all, report_path,
                 trust_checkpoint, force, verbose, options)


def _compile(model, out_dir, vocab_file, print_ir, print_ir_after_all, report_path, trust, force, verbose,
             options):
    from .frontend import load_source
    from .targets import get_target
    from .targets.output import atomic_output_dir, check_output_dir

    target = options["target"]
    if options.get("onnx_weight_dtype", "auto") != "auto" and target != "onnx":
        raise EgruError(f"--onnx-weight-dtype applies to --target onnx only (target: {target or 'none'})")
    if target is None and not (print_ir or print_ir_after_all or report_path):
        raise EgruError("nothing to do: give --target (onnx, tvm, loihi-like, loihi2-like, spinnaker2-like) "
                        "or --print-ir")
    target_fn = get_target(target) if target else None
    if target:
        out_dir = out_dir or _default_out(model, target)
        check_output_dir(out_dir, force)
    if target in CHIP_TARGETS and options.get("profile"):
        from .targets.chip.profile import load_profile
        load_profile(options["profile"])            # a bad profile fails before any work is done
    t0 = time.perf_counter()
    source = load_source(model, trust=trust, vocab_file=vocab_file)
    graph = source.to_graph()
    if verbose:
        click.echo(f"frontend: {source.kind} {model} -> {len(graph.nodes)} IR nodes "
                   f"({(time.perf_counter() - t0) * 1e3:.0f} ms)", err=True)
    if print_ir:
        click.echo(str(graph), nl=False)
    calib = None
    if options["calib_data"]:
        calib = _load_calibration(options["calib_data"], source, options["calib_tokens"], options["unk"])
    graph = _run_passes(graph, options["passes"], calib, print_ir_after_all, verbose,
                        quantize=(target in CHIP_TARGETS and not options["float_weights"])
                        or (target == "onnx" and options["onnx_weight_dtype"] == "int8"))
    q = graph.meta.get("quantize")
    if q and q.get("ppl_before") is not None:
        click.echo(f"quantize-int8: calibration perplexity {q['ppl_before']:.3f} -> {q['ppl_after']:.3f} "
                   f"({100 * q['ppl_rel_change']:+.3f} %)", err=True)
    if report_path and "macs" in graph.meta:
        from .targets.output import atomic_write_text
        report = dict(graph.meta["macs"])
        if q:
            report["quantize"] = q
        atomic_write_text(report_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif report_path:
        raise EgruError("--report needs the count-macs pass in the pipeline")
    if target_fn is None:
        return
    with atomic_output_dir(out_dir, force) as tmp:
        options = dict(options, calib_token_ids=calib, verbose=verbose)
        result = target_fn(graph, source, tmp, options)
    if result and result.get("summary"):
        click.echo(result["summary"])
    click.echo(f"wrote {out_dir} ({target}) in {time.perf_counter() - t0:.1f} s")


CHIP_TARGETS = ("loihi-like", "loihi2-like", "spinnaker2-like")


def _run_passes(graph, passes, calib, print_after_all, verbose, quantize=False):
    """Run `--passes` (default pipeline when None). Chip targets hold int8 weights (unless --float-weights),
    and so does the onnx target with --onnx-weight-dtype int8: then quantize-int8 runs before count-macs so
    the MAC report describes the weights the target holds."""
    from .passes import PassManager, PassOptions
    from .passes.manager import parse_pipeline
    names = parse_pipeline(passes or None)          # "default" expands before quantize-int8 is placed
    if quantize and "quantize-int8" not in names:
        at = names.index("count-macs") if "count-macs" in names else len(names)
        names.insert(at, "quantize-int8")
    pm = PassManager(names, options=PassOptions(calib_tokens=calib), print_ir_after_all=print_after_all,
                     verbose=verbose, stream=sys.stdout if print_after_all else sys.stderr)
    return pm.run(graph)


@main.command("eval")
@click.argument("artifact", type=click.Path(exists=True))
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="text to evaluate on")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), help="training text (vocabulary)")
@click.option("--max-tokens", type=int, help="use only the first N tokens")
@click.option("--unk", help="map out-of-vocabulary words to this token")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def eval_cmd(artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust_checkpoint, debug):
    """Streaming perplexity, activity and MACs/token of a compiled ARTIFACT dir or a source checkpoint."""
    _run_guarded(debug, _eval, artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust_checkpoint)


def _eval(artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust):
    from .runtime import evaluate_path
    quiet = quiet or not sys.stdout.isatty()
    result = evaluate_path(artifact, data, vocab_file=vocab_file, max_tokens=max_tokens, unk=unk, quiet=quiet,
                           trust=trust)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        click.echo(f"target        {result['target']}")
        click.echo(f"tokens        {result['tokens']}")
        click.echo(f"perplexity    {result['perplexity']:.4f}")
        click.echo(f"MACs/token    {result['macs_per_token']:.1f}")
        click.echo("activity      " + " ".join(f"{a:.4f}" for a in result["activity"]))


@main.command("inspect")
@click.argument("path", type=click.Path(exists=True))
@click.option("--core", type=int, help="details of one core (chip targets)")
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def inspect_cmd(path, core, trust_checkpoint, debug):
    """Describe a compiled artifact directory or a source checkpoint."""
    _run_guarded(debug, _inspect, path, core, trust_checkpoint)


def _inspect(path, core, trust):
    p = Path(path)
    if p.is_dir():
        manifest = p / "manifest.json"
        if not manifest.is_file():
            raise EgruError(f"{path} is not a compiled artifact (no manifest.json)")
        try:
            info = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EgruError(f"{manifest} is unreadable: {e}") from None
        from .targets.describe import describe_artifact
        click.echo(describe_artifact(p, info, core=core), nl=False)
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
    else:
        click.echo(f"layers        {' '.join(str(h) for h in src.hidden_sizes)}")


def _register_train():
    from .train.cli import train
    main.add_command(train, "train")


_register_train()

if __name__ == "__main__":
    main()
