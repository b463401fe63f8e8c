"""Hostile-input matrix (issue 12): for every class of bad input the CLI prints exactly one `error:` line, exits
non-zero, prints no traceback, leaves no partial output or temporary directory, runs no code from the file,
and deletes nothing the user owns."""
from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model
from egru_compile.artifact import seal
from egru_compile.cli import main
from egru_compile.data import Vocabulary
from egru_compile.frontend import export_step, save_checkpoint

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]
REPO = Path(__file__).resolve().parents[2]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(res_or_text, exit_code=None, *needles):
    out = res_or_text if isinstance(res_or_text, str) else res_or_text.output
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out
    assert "Traceback" not in out
    for n in needles:
        assert n in lines[0], lines[0]
    if exit_code is not None and not isinstance(res_or_text, str):
        assert res_or_text.exit_code == exit_code, (res_or_text.exit_code, out)
    elif not isinstance(res_or_text, str):
        assert res_or_text.exit_code != 0


def assert_no_leftovers(d: Path, allowed: set[str]):
    names = {p.name for p in d.iterdir()}
    assert names <= allowed, sorted(names - allowed)
    assert not [n for n in names if ".tmp-" in n or ".old-" in n]


@pytest.fixture
def ckpt(tmp_path):
    save_checkpoint(tmp_path / "m.pt", make_model(), WORDS)
    (tmp_path / "data.txt").write_text("w1 w2 w3 w4\nw5 w6\n")
    return tmp_path / "m.pt"


class _Payload:
    """Unpickling this creates the marker file (what an attacker's code would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --------------------------------------------------------------------------- 1. code from a crafted .pt2
def test_crafted_pt2_never_runs_its_payload(tmp_path):
    ep = export_step(make_model(), [12, 8])
    torch.export.save(ep, tmp_path / "good.pt2")
    marker = tmp_path / "PWNED"
    with zipfile.ZipFile(tmp_path / "good.pt2") as src, zipfile.ZipFile(tmp_path / "evil.pt2", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("sample_inputs/model.pt"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            dst.writestr(info, data)
    (tmp_path / "data.txt").write_text("w1 w2\n")
    for args in ([tmp_path / "evil.pt2", "--target", "onnx", "-o", tmp_path / "out"],
                 ["eval", tmp_path / "evil.pt2", "--data", tmp_path / "data.txt"],
                 ["inspect", tmp_path / "evil.pt2"]):
        res = cli(*args)
        assert_one_line_error(res, 1, "--trust-checkpoint")
        assert not marker.exists()
    assert_no_leftovers(tmp_path, {"good.pt2", "evil.pt2", "data.txt"})


# --------------------------------------------------------------------------- 2. --force never destroys data
def test_force_never_replaces_user_data(tmp_path, ckpt, monkeypatch):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    res = cli(ckpt, "--target", "onnx", "-o", user, "--force")
    assert_one_line_error(res, 1, "replaces only a previous", "not a compiled artifact")
    assert (user / "thesis.tex").read_text() == "precious"

    res = cli(ckpt, "--target", "onnx", "-o", tmp_path, "--force")          # holds the source
    assert_one_line_error(res, 1)
    assert ckpt.is_file()

    monkeypatch.chdir(tmp_path)
    res = cli(ckpt, "--target", "onnx", "-o", ".", "--force")
    assert_one_line_error(res, 1, "current directory")
    res = cli(ckpt, "--target", "onnx", "-o", "..", "--force")
    assert_one_line_error(res, 1, "current directory")
    assert_no_leftovers(tmp_path, {"m.pt", "data.txt", "mine"})

    # a previous artifact is replaced
    assert cli(ckpt, "--target", "onnx", "-o", tmp_path / "art").exit_code == 0
    res = cli(ckpt, "--target", "onnx", "-o", tmp_path / "art", "--force")
    assert res.exit_code == 0, res.output
    assert_no_leftovers(tmp_path, {"m.pt", "data.txt", "mine", "art"})


# --------------------------------------------------------------------------- 3. sizes checked before allocating
def test_declared_size_checked_before_allocating(tmp_path):
    model = make_model()
    cfg = dict(model.config.to_dict(), hidden_sizes=[40000, 8])
    torch.save({"format": "egru-compile/checkpoint", "version": 1, "config": cfg, "vocab": WORDS,
                "state_dict": model.state_dict()}, tmp_path / "m.pt")
    limit = 6 * 1024 ** 3

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    proc = subprocess.run([sys.executable, "-m", "egru_compile.cli", str(tmp_path / "m.pt"), "--target", "onnx",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, preexec_fn=cap,
                          cwd=tmp_path, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 1, proc.stderr
    assert_one_line_error(proc.stdout + proc.stderr, None, "rnns.0.kernel", "config declares")
    assert_no_leftovers(tmp_path, {"m.pt"})


# --------------------------------------------------------------------------- 4. non-finite numbers
@pytest.mark.parametrize("value,needle", [(1e39, "NaN or Inf (in float32)"), (1e38, "can overflow float32")])
def test_weights_infinite_in_float32_or_overflowing(tmp_path, value, needle):
    model = make_model()
    sd = {k: v.double() for k, v in model.state_dict().items()}
    sd["rnns.0.recurrent_kernel"][:, 3] = value        # 12 recurrent inputs of |y| <= 1: |sum| up to 1.2e39
    torch.save({"format": "egru-compile/checkpoint", "version": 1, "config": model.config.to_dict(),
                "vocab": WORDS, "state_dict": sd}, tmp_path / "m.pt")
    res = cli(tmp_path / "m.pt", "--target", "onnx", "-o", tmp_path / "out")
    assert_one_line_error(res, 1, needle)
    assert_no_leftovers(tmp_path, {"m.pt"})


# --------------------------------------------------------------------------- 5. tampered artifacts
@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("art")
    save_checkpoint(d / "m.pt", make_model(), WORDS)
    res = cli(d / "m.pt", "--target", "onnx", "-o", d / "art")
    assert res.exit_code == 0, res.output
    return d / "art"


def _compile(ckpt, out, onnx_artifact):
    """A fresh copy of the compiled artifact at `out` (compiled once per module)."""
    shutil.copytree(onnx_artifact, out)
    return out


@pytest.mark.parametrize("tamper", ["flip-byte", "truncate", "zero-bytes", "swap-state-wiring", "absolute-path",
                                    "unsealed"])
def test_tampered_artifact_is_refused(tmp_path, ckpt, tamper, onnx_artifact):
    art = _compile(ckpt, tmp_path / "art", onnx_artifact)
    model = art / "model.onnx"
    manifest = json.loads((art / "manifest.json").read_text())
    if tamper == "flip-byte":
        b = bytearray(model.read_bytes())
        b[len(b) // 2] ^= 0xFF
        model.write_bytes(bytes(b))
    elif tamper == "truncate":
        model.write_bytes(model.read_bytes()[:100])
    elif tamper == "zero-bytes":
        model.write_bytes(b"")
    elif tamper == "swap-state-wiring":
        outs = [o for o in manifest["outputs"] if o["role"] == "state_out"]
        outs[0]["state_input"], outs[1]["state_input"] = outs[1]["state_input"], outs[0]["state_input"]
        (art / "manifest.json").write_text(json.dumps(manifest))
    elif tamper == "absolute-path":                 # re-sealed: the digest is right, the path is not
        manifest["model"] = str(model.resolve())
        manifest["files"][str(model.resolve())] = manifest["files"]["model.onnx"]
        (art / "manifest.json").write_text(json.dumps(manifest))
        from egru_compile.artifact import _manifest_digest
        manifest["manifest_sha256"] = _manifest_digest(manifest)
        (art / "manifest.json").write_text(json.dumps(manifest))
    elif tamper == "unsealed":
        del manifest["files"]
        (art / "manifest.json").write_text(json.dumps(manifest))
    for args in (["eval", art, "--data", tmp_path / "data.txt"], ["inspect", art]):
        res = cli(*args)
        assert_one_line_error(res, 1)
        assert "modified" in res.output or "relative path" in res.output or "checksums" in res.output


def test_nan_in_a_chip_program_is_refused(tmp_path, ckpt):
    out = tmp_path / "chip"
    res = cli(ckpt, "--target", "loihi-like", "-o", out, "--float-weights")
    assert res.exit_code == 0, res.output
    with np.load(out / "program.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["l0_thr"] = arrays["l0_thr"].copy()
    arrays["l0_thr"][0] = np.nan
    np.savez_compressed(out / "program.npz", **arrays)
    assert_one_line_error(cli("eval", out, "--data", tmp_path / "data.txt"), 1, "program.npz", "modified")


# --------------------------------------------------------------------------- 6. no tracebacks
@pytest.mark.parametrize("case", ["int-key", "sparse", "quantized", "fp8", "non-tensor", "state-dict-list",
                                  "config-list"])
def test_malformed_state_dicts(tmp_path, case):
    model = make_model()
    sd = dict(model.state_dict())
    cfg = model.config.to_dict()
    if case == "int-key":
        sd[7] = torch.zeros(3)
    elif case == "sparse":
        sd["rnns.0.kernel"] = sd["rnns.0.kernel"].to_sparse()
    elif case == "quantized":
        sd["rnns.0.thr"] = torch.quantize_per_tensor(sd["rnns.0.thr"], 0.1, 0, torch.qint8)
    elif case == "fp8":
        sd["rnns.0.kernel"] = sd["rnns.0.kernel"].to(torch.float8_e4m3fn)
    elif case == "non-tensor":
        sd["rnns.0.bias"] = [1.0, 2.0]
    elif case == "state-dict-list":
        sd = list(sd.values())
    elif case == "config-list":
        cfg = [1, 2, 3]
    torch.save({"format": "egru-compile/checkpoint", "version": 1, "config": cfg, "vocab": WORDS,
                "state_dict": sd}, tmp_path / "m.pt")
    res = cli(tmp_path / "m.pt", "--target", "onnx", "-o", tmp_path / "out")
    assert_one_line_error(res, 1)
    assert_no_leftovers(tmp_path, {"m.pt"})


@pytest.mark.parametrize("case", ["inputs-not-list", "npz-garbage"])
def test_malformed_manifest_and_npz(tmp_path, ckpt, case, onnx_artifact):
    if case == "inputs-not-list":
        art = _compile(ckpt, tmp_path / "art", onnx_artifact)
        m = json.loads((art / "manifest.json").read_text())
        m["inputs"] = 5
        (art / "manifest.json").write_text(json.dumps(m))
    else:
        art = tmp_path / "art"
        assert cli(ckpt, "--target", "loihi-like", "-o", art, "--float-weights").exit_code == 0
        (art / "program.npz").write_bytes(b"PK\x03\x04 not a zip")
    seal(art)                                        # crafted by hand: checksums right, content not
    res = cli("eval", art, "--data", tmp_path / "data.txt")
    assert_one_line_error(res, 1, "art")


@pytest.mark.parametrize("args,code", [(["--target", "onnx", "--no-such-option"], 2), (["--target"], 2)])
def test_usage_errors_are_one_line(ckpt, args, code):
    assert_one_line_error(cli(ckpt, *args), code)


def _wait_for(pred, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _interrupt_when(cmd, cwd, ready, timeout=240):
    proc = subprocess.Popen([sys.executable, "-m", "egru_compile.cli", *map(str, cmd)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO), EGRU_COMPILE_CACHE="off"))  # compile for real
    assert _wait_for(ready, timeout), "the command never reached the phase to interrupt"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def test_ctrl_c_during_tvm_compile(tmp_path, ckpt):
    pytest.importorskip("tvm")
    rc, out = _interrupt_when([ckpt, "--target", "tvm", "-o", tmp_path / "out"], tmp_path,
                              lambda: any(".out.tmp-" in p.name for p in tmp_path.iterdir()))
    assert rc == 130, out
    assert_one_line_error(out, None, "interrupted")
    assert_no_leftovers(tmp_path, {"m.pt", "data.txt"})


def test_ctrl_c_during_train(tmp_path):
    from egru_compile.train.data import synthetic_corpus
    synthetic_corpus(tmp_path / "corpus", n_lines=4000)
    rc, out = _interrupt_when(["train", "--data-dir", tmp_path / "corpus", "-o", tmp_path / "t.pt", "--emb", 16,
                               "--hidden", "32,16", "--epochs", 50, "--no-progress"], tmp_path,
                              lambda: (tmp_path / "t_ckpts").exists())
    assert rc == 130, out
    assert out.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in out
    assert not (tmp_path / "t.pt").exists()


# --------------------------------------------------------------------------- 7. silently replaced option values
@pytest.mark.parametrize("args", [["--target", "loihi-like", "--max-chips", "0"],
                                  ["--target", "onnx", "--calib-data", "DATA", "--calib-tokens", "-5"],
                                  ["--target", "onnx", "-o", ""]])
def test_bad_compile_option_values(tmp_path, ckpt, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [str(tmp_path / "data.txt") if a == "DATA" else a for a in args]
    assert_one_line_error(cli(ckpt, *args))
    assert_no_leftovers(tmp_path, {"m.pt", "data.txt"})


@pytest.mark.parametrize("opt", [["--epochs", "-1"], ["--max-steps", "0"], ["--batch-size", "0"]])
def test_bad_train_option_values(tmp_path, opt):
    from egru_compile.train.data import synthetic_corpus
    synthetic_corpus(tmp_path / "corpus")
    res = cli("train", "--data-dir", tmp_path / "corpus", "-o", tmp_path / "t.pt", *opt)
    assert_one_line_error(res, 2, opt[0])
    assert not (tmp_path / "t.pt").exists()


# --------------------------------------------------------------------------- 8. unbounded reads
def test_reading_stops_at_max_tokens_and_memory_stays_bounded(tmp_path):
    vocab = Vocabulary(WORDS)
    line = " ".join(WORDS[i % 39] for i in range(12_000_000 // 4))     # one ~12 MB line
    (tmp_path / "long.txt").write_text(line + "\n")
    tracemalloc.start()
    ids = vocab.encode_file(tmp_path / "long.txt", max_tokens=100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert list(ids) == [i % 39 for i in range(100)]
    assert peak < 2_000_000, peak


def test_eval_of_dev_zero_is_one_line(ckpt):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    assert_one_line_error(cli("eval", ckpt, "--data", "/dev/zero"), 1, "longer than")


# --------------------------------------------------------------------------- 9. wrong kind of model
def test_pt2_that_is_not_an_egru_step(tmp_path):
    ep = torch.export.export(torch.nn.Linear(4, 3), (torch.zeros(1, 4),))
    torch.export.save(ep, tmp_path / "lin.pt2")
    res = cli(tmp_path / "lin.pt2", "--target", "onnx", "-o", tmp_path / "out", "--trust-checkpoint")
    assert_one_line_error(res, 1, "not an EGRU step")
    assert_no_leftovers(tmp_path, {"lin.pt2"})


@pytest.mark.parametrize("word", ["two words", "new\nline", ""])
def test_vocabulary_word_with_whitespace_refused_at_compile(tmp_path, word):
    save_checkpoint(tmp_path / "m.pt", make_model(), WORDS[:5] + [word] + WORDS[6:])
    res = cli(tmp_path / "m.pt", "--target", "onnx", "-o", tmp_path / "out")
    assert_one_line_error(res, 1, "whitespace")
    assert_no_leftovers(tmp_path, {"m.pt"})


@pytest.mark.parametrize("n", [10_001, 60_000, 70_000])
def test_word_limit_holds_wherever_the_word_falls(ckpt, tmp_path, n):
    """The 10,000-character word limit held only for words crossing a 64 KiB read boundary: a 60,000-character
    word inside one chunk was accepted (mapped to <unk>). Every length over the limit is refused in one line,
    which does not echo the word."""
    f = tmp_path / "w.txt"
    f.write_text("w1 w2 " + "x" * n + " w3\n")
    res = cli("eval", ckpt, "--data", f, "--unk", "<eos>")
    assert_one_line_error(res, 1, "longer than 10,000")
    assert len(res.output) < 300


def test_blank_run_limit_holds_across_read_chunks(ckpt, tmp_path):
    """A run of blanks just over the limit, split over two read chunks, is refused like one inside a chunk."""
    f = tmp_path / "b.txt"
    f.write_text("w1" + " " * ((1 << 20) + 2) + "w2\n")
    assert_one_line_error(cli("eval", ckpt, "--data", f), 1, "whitespace characters without")
