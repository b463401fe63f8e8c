"""The subcommands that run or describe a compiled artifact or a checkpoint: ``eval``, ``generate`` and
``inspect`` (through the Python API, `egru_compile.api`)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .group import main
from ..guard import _guard
from .options import MAX_GENERATE, _echo_json, _note, _output_options, _progress_wanted, _projection_activation


@main.command("eval")
@click.argument("artifact", type=click.Path())   # a missing path: the loader's message, as ec.load gives
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="text file to evaluate on")
@click.option("--vocab", "vocab_file", type=click.Path(exists=True, dir_okay=False), help="training text (vocabulary)")
@click.option("--max-tokens", type=click.IntRange(min=2), help="use only the first N tokens")
@click.option("--unk", help="map out-of-vocabulary words to this token (counted as unknown words)")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="cut the text into B contiguous streams, each evaluated from a zero state")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="threads of the B streams' kernels (tvm artifacts; the results are the same for any count)")
@click.option("--chunked", "chunked", type=click.IntRange(min=1), metavar="BPTT",
              help="EvNN's eval.py protocol: chunks of BPTT tokens (EvNN: 70), each layer's c reset to 0 and only "
                   "its last y carried into the next chunk (default: the state carried whole)")
@_projection_activation
@_output_options
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def eval_cmd(artifact, data, vocab_file, max_tokens, unk, batch_size, threads, chunked, projection_activation, as_json,
             verbose, quiet, trust_checkpoint, debug):
    """Streaming perplexity, activity, MACs/token (chip artifacts: synops/token, 1 synop = 1 MAC) and unknown
    words of a compiled ARTIFACT dir, a source checkpoint or a dense gru/lstm baseline (train --model gru|lstm).
    -v adds cross-entropy, events/token, time and each stream's figures."""
    _guard(debug, quiet, _eval, artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust_checkpoint,
           batch_size, verbose, chunked, projection_activation, threads)


def _eval(artifact, data, vocab_file, max_tokens, unk, as_json, quiet, trust, batch_size=1, verbose=False,
          chunked=None, projection_activation=None, threads=1):
    from ..api import load
    res = load(artifact, vocab=vocab_file, trust=trust, projection_activation=projection_activation).evaluate(
        Path(data), batch_size=batch_size, max_tokens=max_tokens, unk=unk, progress=_progress_wanted(quiet, as_json),
        chunked=chunked, threads=threads)
    result = res.to_dict()
    if res.case_folded and not as_json:         # (--json: the "case_folded" field says it)
        _note(f"{res.case_folded} word(s) of {data} folded to lower case (the vocabulary does not distinguish "
              "case)", quiet)
    if as_json:
        _echo_json(result)
        return
    click.echo(f"target        {res.target}")
    click.echo(f"tokens        {res.tokens:,} predicted" + (
        f" ({res.batch_size} streams{'' if result.get('native_streams', True) else ', run one at a time'}; "
        f"{result['dropped_tokens']} tail tokens not used)" if res.batch_size > 1 else "")
        + ((f"; {threads} threads" if res.batch_size > 1 else "; one thread (batch 1: --threads splits the streams "
                                                                "of --batch-size > 1)") if threads > 1 else ""))
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
        click.echo(f"MACs/token    {res.macs_per_token:,.1f}  (RNN layers; the embedding and decoder are not counted)")
    click.echo("activity      " + " ".join(f"{a:.4f}" for a in res.activity) + "  (share of units firing, per layer)")
    if result.get("projection_activation"):
        from ..model import projection_line
        click.echo(f"projection    {projection_line(result['projection_activation'])}")
    if res.tokens_per_second:
        where = ("this host running the chip simulator, not the chip's latency" if res.chip else
                 "whole token incl. decoder and log-softmax")
        click.echo(f"tokens/s      {res.tokens_per_second:,.0f} "
                   f"({1e6 / res.tokens_per_second:,.1f} µs/token, {where})")
    if verbose:
        click.echo(f"cross-entropy {res.cross_entropy:.6f} nats")
        # a unit that fires is an event; on a chip it is a spike (the chip lines' spikes/token is their sum plus
        # the decoder's): one name per surface
        click.echo(("spikes/token  " if res.chip else "events/token  ") + " ".join(f"{e:.2f}" for e in res.events_per_token)
                   + "  (units firing, per RNN layer)")
        click.echo(f"seconds       {res.seconds:.2f}")
        for b, st in enumerate(result.get("streams") or []):
            click.echo(f"stream {b:<6} tokens {st['tokens']}  perplexity {st['perplexity']:.4f}  "
                       f"{ops}/token {st['macs_per_token']:.1f}")
    if res.chip:
        from ..targets.chip.report import chip_summary
        click.echo(chip_summary(res.chip), nl=False)


def _ops_name(res) -> str:
    """What eval calls the multiply-accumulates of the RNN layers: ``synops`` on a chip artifact (as its
    report.txt, mapping.json and inspect do), ``MACs`` on every other target."""
    return "synops" if res.chip else "MACs"


@main.command("generate")
@click.argument("artifact", type=click.Path())   # a missing path: the loader's message, as ec.load gives
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
    from ..api import load

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
@click.argument("path", type=click.Path())
@click.option("--core", type=int, help="details of one core (chip targets)")
@click.option("--links", is_flag=True, help="the busiest mesh links (chip targets)")
@_projection_activation
@_output_options
@click.option("--trust-checkpoint", is_flag=True, help="allow loading pickled Python objects")
@click.option("--debug", is_flag=True, help="show tracebacks")
def inspect_cmd(path, core, links, projection_activation, as_json, verbose, quiet, trust_checkpoint, debug):
    """Describe a compiled artifact directory or a source checkpoint. --json prints the manifest (artifacts;
    with --core / --links that part of mapping.json) or the checkpoint's shapes; -v lists the artifact's files."""
    from ..api import inspect
    text, data = _guard(debug, quiet, inspect, path, core=core, links=links, trust=trust_checkpoint,
                        projection_activation=projection_activation)
    if as_json:
        _echo_json(data)
        return
    click.echo(text, nl=False)
    if verbose and data.get("files"):
        for name in data["files"]:
            click.echo(f"file          {name}")
