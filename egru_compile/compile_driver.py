"""`egru-compile MODEL --target T`: source → IR → pass pipeline → target artifact.

The driver resolves the target in the registry (`targets.registry`), validates that every target option
given on the command line belongs to it, builds the pass pipeline from ``--passes`` plus what the target's
options need (e.g. ``int8-weights`` → quantize-int8 before count-macs), and writes the artifact atomically
(`targets.output.atomic_output_dir`), sealed (`artifact.seal`).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from .errors import EgruError, UsageError, option


@dataclass(frozen=True)
class CompileRequest:
    model: str
    target: str | None = None
    out_dir: str | None = None
    vocab_file: str | None = None
    passes: str | None = None
    print_ir: bool = False
    emit_ir: str | None = None
    print_ir_after_all: bool = False
    calib_data: str | None = None
    calib_tokens: int = 2000
    unk: str | None = None
    report_path: str | None = None
    trust: bool = False
    force: bool = False
    verbose: bool = False
    progress: bool = False                                  # progress lines on stderr for steps over ~2 s
    target_values: dict = field(default_factory=dict)      # every target option's value (defaults included)
    given: frozenset = frozenset()                          # the target options the user set
    projection_activation: str | None = None   # EvNN decoder projection: "identity" / "relu" (None: see load_source)


def resolve_target(req: CompileRequest):
    """(TargetSpec, options dataclass) for the request, or (None, None) when no target is asked for."""
    from .targets import registry
    profile = req.target_values.get("profile")
    p = None
    if profile:                                   # a bad profile fails before any work is done
        from .targets.chip.profile import load_profile
        p = load_profile(profile)
    if req.target is None and p is not None:
        spec = registry.chip_target(p.name, p.description or f"chip profile {p.name}", profile)
    elif req.target is None:
        spec = None
    else:
        spec = registry.get(req.target)
        if p is not None and spec is not None and spec.family == "chip" and p.name != spec.name:
            raise UsageError(f"{option('target')} {spec.name} and {option('profile')} {profile} (a profile named "
                            f"{p.name}) disagree: give {option('profile')} alone (it names the chip) or a profile "
                            f"of {spec.name}")
    if spec is None:
        if req.given:
            raise UsageError(f"{option(sorted(req.given)[0])} needs {option('target')}")
        return None, None
    names = {f.name for f in fields(spec.options)}
    for key in sorted(req.given - names):
        takers = [s.name for s in registry.all_targets() if key in {f.name for f in fields(s.options)}]
        raise UsageError(f"{option(key)} applies to {option('target').rstrip('=')} {', '.join(takers)} only "
                        f"(target: {spec.name})")
    return spec, spec.make_options(req.target_values)


def _default_out(model: str, target: str, profile: str | None = None) -> str:
    """MODEL.TARGET, or MODEL.PROFILE with ``--profile PROFILE.toml`` (named after the file, as documented:
    a copy of loihi-like.toml saved as my-chip.toml compiles into ``model.my-chip/``)."""
    return f"{Path(model).stem}.{Path(profile).stem if profile else target}"


def _load_calibration(path, source, n_tokens, unk):
    """Token ids of the calibration text, folded to lower case where the vocabulary does not distinguish case
    (as `eval` and `generate` fold)."""
    if source.vocab is None:
        raise EgruError(f"{option('calib_data')} needs a vocabulary: the checkpoint has none, give "
                        f"{option('vocab', 'TRAIN.txt')}")
    return source.vocab.encode_file(path, max_tokens=n_tokens, unk=unk, fold_case=True)   # as eval and generate


def run_passes(graph, passes, calib, print_after_all: bool, verbose: bool, needs=frozenset()):
    """Run `--passes` (default pipeline when None) plus the passes establishing the target's `needs`
    (`passes.build_pipeline`: ``int8-weights`` puts quantize-int8 before count-macs, so the MAC report
    describes the weights the target holds)."""
    from .passes import PassManager, PassOptions, build_pipeline, graph_properties
    from .runtime.evaluate import graph_perplexity
    names = build_pipeline(passes or None, needs, have=graph_properties(graph))
    pm = PassManager(names, options=PassOptions(calib_tokens=calib, perplexity=graph_perplexity),
                     print_ir_after_all=print_after_all, verbose=verbose,
                     stream=sys.stdout if print_after_all else sys.stderr)
    return pm.run(graph)


def check_request_paths(req: CompileRequest) -> None:
    """Before anything is read or written: no output (``--emit-ir`` and its ``.npz``, ``--report``) is an
    input (the model and an IR model's ``.npz``, ``--vocab``, ``--calib-data``, ``--profile``) or another
    output, and none lies inside the output directory (which the compile replaces)."""
    from .frontend.ir_source import resource_path
    from .fsio import FileError, check_new_files, check_outputs
    inputs = [("model", req.model), ("model resource file", resource_path(req.model)),
              (option("vocab"), req.vocab_file),
              (option("calib_data"), req.calib_data), (option("profile"), req.target_values.get("profile"))]
    outputs = [("--emit-ir", req.emit_ir), ("--emit-ir resource file", resource_path(req.emit_ir) if req.emit_ir else None),
               ("--report", req.report_path)]
    check_outputs(outputs, inputs)
    check_new_files(outputs, req.force, option("force", True))
    if req.out_dir:
        out = Path(req.out_dir).resolve()
        for label, p in outputs:
            if p and Path(p).resolve().is_relative_to(out):
                raise FileError(f"{label} {p} lies inside the output directory {req.out_dir}, which the compile "
                                "replaces; write it elsewhere")


def run_compile(req: CompileRequest, echo: Callable[..., None]) -> dict | None:
    """Compile as `req` asks. Returns None when no target was asked for (--print-ir / --report only), else
    {"artifact": output directory, "target", "seconds", "summary" (the target's headline lines or None),
    "result" (what the target's compile returned)}; the caller prints them (the CLI's ``wrote ...`` line).
    `echo` carries --print-ir output (stdout) and --verbose / quantize notes (``err=True``)."""
    from .frontend import load_source
    from .progress import step
    from .targets.output import atomic_output_dir, atomic_write_text, check_output_dir

    check_request_paths(req)
    spec, opts = resolve_target(req)
    if spec is None and not (req.print_ir or req.print_ir_after_all or req.report_path or req.emit_ir):
        cli = option("target").startswith("--")
        raise UsageError(f"nothing to do: give {option('target')} (see `egru-compile targets`)"
                        + (" or --print-ir" if cli else ""))
    profile = req.target_values.get("profile")
    protect = (req.model, req.vocab_file, req.calib_data, profile)
    out_dir = None
    if spec is not None:
        out_dir = _default_out(req.model, spec.name, profile) if req.out_dir is None else req.out_dir
        check_output_dir(out_dir, req.force, protect=protect)
    t0 = time.perf_counter()
    with step(f"loading {req.model}", req.progress):
        source = load_source(req.model, trust=req.trust, vocab_file=req.vocab_file,
                             projection_activation=req.projection_activation)
        graph = source.to_graph()
    if req.calib_data and source.vocab is None:     # refused before the no-vocabulary warning: one line
        _load_calibration(req.calib_data, source, req.calib_tokens, req.unk)
    if spec is not None and source.vocab is None and source.kind == "evnn-state-dict":
        import warnings
        warnings.warn(f"{req.model} is an EvNN state_dict, which holds no vocabulary, and no {option('vocab')} "
                      f"TRAIN.txt was given: the artifact cannot read or write text (eval, generate) until given "
                      f"{option('vocab')} there; give it here to store it in the artifact")
    if req.verbose:
        echo(f"frontend: {source.kind} {req.model} -> {len(graph.nodes)} IR nodes "
             f"({(time.perf_counter() - t0) * 1e3:.0f} ms)", err=True)
    if req.print_ir:
        echo(str(graph), nl=False)
    if req.emit_ir:
        from .frontend.ir_source import write_ir
        write_ir(req.emit_ir, graph, source.vocab)
    calib = _load_calibration(req.calib_data, source, req.calib_tokens, req.unk) if req.calib_data else None
    with step("running the pass pipeline", req.progress):
        graph = run_passes(graph, req.passes, calib, req.print_ir_after_all, req.verbose,
                           needs=opts.needs() if opts is not None else frozenset())
    from .passes import MacReport, QuantizeReport
    q = graph.analyses.get(QuantizeReport)
    if q and q.ppl_before is not None:
        echo(f"quantize-int8: calibration perplexity {q.ppl_before:.3f} -> {q.ppl_after:.3f} "
             f"({100 * q.ppl_rel_change:+.3f} %)", err=True)
    macs = graph.analyses.get(MacReport)
    if req.report_path and macs is not None:
        report = macs.to_json()
        if q:
            report["quantize"] = q.to_json()
        atomic_write_text(req.report_path, json.dumps(report, indent=2, sort_keys=True) + "\n")
    elif req.report_path:
        raise EgruError("--report needs the count-macs pass in the pipeline, after the last transform")
    if spec is None:
        return None
    from .runtime.evaluate import graph_perplexity
    options = dict(asdict(opts), target=spec.name, passes=req.passes, calib_data=req.calib_data,
                   calib_tokens=req.calib_tokens, unk=req.unk, calib_token_ids=calib, verbose=req.verbose,
                   perplexity=graph_perplexity)
    what = {"chip": "placement" + (", calibration simulation" if calib is not None else "")}.get(
        spec.family, {"tvm": "TVM build of the kernels"}.get(spec.name, "writing the artifact"))
    with atomic_output_dir(out_dir, req.force, protect=protect) as tmp, \
            step(f"compiling for {spec.name} ({what})", req.progress):
        result = spec.compile_artifact(graph, source, tmp, options)
    summary = (result or {}).get("summary")
    from .model import projection_line
    from .passes.utils import graph_projection_activation
    act = graph_projection_activation(graph)
    if act is not None:                       # EvNN's decoder projection: say which activation was compiled
        summary = (summary + "\n" if summary else "") + f"projection: {projection_line(act)}"
    return {"artifact": str(out_dir), "target": spec.name, "seconds": time.perf_counter() - t0,
            "summary": summary, "result": result or {}, "projection_activation": act}


#: the line that separates the cases of a ``--split-input-file`` IR file (as mlir-opt's)
SPLIT_MARKER = "// -----"


def run_opt(path, passes: str | None = None, output=None, split_input_file: bool = False, force: bool = False) -> str:
    """``egru-compile opt FILE [--passes P] [-o OUT]``: the IR of `path` after `passes` (None: none, the file
    byte for byte) — printed text, or, with `output`, written there (+ its resource file) and "" returned.

    `split_input_file`: the file holds several IR texts separated by ``// -----`` lines (each one's first
    non-comment line the ``// egru-ir v1`` header; lines before it are comments, e.g. lit's RUN and CHECK
    lines): each is run on its own and the printed results are joined by the same separator (no `output`)."""
    from .frontend.ir_source import read_ir, write_ir
    from .ir.printer import print_graph
    from .passes import PassManager
    if split_input_file:
        if output is not None:
            raise EgruError("--split-input-file prints the results: it does not take -o/--output")
        return f"{SPLIT_MARKER}\n".join(_opt_text(chunk, f"{path} (case {k + 1})", passes)
                                        for k, chunk in enumerate(_split_cases(path)))
    if output is not None:
        from .fsio import check_new_files, check_outputs
        from .frontend.ir_source import resource_path
        outs = [("-o", output), ("-o resource file", resource_path(output))]
        check_outputs(outs, [("IR file", path), ("resource file", resource_path(path))])
        check_new_files(outs, force)
    parsed, _ = read_ir(path)
    graph = parsed.graph
    if passes:
        graph = PassManager(passes).run(graph)
    if output is not None:
        write_ir(output, graph, parsed.vocab)
        return ""
    return print_graph(graph, parsed.vocab)


def _split_cases(path) -> list[str]:
    from .frontend.ir_source import IRSourceError, read_text
    from .ir.printer import HEADER
    cases, cur = [], []
    for line in read_text(path).split("\n") + [SPLIT_MARKER]:
        if line.rstrip() != SPLIT_MARKER:
            cur.append(line)
            continue
        body = [ln for ln in cur if ln.strip()]
        if body:
            start = next((j for j, ln in enumerate(cur) if ln.rstrip() == HEADER), None)
            if start is None or any(not ln.lstrip().startswith("//") for ln in cur[:start] if ln.strip()):
                raise IRSourceError(f"{path}: case {len(cases) + 1} of the split file does not start with "
                                    f"'{HEADER}'")
            cases.append("\n".join(cur[start:]))
        cur = []
    if not cases:
        raise IRSourceError(f"{path}: no IR text")
    return cases


def _opt_text(text: str, name: str, passes: str | None) -> str:
    from .ir.parser import parse_ir
    from .ir.printer import print_graph
    from .passes import PassManager
    parsed = parse_ir(text, None, name)
    graph = PassManager(passes).run(parsed.graph) if passes else parsed.graph
    return print_graph(graph, parsed.vocab)
