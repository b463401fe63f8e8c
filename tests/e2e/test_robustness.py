"""Hostile and broken inputs: each gives a one-line error (or a warning where EvNN would carry on), a
non-zero exit, and no partial output directory."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import load_source, save_checkpoint, trace_model
from egru_compile.ir import Interpreter
from egru_compile.passes import PassManager

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]


def _evnn(tmp_path, mutate):
    model = make_model()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    mutate(sd)
    torch.save(sd, tmp_path / "m.pt")
    (tmp_path / "train.txt").write_text(" ".join(WORDS[:-1]) + "\n")
    return CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--vocab", str(tmp_path / "train.txt"),
                                     "--target", "loihi-like", "-o", str(tmp_path / "out")])


def _one_line_failure(res, tmp_path, *needles):
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for n in needles:
        assert n in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_missing_key(tmp_path):
    res = _evnn(tmp_path, lambda sd: sd.pop("rnns.1.thr"))
    _one_line_failure(res, tmp_path, "missing weights", "rnns.1.thr")


def test_shape_mismatch_between_layers(tmp_path):
    res = _evnn(tmp_path, lambda sd: sd.__setitem__("rnns.1.kernel", torch.zeros(11, 24)))
    _one_line_failure(res, tmp_path, "rnns.1.kernel", "input size must match")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_inf_weights(tmp_path, bad):
    def mutate(sd):
        sd["rnns.0.kernel"][0, 0] = bad
    _one_line_failure(_evnn(tmp_path, mutate), tmp_path, "NaN or Inf", "rnns.0.kernel")


def test_unknown_extra_keys_warn(tmp_path):
    model = make_model()
    sd = dict(model.state_dict())
    sd["rnns.0.kernel_extra"] = torch.zeros(3)
    torch.save({"format": "egru-compile/checkpoint", "version": 1, "config": model.config.to_dict(),
                "vocab": WORDS, "state_dict": sd}, tmp_path / "m.pt")
    with pytest.warns(UserWarning, match="ignoring unknown keys rnns.0.kernel_extra"):
        load_source(tmp_path / "m.pt")


def test_threshold_outside_unit_interval_is_clamped_with_warning(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.rnns[0].thr[0] = 1.7
        model.rnns[0].thr[1] = -0.2
    save_checkpoint(tmp_path / "m.pt", model, WORDS)
    with pytest.warns(UserWarning, match="outside \\[0, 1\\]; clamped"):
        src = load_source(tmp_path / "m.pt")
    thr = src.model.rnns[0].thr.detach()
    assert float(thr.max()) <= 1.0 and float(thr.min()) >= 0.0


def test_unsupported_format_version(tmp_path):
    model = make_model()
    torch.save({"format": "egru-compile/checkpoint", "version": 99, "config": model.config.to_dict(),
                "state_dict": model.state_dict()}, tmp_path / "m.pt")
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--target", "loihi-like", "-o", str(tmp_path / "out")])
    _one_line_failure(res, tmp_path, "version 99")


@pytest.mark.parametrize("name,content,kind", [
    ("m.pt", b"hello, I am text", "is text"),
    ("config.json", b'{"hidden": [128]}', "is JSON"),
    ("model.onnx", b"\x08\x0a\x12\x07pytorch", "is an ONNX model"),
    ("m.pt", b"", "is empty"),
    ("m.pt", bytes(range(1, 255)), "is binary data"),
])
def test_not_a_checkpoint(tmp_path, name, content, kind):
    """Files that are no checkpoint at all are named for what they are, never as "pickled Python objects" (which
    would send the user to --trust-checkpoint) nor with torch's internal unpickling error."""
    (tmp_path / name).write_bytes(content)
    for args in ([str(tmp_path / name), "--target", "loihi-like", "-o", str(tmp_path / "out")],
                 [str(tmp_path / name), "--target", "onnx", "--trust-checkpoint", "-o", str(tmp_path / "out")],
                 ["inspect", str(tmp_path / name)]):
        res = CliRunner().invoke(main, args)
        _one_line_failure(res, tmp_path, kind, "not a PyTorch checkpoint")
        assert "pickled" not in res.output


def test_truncated_checkpoint(tmp_path):
    data = (Path(__file__).parents[2] / "examples/ptb-egru-small/model.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--target", "loihi-like", "-o", str(tmp_path / "out")])
    _one_line_failure(res, tmp_path, "truncated or corrupt")


def test_zero_rows_columns_and_fully_pruned_layer_compile_and_match():
    model = make_model(hidden=(12, 8))              # zeros baked into the weights (no prune masks)
    with torch.no_grad():
        model.rnns[0].kernel[:, 5] = 0             # an output unit's gate row with no input synapses
        model.rnns[0].recurrent_kernel[3] = 0      # a presynaptic unit with no recurrent fan-out
        model.rnns[1].kernel.zero_()               # a 100 %-pruned input matrix
        model.rnns[1].recurrent_kernel.zero_()
    graph = PassManager(None).run(trace_model(model))
    sparse = [n.attrs["data"] for n in graph.const_nodes() if hasattr(n.attrs["data"], "nnz")]
    assert any(m.nnz == 0 for m in sparse)
    it = Interpreter(graph)
    state = model.init_state(1)
    with torch.no_grad():
        for tok in [1, 2, 3, 4, 5, 6]:
            logits, state = model.step(torch.tensor([tok]), state)
            assert np.abs(it.step(tok) - logits.numpy()).max() < 1e-5


@pytest.mark.parametrize("content,needle", [("", "is empty"), ("w1 zzz w2\n", "'zzz' is not in the vocabulary")])
def test_bad_calibration_data(tmp_path, content, needle):
    save_checkpoint(tmp_path / "m.pt", make_model(), WORDS)
    (tmp_path / "c.txt").write_text(content)
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--target", "loihi-like", "-o", str(tmp_path / "out"),
                                    "--calib-data", str(tmp_path / "c.txt")])
    _one_line_failure(res, tmp_path, needle)
    if "zzz" in content:
        assert "c.txt:1" in res.output


@pytest.mark.parametrize("target", ["onnx", "onnx-int8", "tvm", "loihi-like"])
def test_fully_pruned_layer_on_every_target(tmp_path, target):
    if target == "tvm":
        pytest.importorskip("tvm")
    from egru_compile.runtime import open_artifact
    model = make_model(hidden=(12, 8))
    with torch.no_grad():
        model.rnns[0].kernel[:, 5] = 0
        model.rnns[1].kernel.zero_()
        model.rnns[1].recurrent_kernel.zero_()
    save_checkpoint(tmp_path / "m.pt", model, WORDS)
    extra = {"loihi-like": ["--float-weights"], "onnx-int8": ["--onnx-weight-dtype", "int8"]}.get(target, [])
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--target", target.split("-int8")[0],
                                    "-o", str(tmp_path / "out"), *extra])
    assert res.exit_code == 0, res.output
    runner = open_artifact(tmp_path / "out")
    state = model.init_state(1)
    tol = 5e-2 if target == "onnx-int8" else 1e-5           # int8 weights vs the f32 model
    with torch.no_grad():
        for tok in [1, 2, 3, 4, 5, 6]:
            logits, state = model.step(torch.tensor([tok]), state)
            assert np.abs(runner.step(tok) - logits.numpy()[0]).max() < tol


def test_interrupt_leaves_no_partial_output(tmp_path, monkeypatch):
    from egru_compile.targets import registry
    save_checkpoint(tmp_path / "m.pt", make_model(), WORDS)

    def boom(graph, source, out_dir, options):
        (out_dir / "half.bin").write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(registry.TargetSpec, "compile_artifact", lambda self, *a: boom(*a))
    res = CliRunner().invoke(main, [str(tmp_path / "m.pt"), "--target", "onnx", "-o", str(tmp_path / "out")])
    assert res.exit_code == 130 and "interrupted" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
