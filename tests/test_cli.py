"""CLI: pass pipeline flags, reports, output directory rules, one-line errors."""
from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]


@pytest.fixture
def ckpt(tmp_path):
    save_checkpoint(tmp_path / "m.pt", make_model(sparsity=0.7), WORDS)
    (tmp_path / "calib.txt").write_text("w1 w2 w3\nw4 w5 w6 w7\n" * 5)
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_print_ir_after_all_shows_every_pass(ckpt):
    res = run(ckpt / "m.pt", "--print-ir-after-all")
    assert res.exit_code == 0, res.output
    for p in ("const-fold", "fold-masks", "fuse-gates", "fuse-cell", "event-gating", "dce", "count-macs"):
        assert f"IR after {p}" in res.output
    assert "event_matvec(" in res.output and "egru_cell(" in res.output


def test_passes_option_and_verbose_timings(ckpt):
    res = run(ckpt / "m.pt", "--passes", "const-fold,fold-masks", "--print-ir-after-all", "-v")
    assert res.exit_code == 0, res.output
    assert "IR after fold-masks" in res.output and "IR after fuse-cell" not in res.output
    assert "[pass] const-fold" in res.output and " ms" in res.output


def test_unknown_pass_is_one_line_error(ckpt):
    res = run(ckpt / "m.pt", "--passes", "const-fold,frobnicate", "--print-ir")
    assert res.exit_code != 0
    assert res.output.strip().splitlines()[-1].startswith("error: unknown pass 'frobnicate'")


def test_report_json_with_calibration(ckpt):
    res = run(ckpt / "m.pt", "--report", ckpt / "macs.json", "--calib-data", ckpt / "calib.txt",
              "--calib-tokens", "30")
    assert res.exit_code == 0, res.output
    rep = json.loads((ckpt / "macs.json").read_text())
    assert rep["calib_tokens"] == 30
    mpt = rep["macs_per_token"]
    assert mpt["dense"] == (8 + 12) * 36 + (12 + 8) * 24
    assert mpt["dense"] > mpt["static"] > mpt["dynamic"] > 0
    assert len(rep["layers"]) == 2 and len(rep["activity"]) == 2
    assert rep["decoder_macs_per_token"] == 8 * 40
    for layer in rep["layers"]:
        assert {"input", "recurrent", "activity"} <= set(layer)


def test_output_dir_exists_needs_force(ckpt):
    out = ckpt / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    res = run(ckpt / "m.pt", "--target", "loihi-like", "-o", out)
    assert res.exit_code != 0 and "already exists" in res.output
    assert (out / "keep.txt").exists()


def test_unwritable_output_dir(ckpt):
    res = run(ckpt / "m.pt", "--target", "loihi-like", "-o", ckpt / "missing" / "deeper" / "out")
    assert res.exit_code != 0 and "does not exist" in res.output


def test_nothing_to_do(ckpt):
    res = run(ckpt / "m.pt")
    assert res.exit_code != 0 and "nothing to do" in res.output


def test_no_files_written_outside_output(ckpt):
    before = set(os.listdir(ckpt))
    res = run(ckpt / "m.pt", "--target", "loihi-like", "-o", ckpt / "o")
    assert res.exit_code == 0, res.output
    assert set(os.listdir(ckpt)) - before == {"o"}


def test_onnx_weight_dtype_int8_adds_quantize_and_needs_onnx_target(ckpt):
    import onnx
    res = run(ckpt / "m.pt", "--target", "onnx", "--onnx-weight-dtype", "int8", "-o", ckpt / "o8",
              "--calib-data", ckpt / "calib.txt")
    assert res.exit_code == 0, res.output
    assert "quantize-int8: calibration perplexity" in res.output
    assert "EventMatVecQ" in {f.name for f in onnx.load(str(ckpt / "o8" / "model.onnx")).functions}
    # --onnx-weight-dtype is an alias of the generic --weight-dtype, which every built-in target takes; a value
    # the target cannot store is refused in one line (the built-in chip profiles hold 8-bit weights)
    res = run(ckpt / "m.pt", "--target", "loihi-like", "--onnx-weight-dtype", "f16", "-o", ckpt / "t8")
    assert res.exit_code != 0 and not (ckpt / "t8").exists()
    assert "stores 8-bit weights" in res.output.strip().splitlines()[-1]
    res = run(ckpt / "m.pt", "--target", "onnx", "--weight-dtype", "int8", "-o", ckpt / "w8",
              "--calib-data", ckpt / "calib.txt")
    assert res.exit_code == 0, res.output
    assert (ckpt / "w8" / "model.onnx").read_bytes() == (ckpt / "o8" / "model.onnx").read_bytes()


def test_int8_quantize_goes_before_count_macs_with_passes_default(ckpt):
    res = run(ckpt / "m.pt", "--target", "onnx", "--onnx-weight-dtype", "int8", "--passes", "default",
              "-o", ckpt / "o8d", "-v")
    assert res.exit_code == 0, res.output
    order = [ln.split()[1] for ln in res.output.splitlines() if ln.startswith("[pass] ")]
    assert order.index("quantize-int8") < order.index("count-macs"), order
