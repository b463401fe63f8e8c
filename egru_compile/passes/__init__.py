"""Compiler passes over the graph IR, run by name through a `PassManager` (TVM / MLIR style).

Usage::

    from egru_compile.passes import PassManager, PassOptions, MacReport, build_pipeline
    names = build_pipeline(None, needs={"int8-weights"})   # default pipeline + quantize-int8 before count-macs
    pm = PassManager(                       # None -> DEFAULT_PIPELINE; or ["const-fold", ...] / "a,b,c"
        pass_names=names,
        options=PassOptions(calib_tokens=np.asarray(ids, np.int64),     # activity for dynamic MACs
                            perplexity=graph_perplexity),               # quantize-int8's PPL change
        print_ir_after_all=False,           # "// ----- IR after <pass> -----" + IR to `stream`
        verbose=False,                      # one line per pass: time, node count, statistics
        stream=sys.stderr)
    compiled = pm.run(graph)                # checks the order, verifies after every pass; `graph` unchanged
    pm.timings                              # [(pass name, seconds), ...]
    compiled.analyses.get(MacReport)        # typed analysis result (count-macs); .to_json() = --report
    compiled.properties                     # {"consts-folded", "masks-folded", ..., "macs"}

CLI mapping: ``--passes a,b,c`` -> ``pass_names="a,b,c"`` (`parse_pipeline`; ``default`` expands to the
default pipeline; the target's needs are added by `build_pipeline`), ``--print-ir-after-all`` ->
``print_ir_after_all=True``, ``-v`` -> ``verbose=True``, ``--calib-data/--calib-tokens`` ->
``PassOptions(calib_tokens=...)``, ``--report macs.json`` -> ``compiled.analyses.get(MacReport).to_json()``
(+ ``"quantize"``: the `QuantizeReport`). Unknown pass names raise ``PassError("unknown pass 'x' (known:
...)")`` from the constructor; a pass whose required property does not hold raises PassError naming the
pass, the property and the pass that establishes it, before any pass runs.

Passes (`known_passes()`; each module's docstring shows the IR before/after):

============== ===================== ==================== ====================================================
pass           requires              establishes          does
============== ===================== ==================== ====================================================
const-fold                           consts-folded        fold all-constant ops (mask * orig, clamp(thr), ...)
fold-masks     consts-folded         masks-folded         ``x @ W`` (constant W) -> ``sparse_matvec(x, M)``
fuse-gates     masks-folded          gates-fused          matvecs sharing an input -> one matrix + ``split``
fuse-cell                            cell-fused           gate/threshold/reset subgraph -> ``egru_cell``
event-gating   masks-folded          event-gated          matvec of an event tensor -> ``event_matvec`` (CSC)
dce                                                       remove unused ops and constants
count-macs     (analysis)            macs                 MacReport (+ UnitActivity) in ``graph.analyses``
quantize-int8  masks-folded          int8-weights         per-row int8 sparse matrices; QuantizeReport
============== ===================== ==================== ====================================================

Every transform invalidates the analyses (``macs``): the manager drops their results from
``graph.analyses`` (QuantizeReport, a record of the pass, stays). ``DEFAULT_PIPELINE`` = const-fold,
fold-masks, fuse-gates, fuse-cell, event-gating, dce, count-macs. A pass is ``fn(graph, options) -> dict |
None`` registered with ``@register_pass("name", requires=..., establishes=...)`` (its properties declared
with `register_property` in the same module); it rewrites the graph in place (or, for an analysis, stores
a typed `ir.Analysis` in ``graph.analyses``) and returns a few statistics for verbose mode.
"""
from .manager import (DEFAULT_PIPELINE, PASS_REGISTRY, PROPERTIES, Pass, PassError, PassManager, PassOptions,
                      build_pipeline, check_pipeline, get_pass, graph_properties, known_passes, parse_pipeline,
                      register_pass, register_property, run_passes)
from . import const_fold, fold_masks, fuse_gates, fuse_cell, event_gating, dce, count_macs, quantize  # noqa: E402,F401
from . import select_gating, fold_embedding, weight_precision  # noqa: E402,F401  (target passes: onnx)
from .count_macs import (LayerMacs, MacReport, MacsPerToken, MatrixMacs, ProjectionMacs, UnitActivity,
                         collect_matrices, count_macs_for_tokens, macs_report, measure_macs)
from .quantize import QuantizeReport, quantize_matrix, quantize_report

__all__ = ["DEFAULT_PIPELINE", "PASS_REGISTRY", "PROPERTIES", "Pass", "PassError", "PassManager", "PassOptions",
           "build_pipeline", "check_pipeline", "get_pass", "graph_properties", "known_passes", "parse_pipeline",
           "register_pass", "register_property", "run_passes", "LayerMacs", "MacReport", "MacsPerToken",
           "MatrixMacs", "ProjectionMacs", "UnitActivity", "collect_matrices", "count_macs_for_tokens", "macs_report",
           "measure_macs", "QuantizeReport", "quantize_matrix", "quantize_report"]
