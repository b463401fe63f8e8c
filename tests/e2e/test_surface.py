"""The user's surface (issue 24): one shape convention in every view, one name per quantity in eval.

References are independent of the code under test: shapes are recounted from the checkpoint's state_dict with
torch (EvNN stores kernels [in, out]; every view prints ``OUTxIN``), and a chip artifact's synops/token are
compared with the MACs/token of the PyTorch source on the same text (1 synop = 1 MAC of count-macs).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from egru_compile.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"
SHAPE = re.compile(r"(?<![\w.])(\d+)x(\d+)(?![\w.])")


def _run(*args) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def _reference_shapes() -> dict[str, tuple[tuple[int, int], float]]:
    """name -> ((out, in), density) of every RNN weight, from the raw state_dict (masks applied)."""
    ck = torch.load(EXAMPLE, weights_only=True, map_location="cpu")
    sd = ck["state_dict"]
    out = {}
    for key in sd:
        if key.endswith("kernel_orig"):
            name = key[: -len("_orig")]
            w = sd[key] * sd[name + "_mask"]
            n_in, n_out = w.shape                     # EvNN's kernel W [in, 3h], used as x @ W
            out[name] = ((int(n_out), int(n_in)), float((w != 0).sum()) / w.numel())
    assert len(out) == 4
    return out


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("surface")
    _run(EXAMPLE, "--target", "onnx", "-o", d / "onnx", "--quiet")
    _run(EXAMPLE, "--target", "loihi-like", "--float-weights", "-o", d / "chip", "--quiet")
    # a text of vocabulary words (any order: the figures compared are counts of the same run)
    words = (d / "onnx" / "vocab.txt").read_text().split()
    rng = np.random.default_rng(0)
    (d / "text.txt").write_text(" ".join(words[i] for i in rng.integers(0, min(len(words), 2000), 300)) + "\n")
    return d


def test_checkpoint_inspect_shapes_are_out_x_in():
    ref = _reference_shapes()
    text = _run("inspect", EXAMPLE)
    assert "shapes        out x in" in text
    assert not re.search(r"\(\d+, \d+\)", text)       # no tuple-style shape left
    seen = {}
    for line in text.splitlines():
        name = line.split()[0]
        if name in ref:
            (shape,) = SHAPE.findall(line)
            seen[name] = (int(shape[0]), int(shape[1]))
            assert float(line.split("density")[1]) == pytest.approx(ref[name][1], abs=1e-4)
    assert seen == {k: v[0] for k, v in ref.items()}
    data = json.loads(_run("inspect", EXAMPLE, "--json"))
    assert data["shape_convention"].startswith("out x in")
    assert {k: tuple(v["shape"]) for k, v in data["weights"].items()} == {k: v[0] for k, v in ref.items()}


def test_artifact_and_ir_shapes_are_the_same_convention(artifacts, tmp_path):
    ref = {k: v[0] for k, v in _reference_shapes().items()}
    text = _run("inspect", artifacts / "onnx")
    assert "shapes        out x in" in text
    seen = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ref:
            (shape,) = SHAPE.findall(line)
            seen[parts[0]] = (int(shape[0]), int(shape[1]))
    assert seen == ref
    data = json.loads(_run("inspect", artifacts / "onnx", "--json"))
    mats = {m["name"]: tuple(m["shape"]) for m in data["manifest"]["weights"]["matrices"]}
    assert {k: mats[k] for k in ref} == ref
    # the compiled IR's sparse constants: tensor<OUTxINxf32>, the same numbers
    _run(EXAMPLE, "--emit-ir", tmp_path / "m.ir", "--quiet")
    ir = _run("opt", tmp_path / "m.ir", "--passes", "const-fold,fold-masks,fuse-gates")
    consts = {}
    for line in ir.splitlines():
        m = re.search(r"const @(rnns\.\d+\.(?:recurrent_)?kernel) sparse.*: tensor<(\d+)x(\d+)xf32>", line)
        if m:
            consts[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    assert consts == ref
    # SparseMatrix.describe prints the same
    from egru_compile.ir.sparse import SparseMatrix
    w = np.zeros((7, 3), np.float32)
    w[1, 2] = 1.0
    assert SparseMatrix.from_dense(w, "csc").describe().startswith("sparse<7x3,")


def test_eval_names_synops_on_chips_and_macs_elsewhere(artifacts):
    text_file = artifacts / "text.txt"
    src = json.loads(_run("eval", EXAMPLE, "--data", text_file, "--json", "--quiet"))
    onnx_text = _run("eval", artifacts / "onnx", "--data", text_file, "--quiet")
    chip_text = _run("eval", artifacts / "chip", "--data", text_file, "--quiet")
    chip = json.loads(_run("eval", artifacts / "chip", "--data", text_file, "--json", "--quiet"))
    # non-chip targets: MACs (the paper's convention), never synops
    line = re.search(r"^MACs/token +([\d.,]+)  \(RNN layers; the embedding and decoder are not counted\)$",
                     onnx_text, re.M)
    assert line and "synops" not in onnx_text, onnx_text
    macs = float(line.group(1).replace(",", ""))
    assert macs == pytest.approx(src["macs_per_token"], rel=1e-3)
    # the chip artifact: one synops/token line and no MACs/token line for the same quantity
    assert not re.search(r"^MACs/token", chip_text, re.M)
    lines = [l for l in chip_text.splitlines() if l.startswith("synops/token")]
    assert len(lines) == 1 and "1 synop = 1 MAC" in lines[0]
    printed = float(lines[0].split()[1].replace(",", ""))
    totals = chip["chip"]["totals"]
    assert totals["decoder_synops"] == 0                   # decoder on the host: all synops are the RNN cores'
    assert printed == pytest.approx(totals["synops"], abs=0.05)
    # float weights: the chip's synops are the PyTorch source's MACs of count-macs on the same text
    assert printed == pytest.approx(src["macs_per_token"], rel=1e-3)
    assert chip["macs_per_token"] == pytest.approx(totals["synops"], rel=1e-9)


# ------------------------------------------------------------------------------------------------ --option
from dataclasses import dataclass  # noqa: E402

from egru_compile.targets import registry  # noqa: E402


@dataclass(frozen=True)
class _PluginOptions:
    level: int = registry.option(1, "a plug-in's integer option", minimum=0)
    mode: str = registry.option("a", "a plug-in's choice", choices=("a", "b"))
    exact: bool = registry.option(False, "a plug-in's flag")

    def needs(self) -> frozenset[str]:
        return frozenset()


def _plugin_compile(graph, source, out_dir, options):
    """The onnx back-end, recording the options the plug-in received."""
    from egru_compile.targets.onnx import compile_onnx
    result = compile_onnx(graph, source, out_dir, options)
    (Path(out_dir) / "plugin_options.json").write_text(json.dumps({k: options[k] for k in ("level", "mode", "exact")}))
    return result


def test_option_key_value_reaches_a_plugin_registered_after_the_cli(tmp_path, monkeypatch):
    registry.all_targets()                       # the built-ins first, then the plug-in (after `main` was built)
    spec = registry.TargetSpec("plugin-onnx", "a plug-in target", f"{__name__}:_plugin_compile",
                               "egru_compile.runtime.onnx_runner:OnnxRunner.from_artifact", _PluginOptions,
                               ("egru-compile/onnx-model",))
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    out = tmp_path / "art"
    _run(EXAMPLE, "--target", "plugin-onnx", "-o", out, "--quiet",
         "--option", "level=3", "--option", "mode=b", "--option", "exact=true")
    assert json.loads((out / "plugin_options.json").read_text()) == {"level": 3, "mode": "b", "exact": True}
    # bad pairs: one error line, exit 2 (a usage error, as `--level -1` is to click), nothing written
    for bad, msg in [("level=-1", "expected an integer >= 0"), ("mode=c", "expected one of a, b"),
                     ("levle=2", "no registered target has this option"), ("level", "expected KEY=VALUE"),
                     ("exact=maybe", "expected true or false"), ("max_chips=2", "applies to --target")]:
        res = CliRunner().invoke(main, [str(EXAMPLE), "--target", "plugin-onnx", "-o", str(tmp_path / "bad"),
                                        "--option", bad])
        assert res.exit_code == 2, (bad, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (bad, res.output)
        assert not (tmp_path / "bad").exists()
    # a built-in option given twice is refused
    res = CliRunner().invoke(main, [str(EXAMPLE), "--target", "loihi-like", "--max-chips", "2",
                                    "--option", "max-chips=3", "-o", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "given twice" in res.output and not (tmp_path / "bad").exists()
    # the flag spelling of a bad value exits 2 too (click's parser): both spellings are usage errors
    res = CliRunner().invoke(main, [str(EXAMPLE), "--target", "loihi-like", "--max-chips", "0", "-o",
                                    str(tmp_path / "bad")])
    assert res.exit_code == 2 and not (tmp_path / "bad").exists(), res.output
    res = CliRunner().invoke(main, [str(EXAMPLE), "--target", "onnx", "-o", ""])
    assert res.exit_code == 2 and res.output.strip() == "error: output directory name is empty", res.output


def test_projection_decoder_shape_is_out_x_in(tmp_path):
    """EvNN's projection P (an nn.Linear, [emb, h_last] = out x in as stored) prints EMBxH, and the kernels of
    layers of different sizes print OUTxIN, recounted from the saved state_dict."""
    from egru_compile.frontend import save_checkpoint
    from egru_compile.model.egru import EGRUConfig, EGRULanguageModel
    torch.manual_seed(0)
    model = EGRULanguageModel(EGRUConfig(30, 6, [10, 7], projection=True))
    save_checkpoint(tmp_path / "p.pt", model, [f"w{i}" for i in range(30)])
    sd = torch.load(tmp_path / "p.pt", weights_only=True, map_location="cpu")["state_dict"]
    P = sd["decoder.projection.weight"]
    text = _run("inspect", tmp_path / "p.pt")
    (line,) = [l for l in text.splitlines() if l.startswith("decoder")]
    assert SHAPE.findall(line) == [(str(P.shape[0]), str(P.shape[1]))] and tuple(P.shape) == (6, 7)
    for l in range(2):
        for name in ("kernel", "recurrent_kernel"):
            w = sd[f"rnns.{l}.{name}"]
            (row,) = [r for r in text.splitlines() if r.split()[0] == f"rnns.{l}.{name}"]
            assert SHAPE.findall(row) == [(str(w.shape[1]), str(w.shape[0]))]
    data = json.loads(_run("inspect", tmp_path / "p.pt", "--json"))
    assert data["decoder"]["shape"] == list(P.shape)


def test_core_and_links_only_where_there_are_cores(artifacts):
    """--core / --links are refused in one line on a checkpoint (they were silently ignored) and on an onnx
    artifact; the Python API names its keyword (core=), not the flag."""
    import egru_compile as ec
    for target, args in ((EXAMPLE, ["--core", "0"]), (EXAMPLE, ["--links"]), (artifacts / "onnx", ["--core", "0"])):
        res = CliRunner().invoke(main, ["inspect", str(target), *args])
        lines = res.output.strip().splitlines()
        assert res.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error:"), res.output
        assert args[0] in lines[0]
    assert "is an onnx artifact" in res.output
    with pytest.raises(ec.EgruError, match=r"^core= shows a chip artifact's cores"):
        ec.inspect(EXAMPLE, core=0)
    with pytest.raises(ec.EgruError, match=r"threads="):
        ec.load(artifacts / "onnx").evaluate(artifacts / "text.txt", threads=2)


def test_output_path_that_is_a_file_is_refused_with_the_right_hint(tmp_path):
    """-o naming an existing file: the first error already says it is not a folder (it used to suggest
    --force, which then refused it for that reason); the file is untouched."""
    f = tmp_path / "notes.md"
    f.write_text("mine\n")
    for extra in ([], ["--force"]):
        res = CliRunner().invoke(main, [str(EXAMPLE), "--target", "onnx", "-o", str(f), *extra])
        lines = res.output.strip().splitlines()
        assert res.exit_code != 0 and len(lines) == 1 and "is not a directory" in lines[0], res.output
        assert "--force" not in lines[0]
    assert f.read_text() == "mine\n"


def test_onnx_density_line_separates_the_pruned_layers(artifacts):
    """The example is 85 % pruned, but its dense embedding table makes the all-weights density 0.78: the
    report and manifest give the RNN layers' own figure, recounted here from the checkpoint's masks."""
    ref = _reference_shapes()
    nnz = sum(round(d * s[0] * s[1]) for s, d in ref.values())
    dense = sum(s[0] * s[1] for s, _ in ref.values())
    w = json.loads((artifacts / "onnx" / "manifest.json").read_text())["weights"]
    assert (w["rnn_nnz"], w["rnn_dense"]) == (nnz, dense)
    report = (artifacts / "onnx" / "report.txt").read_text()
    assert f"RNN layers {nnz:,} of {dense:,}, density {nnz / dense:.4f}" in report


def test_onnx_int8_density_line_counts_every_layer(tmp_path):
    """The int8 path names its matrices rnns_L_... (sanitised): every RNN matrix is still in the subtotal
    (its dense size equals the checkpoint's; int8 rounding may zero a few weights, never add one)."""
    ref = _reference_shapes()
    nnz = sum(round(d * s[0] * s[1]) for s, d in ref.values())
    dense = sum(s[0] * s[1] for s, _ in ref.values())
    _run(EXAMPLE, "--target", "onnx", "--weight-dtype", "int8", "-o", tmp_path / "o8", "--quiet")
    w = json.loads((tmp_path / "o8" / "manifest.json").read_text())["weights"]
    assert w["rnn_dense"] == dense and 0.999 * nnz <= w["rnn_nnz"] <= nnz


def test_score_refuses_what_tvm_refuses(artifacts):
    """score / score_streams on every runner: one target per token, ids in the vocabulary, integer ids — an
    EgruError, never a silent value (a -1 target scored the last word) or a raw IndexError."""
    import egru_compile as ec
    for path in (artifacts / "onnx", artifacts / "chip", EXAMPLE):
        a = ec.load(path)
        for toks, tg, msg in (([1, 2], [3], "one target per token"), ([1], [3, 4], "one target per token"),
                              ([1, 2], [3, -1], "target id -1 is outside"), ([1, 2], [3, 10**6], "outside"),
                              ([1.5], [2], "must be integers")):
            with pytest.raises(ec.EgruError, match=msg):
                a.score(toks, tg)
        if path != artifacts / "chip":
            a.reset_streams(2)
            with pytest.raises(ec.EgruError, match="target id -1"):
                a.score_streams([[1, 2]], [[3, -1]])


@pytest.mark.parametrize("kw,needle", [({"seed": -1}, "seed="), ({"top_k": 1.5}, "top_k="),
                                       ({"tokens": 2_000_000}, "tokens="), ({"temperature": float("nan")},
                                                                            "temperature=")])
def test_generate_api_keeps_the_cli_limits(artifacts, kw, needle):
    """The API refuses what the CLI refuses (--seed >= 0, whole --top-k, --tokens <= 1,000,000, a finite
    --temperature) with an EgruError naming the keyword — it raised raw ValueError / TypeError, or generated
    two million words."""
    import egru_compile as ec
    with pytest.raises(ec.EgruError, match=f"^{re.escape(needle)} must be"):
        ec.load(artifacts / "onnx").generate("the", **{"tokens": 3, **kw})
