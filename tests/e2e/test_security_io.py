"""Security and data safety III (issue 22), classes B, C, D, G: nothing the user owns is overwritten or deleted
(ownership, not format, decides what --force replaces; no output is an input), no half-written output after
any fatal signal, native code is loaded from exactly the bytes that were checked, and small inputs stay cheap
(every read and inflation bounded by what the input declares)."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import make_model
from egru_compile.cli import main
from egru_compile.frontend import save_checkpoint

WORDS = [f"w{i}" for i in range(39)] + ["<eos>"]
REPO = Path(__file__).resolve().parents[2]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(out: str, *needles):
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), out
    assert "Traceback" not in out
    for n in needles:
        assert n in lines[0], lines[0]


def snapshot(d: Path) -> dict:
    """{relative path: bytes} of every file under `d`."""
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def no_temporaries(d: Path):
    left = [p.name for p in d.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert not left, left


@pytest.fixture
def ckpt(tmp_path):
    save_checkpoint(tmp_path / "m.pt", make_model(), WORDS)
    (tmp_path / "data.txt").write_text("w1 w2 w3 w4\nw5 w6\n")
    return tmp_path / "m.pt"


def _compiled(tmp_path_factory, target: str) -> Path:
    d = tmp_path_factory.mktemp(target)
    save_checkpoint(d / "m.pt", make_model(), WORDS)
    res = cli(d / "m.pt", "--target", target, "-o", d / "art")
    assert res.exit_code == 0, res.output
    return d / "art"


@pytest.fixture(scope="module")
def onnx_art(tmp_path_factory):
    return _compiled(tmp_path_factory, "onnx")


# =========================================================================== B. data loss
def test_force_refuses_a_folder_whose_manifest_merely_claims_the_format(tmp_path, ckpt):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "manifest.json").write_text(json.dumps({"format": "egru-compile/onnx-step", "target": "onnx"}))
    (user / "NOTES.md").write_text("months of notes\n")
    (user / "results").mkdir()
    (user / "results" / "r.csv").write_text("1,2,3\n")
    before = snapshot(user)
    res = cli(ckpt, "--target", "onnx", "-o", user, "--force")
    one_line_error(res.output, "nothing was touched")
    assert res.exit_code == 1
    assert snapshot(user) == before
    no_temporaries(tmp_path)


def test_force_over_a_real_artifact_keeps_the_users_files(tmp_path, ckpt, onnx_art):
    art = tmp_path / "art"
    shutil.copytree(onnx_art, art)
    (art / "NOTES.md").write_text("what I measured\n")
    (art / "results").mkdir()
    (art / "results" / "ppl.txt").write_text("123.4\n")
    before = snapshot(art)
    res = cli(ckpt, "--target", "onnx", "-o", art, "--force")
    one_line_error(res.output, "NOTES.md")
    assert snapshot(art) == before
    no_temporaries(tmp_path)


def test_force_replaces_exactly_an_artifacts_own_files(tmp_path, ckpt, onnx_art):
    art = tmp_path / "art"
    shutil.copytree(onnx_art, art)
    old = json.loads((art / "manifest.json").read_text())
    res = cli(ckpt, "--target", "onnx", "-o", art, "--force")
    assert res.exit_code == 0, res.output
    new = json.loads((art / "manifest.json").read_text())
    # the replaced folder holds exactly what the new manifest lists (recounted from the directory itself)
    assert set(snapshot(art)) == set(new["files"]) | {"manifest.json"}
    assert set(new["files"]) == set(old["files"])
    no_temporaries(tmp_path)
    # a file of the artifact edited by hand makes it no longer ours to delete
    (art / "report.txt").write_text("my edits\n")
    before = snapshot(art)
    one_line_error(cli(ckpt, "--target", "onnx", "-o", art, "--force").output, "nothing was touched")
    assert snapshot(art) == before


def _hardlink(src: Path, dst: Path) -> Path:
    os.link(src, dst)
    return dst


@pytest.mark.parametrize("case", ["emit-ir-onto-model", "report-onto-calib", "report-onto-hardlink-of-model",
                                  "emit-ir-npz-onto-vocab", "opt-onto-own-npz", "opt-onto-itself"])
def test_no_output_is_an_input(tmp_path, ckpt, case):
    data = tmp_path / "data.txt"
    if case.startswith("opt"):
        assert cli(ckpt, "--emit-ir", tmp_path / "m.egir").exit_code == 0
    protected = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    if case == "emit-ir-onto-model":
        res = cli(ckpt, "--emit-ir", ckpt)
    elif case == "report-onto-calib":
        res = cli(ckpt, "--target", "onnx", "-o", tmp_path / "out", "--calib-data", data, "--report", data)
    elif case == "report-onto-hardlink-of-model":
        link = _hardlink(ckpt, tmp_path / "link.pt")
        protected[link] = link.read_bytes()
        res = cli(ckpt, "--report", link)
    elif case == "emit-ir-npz-onto-vocab":
        vocab = tmp_path / "train.txt.npz"
        vocab.write_text(" ".join(WORDS[:-1]) + "\n")
        protected[vocab] = vocab.read_bytes()
        res = cli(ckpt, "--vocab", vocab, "--emit-ir", tmp_path / "train.txt")
    elif case == "opt-onto-own-npz":
        res = cli("opt", tmp_path / "m.egir", "-o", tmp_path / "m.egir.npz")
    else:
        res = cli("opt", tmp_path / "m.egir", "--passes", "dce", "-o", tmp_path / "m.egir")
    one_line_error(res.output, "input")
    assert res.exit_code != 0
    for p, b in protected.items():
        assert p.read_bytes() == b, p
    assert not (tmp_path / "out").exists()
    no_temporaries(tmp_path)


@pytest.mark.parametrize("case", ["report", "emit-ir", "emit-ir-npz", "opt", "train"])
def test_an_existing_user_file_is_replaced_only_with_force(tmp_path, ckpt, case):
    """A single-file output (--report, --emit-ir and its .npz, opt -o, train -o) that already exists is the
    user's: refused in one line and left byte for byte unless --force (then replaced)."""
    mine = tmp_path / "precious.txt"
    if case == "emit-ir-npz":
        (tmp_path / "precious.txt.npz").write_bytes(b"my notes")
    mine.write_text("my precious\n")
    if case == "opt":
        assert cli(ckpt, "--emit-ir", tmp_path / "m.egir").exit_code == 0
    before = snapshot(tmp_path)
    args = {"report": (ckpt, "--report", mine), "emit-ir": (ckpt, "--emit-ir", mine),
            "emit-ir-npz": (ckpt, "--emit-ir", tmp_path / "precious.txt"),
            "opt": ("opt", tmp_path / "m.egir", "-o", mine),
            "train": ("train", "--data-dir", REPO / "data" / "ptb", "-o", mine, "--emb", 8, "--hidden", "8",
                      "--epochs", 1, "--max-steps", 1, "--batch-size", 2, "--bptt", 5, "--train-tokens", 2000,
                      "--valid-tokens", 100, "--no-test", "--no-progress", "--ckpt-dir", tmp_path / "ck")}[case]
    res = cli(*args)
    assert res.exit_code != 0
    one_line_error(res.output, "already exists", "--force")
    assert snapshot(tmp_path) == before
    res = cli(*args, "--force")
    assert res.exit_code == 0, res.output
    assert mine.read_bytes() != b"my precious\n"


def test_train_output_onto_the_training_text_is_refused(tmp_path):
    from egru_compile.train.data import synthetic_corpus
    corpus = tmp_path / "corpus"
    synthetic_corpus(corpus, n_lines=50)
    before = snapshot(corpus)
    target = next(p for p in sorted(corpus.iterdir()) if "train" in p.name)
    res = cli("train", "--data-dir", corpus, "-o", target, "--emb", 8, "--hidden", "8", "--epochs", 1, "--no-progress")
    one_line_error(res.output, "input")
    assert snapshot(corpus) == before


def test_artifacts_follow_the_users_umask(tmp_path, ckpt):
    old = os.umask(0o022)
    try:
        res = cli(ckpt, "--target", "onnx", "-o", tmp_path / "out", "--report", tmp_path / "macs.json")
    finally:
        os.umask(old)
    assert res.exit_code == 0, res.output
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p
    assert stat.S_IMODE((tmp_path / "macs.json").stat().st_mode) == 0o644


# =========================================================================== C. half-written output
def _wait_for(pred, timeout):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig,target", [(signal.SIGTERM, "tvm"), (signal.SIGHUP, "loihi-like")])
def test_fatal_signal_during_compile_removes_temporaries(tmp_path, ckpt, sig, target):
    """SIGTERM / SIGHUP while the artifact is being written: the temporary folder is removed, one error line,
    exit 128 + signal (during a tvm compile the signal is acted on once TVM's native compiler returns)."""
    if target == "tvm":
        pytest.importorskip("tvm")
    proc = subprocess.Popen([sys.executable, "-m", "egru_compile.cli", str(ckpt), "--target", target, "-o",
                             str(tmp_path / "out")], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO),
                                                EGRU_COMPILE_CACHE="off"))   # compile for real: a window to signal
    try:
        assert _wait_for(lambda: any(".out.tmp-" in p.name for p in tmp_path.iterdir()), 240), \
            "the compile never started writing its output"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, (proc.returncode, out, err)
    one_line_error(out + err, "interrupted", signal.Signals(sig).name)
    assert {p.name for p in tmp_path.iterdir()} == {"m.pt", "data.txt"}


LEAK_THEN_INTERRUPT = r"""
import gc, os, signal
from egru_compile.guard import _run_guarded
def fn():                                   # what a signal landing inside an import leaves: an open source file
    f = open(__file__, "rb")
    f = None
    gc.collect()
    os.kill(os.getpid(), signal.SIGHUP)
_run_guarded(False, fn)
"""


def test_interrupt_that_leaks_a_file_still_prints_one_line(tmp_path):
    """CI stop 28: SIGHUP landed while Python read a module's source; the unclosed file's ResourceWarning
    became a second stderr line before ``error: interrupted (SIGHUP)``. Developer warnings stay hidden."""
    script = tmp_path / "leak.py"
    script.write_text(LEAK_THEN_INTERRUPT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                       env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert r.returncode == 128 + signal.SIGHUP, (r.returncode, r.stderr)
    one_line_error(r.stdout + r.stderr, "interrupted", "SIGHUP")


# =========================================================================== D. swap between check and load
EVIL_C = r"""
#include <stdio.h>
__attribute__((constructor)) static void pwn(void) { FILE *f = fopen(MARKER, "w"); if (f) fclose(f); }
"""


@pytest.fixture(scope="module")
def tvm_art(tmp_path_factory):
    pytest.importorskip("tvm")
    return _compiled(tmp_path_factory, "tvm")


@pytest.fixture
def evil_so(tmp_path):
    """(shared library whose constructor creates a marker file, the marker's path)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    marker = tmp_path / "PWNED"
    (tmp_path / "evil.c").write_text(EVIL_C)
    subprocess.run([cc, "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(tmp_path / "evil.so"),
                    str(tmp_path / "evil.c")], check=True)
    return tmp_path / "evil.so", marker


def test_library_swapped_after_the_check_never_runs(tmp_path, tvm_art, evil_so, monkeypatch):
    evil, marker = evil_so
    art = tmp_path / "art"
    shutil.copytree(tvm_art, art)
    import egru_compile.runtime.open as base
    real = base.read_manifest

    def check_then_swap(path, *a, **k):      # the attacker's window: after the hash check, before the load
        m = real(path, *a, **k)
        shutil.copy(evil, Path(path) / "egru_step.so")
        return m

    monkeypatch.setattr(base, "read_manifest", check_then_swap)
    from egru_compile.runtime import ArtifactError, open_artifact
    with pytest.raises(ArtifactError, match="modified after compilation"):
        open_artifact(art)
    assert not marker.exists(), "the swapped library was loaded"


def test_library_is_loaded_from_the_bytes_that_were_checked(tmp_path, tvm_art, evil_so, monkeypatch):
    """The swap comes at the last moment, as TVM is asked to load the library: the runner still runs the
    checked library (its logits equal those of the untouched artifact) and the swapped file is never loaded."""
    import tvm
    evil, marker = evil_so
    art = tmp_path / "art"
    shutil.copytree(tvm_art, art)
    from egru_compile.runtime import open_artifact
    ref = open_artifact(tvm_art).run([1, 2, 3])
    real = tvm.runtime.load_module

    def swap_then_load(path, *a, **k):       # the real loader, after the artifact's file was swapped
        shutil.copy(evil, art / "egru_step.so")
        return real(path, *a, **k)

    monkeypatch.setattr(tvm.runtime, "load_module", swap_then_load)
    out = open_artifact(art).run([1, 2, 3])
    assert not marker.exists(), "the swapped library was loaded"
    np.testing.assert_array_equal(out, ref)


# =========================================================================== G. small input, large cost
def refused_cheaply(fn, error, match) -> tuple[float, int]:
    """(seconds, peak traced bytes) of `fn`, which must raise `error` matching `match`."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(error, match=match):
            fn()
        return time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _zero_bomb_member(zf: zipfile.ZipFile, name: str, n_floats: int):
    """A deflated .npy member declaring (and holding) n_floats float32 zeros: ~1000x smaller than its data."""
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "<f4", "fortran_order": False, "shape": (n_floats,)})
    chunk = bytes(1 << 22)
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(hdr.getvalue())
        left = n_floats * 4
        while left:
            f.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))


def test_npz_bomb_beside_an_ir_file_is_refused_before_inflating(tmp_path, ckpt):
    assert cli(ckpt, "--emit-ir", tmp_path / "m.egir").exit_code == 0
    src = zipfile.ZipFile(tmp_path / "m.egir.npz")
    victim = src.namelist()[0]
    os.replace(tmp_path / "m.egir.npz", tmp_path / "orig.npz")
    with zipfile.ZipFile(tmp_path / "orig.npz") as src, \
            zipfile.ZipFile(tmp_path / "m.egir.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for n in src.namelist():
            if n != victim:
                dst.writestr(n, src.read(n))
        _zero_bomb_member(dst, victim, 50_000_000)              # 200 MB of zeros in ~0.2 MB
    assert (tmp_path / "m.egir.npz").stat().st_size < 2_000_000
    from egru_compile.errors import EgruError
    from egru_compile.frontend.ir_source import read_ir
    dt, peak = refused_cheaply(lambda: read_ir(tmp_path / "m.egir"), EgruError, "inflate")
    assert peak < 50_000_000 and dt < 5, (peak, dt)
    one_line_error(cli(tmp_path / "m.egir", "--print-ir").output, "inflate")


def test_ir_npz_still_loads_within_its_declared_budget(tmp_path, ckpt):
    """The bound refuses nothing real: an emitted IR file reads back and evaluates as the checkpoint does."""
    assert cli(ckpt, "--emit-ir", tmp_path / "m.egir").exit_code == 0
    a = json.loads(cli("eval", ckpt, "--data", tmp_path / "data.txt", "--json").output)
    b = json.loads(cli("eval", tmp_path / "m.egir", "--data", tmp_path / "data.txt", "--json").output)
    assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)


def _run_bounded(code: str, timeout: float, mem_bytes: int = 3 << 30):
    """Run `code` in a fresh interpreter with its address space capped: a case that would read forever or
    allocate gigabytes fails there instead of on the test machine."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                           preexec_fn=limit, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s")
    return r, time.perf_counter() - t0


@pytest.mark.parametrize("how", ["path", "symlink"])
def test_dev_zero_as_profile_is_refused_fast(tmp_path, how):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    prof = "/dev/zero"
    if how == "symlink":
        prof = tmp_path / "zero.toml"
        prof.symlink_to("/dev/zero")
    r, dt = _run_bounded("from egru_compile.targets.chip.profile import load_profile\n"
                         f"try:\n    load_profile({str(prof)!r})\n"
                         "except Exception as e:\n    print(type(e).__name__, e)\n", timeout=20)
    assert r.stdout.startswith("ProfileError") and "accepted" in r.stdout, (r.stdout, r.stderr[-500:])
    assert dt < 10


def test_huge_mesh_profile_is_refused_before_allocation(tmp_path):
    from egru_compile.targets.chip.profile import PROFILE_DIR, ProfileError, load_profile
    text = (PROFILE_DIR / "loihi-like.toml").read_text()
    lines = [("tiles_x = 4096" if ln.startswith("tiles_x") else "tiles_y = 4096" if ln.startswith("tiles_y") else ln)
             for ln in text.splitlines()]
    (tmp_path / "huge.toml").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(ProfileError, match="tiles"):
        load_profile(str(tmp_path / "huge.toml"))
    assert time.perf_counter() - t0 < 1


def test_config_listing_many_layers_is_refused_before_building(tmp_path):
    from egru_compile.frontend import load_source
    from egru_compile.frontend.checkpoint import FORMAT_TAG, FORMAT_VERSION, CheckpointError
    model = make_model()
    torch.save({"format": FORMAT_TAG, "version": FORMAT_VERSION,
                "config": {**model.config.to_dict(), "hidden_sizes": [8] * 50_000},
                "vocab": WORDS, "state_dict": model.state_dict(), "meta": {}}, tmp_path / "many.pt")
    dt, peak = refused_cheaply(lambda: load_source(tmp_path / "many.pt"), CheckpointError, "50000 layer")
    assert dt < 3 and peak < 50_000_000, (dt, peak)


def test_eval_on_a_fifo_of_endless_whitespace_returns(tmp_path, ckpt):
    fifo = tmp_path / "blanks"
    os.mkfifo(fifo)
    stop = threading.Event()

    def writer():
        try:
            with open(fifo, "w") as f:
                block = " \t" * 32768
                while not stop.is_set():
                    f.write(block)
        except (BrokenPipeError, OSError):
            pass
    result = {}
    threading.Thread(target=writer, daemon=True).start()
    reader = threading.Thread(target=lambda: result.setdefault(
        "res", cli("eval", ckpt, "--data", fifo, "--max-tokens", 10)), daemon=True)
    t0 = time.perf_counter()
    reader.start()
    reader.join(30)
    stop.set()
    assert not reader.is_alive(), "eval never returned"
    assert time.perf_counter() - t0 < 10
    res = result["res"]
    assert res.exit_code == 1
    one_line_error(res.output, "whitespace")
