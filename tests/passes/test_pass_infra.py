"""Pass infrastructure: declared requires/establishes, order checking before anything runs, the pipeline
builder that adds what a target needs, typed analyses on the graph, and no passes -> runtime import."""
from __future__ import annotations

import ast
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint, trace_model
from egru_compile.ir import AnalysisError, SparseMatrix
from egru_compile.passes import (DEFAULT_PIPELINE, PASS_REGISTRY, MacReport, PassError, PassManager, PassOptions,
                                 QuantizeReport, UnitActivity, build_pipeline, check_pipeline, graph_properties)
from egru_compile.passes.testing import make_pruned_model

PKG = Path(__file__).resolve().parents[2] / "egru_compile"


@pytest.fixture(scope="module")
def traced():
    model, masks = make_pruned_model(20, 6, [8, 6], density=0.5, seed=0)
    return model, masks, trace_model(model)


def _sparse_consts(g):
    return [n for n in g.const_nodes() if isinstance(n.attrs["data"], SparseMatrix)]


# ------------------------------------------------------------------------------------------------ order
def test_wrong_order_fails_before_running_and_names_the_pass(traced):
    out = io.StringIO()
    pm = PassManager(["const-fold", "quantize-int8", "fold-masks"], verbose=True, print_ir_after_all=True,
                     stream=out)
    with pytest.raises(PassError) as e:
        pm.run(traced[2])
    msg = str(e.value)
    assert msg == ("pass 'quantize-int8' requires 'masks-folded', which does not hold after const-fold: "
                   "run 'fold-masks' before it")
    assert out.getvalue() == "" and pm.timings == [], "no pass may run when the order is wrong"


def test_requirement_missing_from_the_input(traced):
    with pytest.raises(PassError, match=r"^pass 'fold-masks' requires 'consts-folded', which the input IR does "
                                        r"not have: run 'const-fold' before it$"):
        PassManager(["fold-masks"]).run(traced[2])
    with pytest.raises(PassError, match="pass 'event-gating' requires 'masks-folded'"):
        check_pipeline(["const-fold", "event-gating"])


def test_every_requirement_has_a_producer_and_default_pipeline_is_ordered():
    for p in PASS_REGISTRY.values():
        for prop in p.requires:
            assert any(prop in q.establishes for q in PASS_REGISTRY.values()), (p.name, prop)
    end = check_pipeline(DEFAULT_PIPELINE)
    assert {"consts-folded", "masks-folded", "gates-fused", "cell-fused", "event-gated", "macs"} <= end
    assert "int8-weights" not in end


def test_properties_follow_the_graph_and_are_detected_on_foreign_ir(traced):
    pre = PassManager(["const-fold", "fold-masks"]).run(traced[2])
    assert pre.properties == {"consts-folded", "masks-folded"}
    PassManager(["quantize-int8"]).run(pre)             # recorded on the graph the manager returned
    foreign = pre.clone()
    foreign.properties = set()                          # as read from a file: nothing recorded ...
    assert {"consts-folded", "masks-folded"} <= graph_properties(foreign)   # ... but the IR shows it
    q = PassManager(["quantize-int8"]).run(foreign)
    assert all(n.attrs["data"].data.dtype == np.int8 for n in _sparse_consts(q))
    assert "int8-weights" in graph_properties(q) and "int8-weights" not in graph_properties(pre)
    assert graph_properties(traced[2]) == set()          # the raw trace: masks not applied, nothing folded


# ------------------------------------------------------------------------------------------------ builder
def test_builder_inserts_quantize_before_count_macs_for_chip_needs():
    names = build_pipeline(None, {"int8-weights"})
    assert names == DEFAULT_PIPELINE[:-1] + ["quantize-int8", "count-macs"]
    assert build_pipeline("default", {"int8-weights"}) == names
    # already there (even after count-macs, where the user put it): nothing inserted, order kept
    for spec in ("default,quantize-int8", ["const-fold", "fold-masks", "quantize-int8", "count-macs"]):
        assert build_pipeline(spec, {"int8-weights"}) == build_pipeline(spec)
    assert build_pipeline(None, set()) == DEFAULT_PIPELINE
    assert build_pipeline(None, {"int8-weights"}, have={"int8-weights"}) == DEFAULT_PIPELINE
    # what quantize-int8 requires is inserted first
    assert build_pipeline("const-fold", {"int8-weights"}) == ["const-fold", "fold-masks", "quantize-int8"]
    assert build_pipeline("fuse-cell", {"int8-weights"}) == ["fuse-cell", "const-fold", "fold-masks",
                                                              "quantize-int8"]
    with pytest.raises(PassError, match="pass 'quantize-int8' requires 'masks-folded'"):
        build_pipeline("quantize-int8,const-fold,fold-masks", {"int8-weights"})
    with pytest.raises(PassError, match="no registered pass establishes 'no-such-property'"):
        build_pipeline(None, {"no-such-property"})


def test_built_pipeline_report_describes_int8_weights(traced):
    toks = np.random.default_rng(0).integers(0, 20, 40)
    g = PassManager(build_pipeline(None, {"int8-weights"}), PassOptions(calib_tokens=toks)).run(traced[2])
    assert {"int8-weights", "macs"} <= g.properties
    rep = g.analyses.get(MacReport)
    layer_mats = [n for n in _sparse_consts(g) if n.attrs.get("layer") is not None]
    assert all(n.attrs["data"].data.dtype == np.int8 for n in layer_mats)
    # recount from the int8 matrices the graph holds (entries rounding to 0 were dropped)
    assert rep.macs_per_token.static == sum(n.attrs["data"].nnz for n in layer_mats)
    assert g.analyses.get(UnitActivity).measured_on(toks)
    q = g.analyses.get(QuantizeReport)
    assert q.matrices == len(_sparse_consts(g)) and q.dropped == sum(n.attrs["dropped"] for n in _sparse_consts(g))
    # no perplexity function given: nothing measured, and the JSON has the unmeasured keys only
    assert q.to_json() == {"method": "int8 symmetric per output row", "matrices": q.matrices,
                           "dropped": q.dropped, "ppl_before": None, "ppl_after": None}


# ------------------------------------------------------------------------------------------------ analyses
def test_transforms_invalidate_analyses_but_not_records(traced):
    toks = np.random.default_rng(1).integers(0, 20, 30)
    g = PassManager("default,quantize-int8", PassOptions(calib_tokens=toks)).run(traced[2])
    assert g.analyses.get(MacReport) is None and g.analyses.get(UnitActivity) is None   # stale: dropped
    assert "macs" not in g.properties and g.analyses.get(QuantizeReport) is not None
    with pytest.raises(AnalysisError, match="no MacReport on the graph: .*'macs'"):
        g.analyses.require(MacReport)
    g2 = PassManager(["count-macs"]).run(g)              # recomputed on the int8 graph
    assert g2.analyses.require(MacReport).macs_per_token.static == sum(
        n.attrs["data"].nnz for n in _sparse_consts(g2) if n.attrs.get("layer") is not None)
    assert g2.analyses.get(UnitActivity) is None         # no calibration tokens this time


def test_mac_report_json_keys_in_documented_order(traced):
    rep = PassManager().run(traced[2]).analyses.get(MacReport).to_json()
    assert list(rep) == ["macs_per_token", "layers", "activity", "density", "matrices",
                         "decoder_macs_per_token", "calib_tokens"]
    assert list(rep["macs_per_token"]) == ["dense", "static", "dynamic"]
    assert list(rep["layers"][0]) == ["layer", "input", "recurrent", "input_static", "recurrent_static",
                                      "activity", "input_density", "recurrent_density", "input_dense",
                                      "recurrent_dense", "hidden_size"]
    assert list(rep["matrices"][0]) == ["label", "layer", "role", "shape", "op", "nnz", "density",
                                        "event_input", "static", "dynamic"]


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_wrong_order_is_a_one_line_error(tmp_path, traced):
    save_checkpoint(tmp_path / "m.pt", traced[0], [f"w{i}" for i in range(20)])
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--passes",
                                    "const-fold,event-gating,fold-masks", "--print-ir-after-all"])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == [
        "error: pass 'event-gating' requires 'masks-folded', which does not hold after const-fold: "
        "run 'fold-masks' before it"]


# ------------------------------------------------------------------------------------------------ layering
def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_passes_and_ir_never_import_the_runtime():
    for sub in ("passes", "ir"):
        for f in sorted((PKG / sub).glob("*.py")):
            bad = [m for m in _imports(f) if "runtime" in m]
            assert not bad, f"{f.relative_to(PKG)} imports {bad}"
    code = ("import sys, numpy as np\n"
            "import egru_compile.passes as P\n"
            "from egru_compile.passes.testing import make_pruned_model\n"
            "from egru_compile.frontend import trace_model\n"
            "g = trace_model(make_pruned_model(20, 6, [8, 6], seed=0)[0])\n"
            "P.PassManager('default,quantize-int8', P.PassOptions(calib_tokens=np.arange(12) % 20)).run(g)\n"
            "print(sorted(m for m in sys.modules if m.startswith('egru_compile.runtime')))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(PKG.parent))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
