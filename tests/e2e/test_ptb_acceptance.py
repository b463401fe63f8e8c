"""Acceptance on Penn Treebank (the copy shipped in data/ptb): compiled artifacts evaluated with
`egru-compile eval` against the PyTorch source on the first tokens of ptb.test.txt."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pathlib import Path

from conftest import make_model, ptb_path
from egru_compile.cli import main
from egru_compile.data import Vocabulary
from egru_compile.frontend import save_checkpoint


def _eval(artifact, data, *extra):
    res = CliRunner().invoke(main, ["eval", str(artifact), "--data", str(data), "--json", "--quiet", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def _compile(model, out, *extra):
    res = CliRunner().invoke(main, [str(model), "-o", str(out), *extra])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def ptb_models(tmp_path_factory):
    train, test = ptb_path("train"), ptb_path("test")
    d = tmp_path_factory.mktemp("ptb")
    vocab = Vocabulary.from_train_file(train)
    model = make_model(vocab=len(vocab), emb=64, hidden=(128, 64), sparsity=0.85, seed=7, thr=(0.05, 0.25))
    save_checkpoint(d / "pruned.pt", model, vocab)
    # the same weights as an EvNN LanguageModel state_dict (masks applied, EvNN key names)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith(("_orig", "_mask"))}
    for l, layer in enumerate(model.rnns):
        sd[f"rnns.{l}.kernel"] = layer.kernel.detach().clone()
        sd[f"rnns.{l}.recurrent_kernel"] = layer.recurrent_kernel.detach().clone()
        sd[f"rnns.{l}.dampening_factor"] = torch.tensor(0.7)
    torch.save(sd, d / "evnn.pt")
    return d, train, test


def _close(a, b, ppl_tol=1e-3, macs_tol=5e-3):
    assert a["tokens"] == b["tokens"]
    assert abs(a["perplexity"] / b["perplexity"] - 1) <= ppl_tol, (a["perplexity"], b["perplexity"])
    assert abs(a["macs_per_token"] / b["macs_per_token"] - 1) <= macs_tol, (a["macs_per_token"], b["macs_per_token"])


def test_onnx_eval_matches_pytorch_on_5000_ptb_tokens(ptb_models):
    d, train, test = ptb_models
    _compile(d / "pruned.pt", d / "onnx", "--target", "onnx")
    src = _eval(d / "pruned.pt", test, "--max-tokens", "5000")
    onnx = _eval(d / "onnx", test, "--max-tokens", "5000")
    assert onnx["target"] == "onnx" and src["tokens"] == 4999
    _close(onnx, src)


def test_onnx_eval_of_evnn_state_dict_with_vocab(ptb_models):
    d, train, test = ptb_models
    _compile(d / "evnn.pt", d / "onnx_evnn", "--target", "onnx", "--vocab", train)
    src = _eval(d / "evnn.pt", test, "--max-tokens", "5000", "--vocab", train)
    onnx = _eval(d / "onnx_evnn", test, "--max-tokens", "5000")
    _close(onnx, src)


def test_tvm_eval_matches_pytorch_and_onnx_macs(ptb_models):
    pytest.importorskip("tvm")
    d, train, test = ptb_models
    _compile(d / "pruned.pt", d / "tvm", "--target", "tvm")
    if not (d / "onnx").exists():
        _compile(d / "pruned.pt", d / "onnx", "--target", "onnx")
    src = _eval(d / "pruned.pt", test, "--max-tokens", "5000")
    tvm = _eval(d / "tvm", test, "--max-tokens", "5000")
    onnx = _eval(d / "onnx", test, "--max-tokens", "5000")
    _close(tvm, src)
    assert tvm["macs_per_token"] == onnx["macs_per_token"]


def test_loihi_simulator_eval_on_2000_ptb_tokens(ptb_models):
    d, train, test = ptb_models
    valid = ptb_path("valid")
    _compile(d / "pruned.pt", d / "loihi", "--target", "loihi-like", "--calib-data", valid, "--calib-tokens", "300")
    _compile(d / "pruned.pt", d / "loihi_f", "--target", "loihi-like", "--float-weights")
    _compile(d / "pruned.pt", d / "onnx_q", "--target", "onnx", "--passes", "default,quantize-int8")
    src = _eval(d / "pruned.pt", test, "--max-tokens", "2000")
    chip = _eval(d / "loihi", test, "--max-tokens", "2000")
    chip_f = _eval(d / "loihi_f", test, "--max-tokens", "2000")
    unplaced_q = _eval(d / "onnx_q", test, "--max-tokens", "2000")     # same int8 weights, not placed
    _close(chip, unplaced_q)
    _close(chip_f, src)


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"


def test_onnx_int8_of_trained_example_matches_pytorch(tmp_path):
    """`--onnx-weight-dtype int8` (quantize-int8 + int8 weight rows, the fastest ORT variant) on the trained
    85 %-pruned example: perplexity within 0.1 % and MACs/token within 0.5 % of the f32 PyTorch source."""
    test = ptb_path("test")
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} is absent")
    out = _compile(EXAMPLE, tmp_path / "onnx8", "--target", "onnx", "--onnx-weight-dtype", "int8")
    assert "quantize-int8: calibration" not in out      # no --calib-data: nothing measured, nothing printed
    import onnx
    fns = {f.name for f in onnx.load(str(tmp_path / "onnx8" / "model.onnx")).functions}
    assert {"EventMatVecQ", "SparseWeightI8"} <= fns
    man = json.loads((tmp_path / "onnx8" / "manifest.json").read_text())
    assert man["options"]["onnx"]["weight_dtype"] == "int8"
    src = _eval(EXAMPLE, test, "--max-tokens", "5000")
    q8 = _eval(tmp_path / "onnx8", test, "--max-tokens", "5000")
    _close(q8, src)
