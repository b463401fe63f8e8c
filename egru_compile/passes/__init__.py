"""Compiler passes over the graph IR, run by name through a `PassManager` (TVM / MLIR style).

Usage::

    from egru_compile.passes import PassManager, PassOptions, macs_report
    pm = PassManager(                       # None -> DEFAULT_PIPELINE; or ["const-fold", ...] / "a,b,c"
        pass_names=None,
        options=PassOptions(calib_tokens=np.asarray(ids, np.int64)),   # activity for dynamic MACs
        print_ir_after_all=False,           # "// ----- IR after <pass> -----" + IR to `stream`
        verbose=False,                      # one line per pass: time, node count, statistics
        stream=sys.stderr)
    compiled = pm.run(graph)                # verifies after every pass; `graph` itself is not modified
    pm.timings                              # [(pass name, seconds), ...]
    json.dump(macs_report(compiled), f)     # = compiled.meta["macs"] (set by count-macs)

CLI mapping: ``--passes a,b,c`` -> ``pass_names="a,b,c"`` (`parse_pipeline`; ``default`` expands to the
default pipeline), ``--print-ir-after-all`` -> ``print_ir_after_all=True``, ``-v`` -> ``verbose=True``,
``--calib-data/--calib-tokens`` -> ``PassOptions(calib_tokens=...)``, ``--report macs.json`` ->
``macs_report(compiled)``; with quantize-int8 the PPL change is ``compiled.meta["quantize"]``.
Unknown pass names raise ``PassError("unknown pass 'x' (known: ...)")`` from the constructor.

Passes (`known_passes()`; each module's docstring shows the IR before/after):

============== =========================================================================================
const-fold     fold all-constant ops (cast of a prune mask, mask * orig, clamp(thr), transpose, concat)
fold-masks     ``x @ W`` (constant W) -> ``sparse_matvec(x, M[, bias])``; records label/role/layer/nnz/density
fuse-gates     matvecs sharing an input (per-gate matrices) -> one matrix + ``split``; no-op on EvNN layout
fuse-cell      gate/threshold/reset elementwise subgraph -> ``egru_cell(gx, gh, c, thr)``
event-gating   matvec of an event tensor -> shared ``compress_events`` + ``event_matvec`` (CSC)
dce            remove unused ops and constants
count-macs     analysis: dense/static/dynamic MACs per token -> ``graph.meta["macs"]`` (last in the default)
quantize-int8  per-output-row symmetric int8 sparse matrices; PPL before/after -> ``graph.meta["quantize"]``
============== =========================================================================================

``DEFAULT_PIPELINE`` = const-fold, fold-masks, fuse-gates, fuse-cell, event-gating, dce, count-macs.
A pass is ``fn(graph, options) -> dict | None`` registered with ``@register_pass("name")``; it rewrites the
graph in place (or, for an analysis, writes ``graph.meta``) and returns a few statistics for verbose mode.
"""
from .manager import (DEFAULT_PIPELINE, PASS_REGISTRY, Pass, PassError, PassManager, PassOptions, get_pass,
                      known_passes, parse_pipeline, register_pass, run_passes)
from . import const_fold, fold_masks, fuse_gates, fuse_cell, event_gating, dce, count_macs, quantize  # noqa: E402,F401
from . import select_gating  # noqa: E402,F401
from . import fold_embedding  # noqa: E402,F401
from . import weight_precision  # noqa: E402,F401
from .count_macs import collect_matrices, count_macs_for_tokens, macs_report
from .quantize import perplexity, quantize_matrix, quantize_report

__all__ = ["DEFAULT_PIPELINE", "PASS_REGISTRY", "Pass", "PassError", "PassManager", "PassOptions", "get_pass",
           "known_passes", "parse_pipeline", "register_pass", "run_passes", "collect_matrices",
           "count_macs_for_tokens", "macs_report", "perplexity", "quantize_matrix", "quantize_report"]
