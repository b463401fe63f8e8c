"""The IR text form: print -> parse -> print is the identity at every pipeline stage, the parsed graph computes
exactly what the original does, malformed text and resource files give one-line FILE:LINE:COL errors, and an
IR file is a model for every command (`--emit-ir`, compile, eval, inspect, `opt`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from egru_compile.cli import main
from egru_compile.errors import EgruError
from egru_compile.frontend import load_source, save_checkpoint, trace_model
from egru_compile.compile_driver import run_opt
from egru_compile.frontend.ir_source import read_ir, resource_path, write_ir
from egru_compile.ir import SparseMatrix
from egru_compile.ir.parser import IRParseError, parse_ir
from egru_compile.ir.printer import print_graph, resource_arrays
from egru_compile.passes import DEFAULT_PIPELINE, PassManager
from egru_compile.passes.testing import SeparateGateEGRU, make_pruned_model, max_abs_diff

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ptb-egru-small" / "model.pt"
PTB_TEST = ROOT / "data" / "ptb" / "ptb.test.txt"        # shipped with the repository
WORDS = ["<eos>"] + [f"w{i}" for i in range(1, 20)]


@pytest.fixture(scope="module")
def stages():
    """(label, graph) after every pass of the default pipeline (+ quantize-int8) for two model layouts."""
    out = []
    evnn, _ = make_pruned_model(20, 6, [8, 6], density=0.5, seed=0)
    sep = SeparateGateEGRU(20, 6, [8, 6], seed=1)
    sep.prune_random(0.5, seed=1)
    for label, model in (("evnn", evnn), ("separate", sep)):
        g = trace_model(model)
        out.append((f"{label}:traced", g))
        for p in DEFAULT_PIPELINE + ["quantize-int8"]:
            g = PassManager([p]).run(g)
            out.append((f"{label}:{p}", g))
    return out


def _same_constants(a, b):
    for na, nb in zip(a.const_nodes(), b.const_nodes()):
        da, db = na.attrs["data"], nb.attrs["data"]
        assert type(da) is type(db) and na.output.name == nb.output.name
        if isinstance(da, SparseMatrix):
            assert (da.shape, da.fmt) == (db.shape, db.fmt)
            for k in ("indptr", "indices", "data", "scale"):
                x, y = getattr(da, k), getattr(db, k)
                assert (x is None) == (y is None)
                if x is not None:
                    assert np.asarray(x).dtype == np.asarray(y).dtype
                    np.testing.assert_array_equal(x, y)
        else:
            assert np.asarray(da).dtype == np.asarray(db).dtype
            np.testing.assert_array_equal(da, db)


def test_round_trip_after_every_pass(stages):
    for label, g in stages:
        text = print_graph(g, WORDS)
        parsed = parse_ir(text, resource_arrays(g, WORDS), label)
        assert print_graph(parsed.graph, parsed.vocab) == text, label
        assert parsed.vocab == WORDS
        assert [n.op for n in parsed.graph.nodes] == [n.op for n in g.nodes]
        _same_constants(g, parsed.graph)
        # the reference interpreter gives bit-identical outputs on the parsed graph
        assert max_abs_diff(g, parsed.graph, steps=20, seed=7) == 0.0, label


def test_text_holds_everything(stages):
    g = dict(stages)["evnn:quantize-int8"]
    text = str(g)
    assert text.startswith("// egru-ir v1\n#meta passes = [")
    assert "#meta quantize_report = {" in text and "{tokens}" in text and "{logits}" in text
    assert "#meta mac_report = {" in str(dict(stages)["evnn:count-macs"])     # (quantize-int8 invalidates it)
    assert "{state_in l1 y}" in text and "{state_out l0 c}" in text and "loc(rnns.0)" in text
    assert 'quantized="int8-per-row"' in text and "sparse_resource<w0_input, csr, nnz=64, scale>" in text
    arrays = resource_arrays(g)
    assert arrays["w0_input.data"].dtype == np.int8 and arrays["w0_input.scale"].dtype == np.float32


def test_file_round_trip_and_opt(tmp_path, stages):
    g = dict(stages)["evnn:traced"]
    path = tmp_path / "m.egir"
    text = write_ir(path, g, WORDS)
    assert path.read_text() == text and resource_path(path).is_file()
    parsed, sha = read_ir(path)
    assert print_graph(parsed.graph, parsed.vocab) == text and len(sha) == 64
    # opt without passes reproduces the file byte for byte (function and CLI)
    assert run_opt(path) == text
    res = CliRunner().invoke(main, ["opt", str(path)])
    assert res.exit_code == 0 and res.output == text
    # opt with passes: the text of running the same passes on the graph
    want = print_graph(PassManager("const-fold,fold-masks").run(g), WORDS)
    assert run_opt(path, "const-fold,fold-masks") == want
    res = CliRunner().invoke(main, ["opt", str(path), "--passes", "default", "-o", str(tmp_path / "o.egir")])
    assert res.exit_code == 0, res.output
    out, _ = read_ir(tmp_path / "o.egir")
    assert max_abs_diff(g, out.graph, steps=20) <= 1e-5 and "egru_cell" in run_opt(tmp_path / "o.egir")


# ------------------------------------------------------------------------------------------------ errors
GOOD = """// egru-ir v1
graph @step(%tokens: tensor<1xi64> {tokens}, %c0: tensor<1x2xf32> {state_in l0 c}) {
  %t = const @table dense<[0.5, 1.0, -2.0, 3.0, 0.25, 4.0]> : tensor<3x2xf32>
  %e = embedding(%t, %tokens) : tensor<1x2xf32>
  %s = add(%e, %c0) : tensor<1x2xf32>  loc(rnns.0)
  return %e: tensor<1x2xf32> {logits}, %s: tensor<1x2xf32> {state_out l0 c}
}
"""


def test_good_text_parses_and_reprints():
    p = parse_ir(GOOD)
    assert str(p.graph) == GOOD
    assert p.graph.inputs[1].meta == {"role": "state_in", "layer": 0, "kind": "c"}


@pytest.mark.parametrize("old,new,line,anchor,msg", [
    ("// egru-ir v1", "// something else", 1, None, "first line must be"),
    ("%e = embedding(%t, %tokens) : tensor<1x2xf32>", "%e = embedding(%t, %nope) : tensor<1x2xf32>", 4, "%nope",
     "use of undefined value %nope"),
    ("%e = embedding", "%e = frobnicate", 4, "frobnicate", "unknown op 'frobnicate'"),
    ("add(%e, %c0) : tensor<1x2xf32>", "add(%e, %c0) : tensor<1x3xf32>", 5, "tensor",
     "add gives tensor<1x2xf32>, declared tensor<1x3xf32>"),
    ("%s = add", "%e = add", 5, "%e", "redefinition of %e"),
    ("dense<[0.5, 1.0, -2.0, 3.0, 0.25, 4.0]>", "dense<[0.5, 1.0]>", 3, "[",
     "has 2 values, type tensor<3x2xf32> needs 6"),
    ("dense<[0.5,", "dense<[nan,", 3, "[", "contains NaN or Inf"),
    ("4.0]>", "none]>", 3, "[", "expected a flat list of numbers for float32, found none"),
    ("[0.5, 1.0, -2.0, 3.0, 0.25, 4.0]", "[[0.5, 1.0], -2.0, 3.0, 0.25, 4.0]", 3, "[[",
     "expected a flat list of numbers for float32, found [0.5, 1.0]"),
    ("tensor<3x2xf32>\n", "tensor<3x2xq7>\n", 3, "tensor", "bad tensor type tensor<3x2xq7>"),
    ("{state_in l0 c}", "{state_in l0 z}", 2, "z}", "state kind must be c or y"),
    ("%c0) : tensor", "%c0 : tensor", 5, ": tensor", "expected ',' or ')'"),
    ("  return", "  %x = tanh(%e) : tensor<1x2xf32>\n  retrun", 7, "retrun", "expected a %value or return"),
    ("loc(rnns.0)", "loc(rnns.0) $", 5, "$", "unexpected character '$'"),
    ("add(%e, %c0)", "add(%e, %c0) {axis=}", 5, "}", "expected a value"),
    ("{state_out l0 c}", "{state_out l0 c", 6, None, "expected '}', found end of line"),
    ("}\n", "", 7, None, "missing '}'"),
    ("{state_out l0 c}", "", None, None, "state input"),
])
def test_malformed_text(old, new, line, anchor, msg):
    """One-line errors at FILE:LINE:COL (COL of `anchor` in that line, 1 without; end of line for None on a
    cut line); a graph that parses but does not verify names no line."""
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(IRParseError) as e:
        parse_ir(text)
    s = str(e.value)
    assert "\n" not in s and isinstance(e.value, EgruError) and msg in s, s
    if line is None:
        assert s.startswith("<text>: "), s
        return
    lines = text.split("\n")
    if anchor is not None:
        col = lines[line - 1].index(anchor) + 1
    elif "end of line" in msg:
        col = len(lines[line - 1]) + 1
    else:
        col = 1
    assert s.startswith(f"<text>:{line}:{col}: "), s


def test_any_single_character_deletion_is_a_one_line_error_or_parses(stages):
    """No mangled text escapes as a traceback: delete each character of valid IR in turn."""
    for text in (GOOD, str(dict(stages)["evnn:event-gating"])[:3000].rsplit("\n", 1)[0] + "\n}\n"):
        for i in range(len(text)):
            bad = text[:i] + text[i + 1:]
            try:
                parse_ir(bad, {})
            except EgruError as e:
                assert "\n" not in str(e)


def _sparse_ir(tmp_path, g_stage):
    path = tmp_path / "m.egir"
    write_ir(path, g_stage)
    return path, dict(np.load(resource_path(path)))


def test_resource_file_validated(tmp_path, stages):
    g = dict(stages)["evnn:dce"]
    path, arrays = _sparse_ir(tmp_path, g)
    cases = {
        "shape": ("embeddings_weight", lambda a: a[:-1], "shape (19, 6) does not match the declared (20, 6)"),
        "dtype": ("embeddings_weight", lambda a: a.astype(np.float64), "dtype float64 does not match"),
        "nan": ("embeddings_weight", lambda a: np.where(a == a.flat[0], np.nan, a), "contains NaN or Inf"),
        "indices": ("w0_recurrent.indices", lambda a: a + 100, "sparse indices out of range"),
        "indptr": ("w0_recurrent.indptr", lambda a: a[::-1], "indptr, indices, data disagree"),
        "missing": ("w0_recurrent.data", None, "resource 'w0_recurrent.data' is missing from m.egir.npz"),
    }
    for name, (key, change, msg) in cases.items():
        bad = dict(arrays)
        if change is None:
            del bad[key]
        else:
            bad[key] = change(bad[key])
        np.savez(resource_path(path), **bad)
        with pytest.raises(EgruError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            read_ir(path)
    # object arrays would need pickle: refused (np.load(allow_pickle=False))
    bad = dict(arrays)
    bad["embeddings_weight"] = np.array([object()] * 2, dtype=object)
    np.savez(resource_path(path), **bad)
    with pytest.raises(EgruError, match="embeddings_weight.*cannot be read"):
        read_ir(path)
    resource_path(path).unlink()
    with pytest.raises(EgruError, match="there is no resource file \\(m.egir.npz\\)"):
        read_ir(path)
    resource_path(path).write_bytes(b"not a zip")
    with pytest.raises(EgruError, match="not a readable .npz"):
        read_ir(path)


# ------------------------------------------------------------------------------------------------ as a model
def test_ir_file_is_a_model_for_every_command(tmp_path):
    model, _ = make_pruned_model(20, 6, [8, 6], density=0.5, seed=3)
    save_checkpoint(tmp_path / "m.pt", model, WORDS)
    r = CliRunner()
    res = r.invoke(main, [str(tmp_path / "m.pt"), "--emit-ir", str(tmp_path / "m.egir")])
    assert res.exit_code == 0, res.output
    src = load_source(tmp_path / "m.egir")
    assert src.kind == "egru-ir" and src.vocab.words == WORDS and src.hidden_sizes == [8, 6]
    assert print_graph(src.to_graph()) == print_graph(trace_model(model))
    res = r.invoke(main, ["inspect", str(tmp_path / "m.egir")])
    assert res.exit_code == 0 and "egru-ir" in res.output and "hidden_sizes  [8, 6]" in res.output
    data = tmp_path / "d.txt"
    data.write_text(" ".join(WORDS[1 + i % 19] for i in range(0, 120, 7)) + "\n")
    evals = {}
    for name, path in (("ir", tmp_path / "m.egir"), ("ckpt", tmp_path / "m.pt")):
        res = r.invoke(main, ["eval", str(path), "--data", str(data), "--json", "--quiet"])
        assert res.exit_code == 0, res.output
        evals[name] = json.loads(res.output)
    assert evals["ir"]["target"] == "ir" and evals["ir"]["macs_per_token"] == evals["ckpt"]["macs_per_token"]
    assert evals["ir"]["perplexity"] == pytest.approx(evals["ckpt"]["perplexity"], rel=1e-5)
    res = r.invoke(main, [str(tmp_path / "m.egir"), "--target", "loihi-like", "-o", str(tmp_path / "chip")])
    assert res.exit_code == 0, res.output
    # a missing resource file is a one-line error, not a traceback
    resource_path(tmp_path / "m.egir").unlink()
    res = r.invoke(main, ["eval", str(tmp_path / "m.egir"), "--data", str(data)])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "no resource file" in res.output


def test_onnx_from_emitted_ir_matches_checkpoint_exactly(tmp_path):
    """The acceptance check of issue 13: ONNX compiled from an emitted IR file has exactly the checkpoint's
    perplexity and MACs/token (the bundled trained example, the first 300 PTB test tokens)."""
    from egru_compile.api import evaluate_path
    r = CliRunner()
    ir = tmp_path / "model.egir"
    res = r.invoke(main, [str(EXAMPLE), "--emit-ir", str(ir), "--target", "onnx", "-o", str(tmp_path / "ckpt")])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, [str(ir), "--target", "onnx", "-o", str(tmp_path / "ir")])
    assert res.exit_code == 0, res.output
    a = evaluate_path(tmp_path / "ckpt", PTB_TEST, max_tokens=300, quiet=True)
    b = evaluate_path(tmp_path / "ir", PTB_TEST, max_tokens=300, quiet=True)
    assert a["tokens"] == b["tokens"] == 299
    assert a["perplexity"] == b["perplexity"] and a["macs_per_token"] == b["macs_per_token"]
    assert a["activity"] == b["activity"]
    ma = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    mb = json.loads((tmp_path / "ir" / "manifest.json").read_text())
    assert mb["source"]["kind"] == "egru-ir"
    assert (tmp_path / "ckpt" / "vocab.txt").read_text() == (tmp_path / "ir" / "vocab.txt").read_text()
    assert ma.get("macs") == mb.get("macs")
