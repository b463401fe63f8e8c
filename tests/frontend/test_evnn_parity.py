"""Parity with the authors' code: EvNN 0.2.0's own ``LanguageModel`` (``benchmarks/lm/models.py``, its C++
``egru_forward_cpu``) against egru-compile's source, onnx and tvm on the same state_dicts.

Optional: runs only when ``EVNN_SRC`` names a checkout of EvNN 0.2.0's source (the project neither ships nor
downloads EvNN). The checkout is copied to a scratch directory (``EVNN_BUILD_DIR``, reused while the source
and torch are the same; default a pytest temporary directory), its ``setup.py`` gets the C++ ABI flag of the
installed torch (EvNN hard-codes ``-D_GLIBCXX_USE_CXX11_ABI=0``; torch 2.13 uses the new ABI) — the copy only,
never the checkout — and its ``CppExtension`` is built CPU-only (nvcc hidden from PATH, CUDA_HOME unset) with
``setup.py build_ext --inplace`` into a scratch venv that sees this environment's torch through a ``.pth`` file.
Without the source, a C++ compiler, or OpenBLAS (``cblas.h``, ``-lopenblas``: Debian ``libopenblas-dev``) the
test skips with the reason.

Configurations (emb 64, 85 % of every RNN matrix and the projection pruned with ``torch.nn.utils.prune``,
EvNN's own initialisation, with biases N(0, 0.5) and kernels x3 so that ~25 % of the units fire (EvNN's init
alone fires < 0.3 %), thresholds from its Beta(mean 0.3)): no projection, layers (128, 64); projection,
layers (128, 128) -> 64, evaluated with both projection activations — identity (0.2.0's ``Decoder``) and relu
(its March-2023 ``Decoder.forward``, ``F.relu(self.projection(x))``, patched in). Text: PTB test (1,000
predictions) from ``PTB_DIR`` (default: the shared data folder) when it has it, else a synthetic corpus.
Protocols: streaming (one EvNN forward over the whole text = the whole state carried) and EvNN's ``eval.py``
chunks (bptt 70: each layer's last y handed on, c from zero) against ``evaluate(chunked=70)``.

Reference numbers are EvNN's: perplexity from its log-softmax output, activity and MACs recounted from its
per-step layer outputs (an active unit's row of ``kernel`` / ``recurrent_kernel`` costs its non-zeros; the
embedding input counts fully active). Every target must match: perplexity within 0.1 %, activity and
MACs/token equal. The table is written to ``EVNN_PARITY_TABLE`` (markdown) when set.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

EVNN_SRC = os.environ.get("EVNN_SRC")
pytestmark = pytest.mark.skipif(not EVNN_SRC, reason="EVNN_SRC (a checkout of EvNN 0.2.0's source) is not set")

TOKENS = 1001            # 1,000 predictions
BPTT = 70                # EvNN's default --bptt
CONFIGS = {              # name -> (projection, EvNN hidden_dim); layers: (128, 64) without, (128, 128) with
    "no projection (128, 64)": (False, 128),
    "projection (128, 128) -> 64": (True, 128),
}


# --------------------------------------------------------------------------------------------- build
def _skip(reason: str):
    pytest.skip(reason)


def _check_toolchain(work: Path) -> None:
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        _skip("no C++ compiler (g++ / c++) to build EvNN's CppExtension")
    probe = work / "blas_probe.cc"
    probe.write_text("#include <cblas.h>\nint main() { return 0; }\n")
    r = subprocess.run([cxx, str(probe), "-o", str(work / "blas_probe"), "-lopenblas"], capture_output=True,
                       text=True)
    if r.returncode != 0:
        _skip("no OpenBLAS (cblas.h / -lopenblas) for EvNN's CPU build (Debian: apt-get install libopenblas-dev)")


def _tree_digest(src: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file() and ".git" not in p.parts and p.suffix in (".py", ".cc", ".h", ".cu"):
            h.update(str(p.relative_to(src)).encode())
            h.update(p.read_bytes())
    h.update(torch.__version__.encode())
    return h.hexdigest()


def _hidden_path() -> str:
    """PATH without any directory holding nvcc (EvNN's setup.py builds a CUDAExtension whenever it runs)."""
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "nvcc")))


def build_evnn(src: Path, work: Path) -> Path:
    """The python of a scratch venv in which ``import evnn_pytorch`` is EvNN built from `src` (CPU only)."""
    if not (src / "setup.py").is_file() or not (src / "benchmarks" / "lm" / "models.py").is_file():
        _skip(f"EVNN_SRC={src} is not an EvNN source checkout (no setup.py / benchmarks/lm/models.py)")
    work.mkdir(parents=True, exist_ok=True)
    py = work / "venv" / "bin" / "python"
    stamp = work / "built.sha256"
    digest = _tree_digest(src)
    if py.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return py
    _check_toolchain(work)
    copy = work / "src"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns(".git", "media", "build", "*.egg-info", "*.so"))
    setup = copy / "setup.py"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    text = setup.read_text()
    assert "-D_GLIBCXX_USE_CXX11_ABI=0" in text, "EvNN's setup.py no longer has the ABI flag this test fixes"
    setup.write_text(text.replace("-D_GLIBCXX_USE_CXX11_ABI=0", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"))
    if (work / "venv").exists():
        shutil.rmtree(work / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "venv")], check=True)
    sp = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip())
    # this environment's torch / numpy / setuptools, and the built extension (in the copy)
    (sp / "_egru_project.pth").write_text("\n".join(site.getsitepackages() + [str(copy)]) + "\n")
    os.symlink(copy / "frameworks" / "pytorch", sp / "evnn_pytorch")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")}
    env.update(PATH=_hidden_path(), MAX_JOBS=env.get("MAX_JOBS", "2"))
    r = subprocess.run([str(py), "setup.py", "build_ext", "--inplace"], cwd=copy, env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        pytest.fail("EvNN's CPU build failed: " + " | ".join(tail))
    r = subprocess.run([str(py), "-c", "import evnn_pytorch, evnn_pytorch_lib; print(evnn_pytorch.__version__)"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        pytest.fail("EvNN built but does not import: " + (r.stderr.strip().splitlines() or ["?"])[-1])
    stamp.write_text(digest)
    return py


# ----------------------------------------------------------------------------------- EvNN's forward
EVNN_SCRIPT = textwrap.dedent('''
    """Run in EvNN's venv: make the pruned state_dict with EvNN's own LanguageModel, then evaluate it with
    EvNN's forward. argv: job.json (src, vocab_size, projection, hidden_dim, seed, ids, out, state_dict)."""
    import json, math, sys
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.nn.utils import prune
    job = json.load(open(sys.argv[1]))
    sys.path.insert(0, job["src"] + "/benchmarks/lm")
    import models                                     # EvNN's benchmarks/lm/models.py

    def decoder_2023(self, x):                        # EvNN commit 37192dd (March 2023), Decoder.forward
        bs, seq_len, ninp = x.shape
        if self.project:
            x = x.view(-1, ninp)
            x = F.relu(self.projection(x))
            x = x.view(bs, seq_len, self.nemb)
            x = self.variational_dropout(x, self.dropout)
        x = x.view(-1, self.nemb)
        x = self.decoder(x)
        return x

    decoder_020 = models.Decoder.forward
    torch.manual_seed(job["seed"])
    m = models.LanguageModel("egru", nlayers=2, emb_dim=64, hidden_dim=job["hidden_dim"],
                             vocab_size=job["vocab_size"], projection=job["projection"], dropout_words=0.0,
                             dropout_embedding=0.0, dropout_connect=0.0, dropout_forward=0.0, alpha=0.0,
                             beta=0.0, gamma=0.0)
    with torch.no_grad():       # EvNN's init alone fires almost nothing at emb 64 (activity < 0.3 %): scale it
        for rnn in m.rnns:
            rnn.bias.normal_(0.0, 0.5)
            rnn.recurrent_bias.normal_(0.0, 0.5)
            rnn.kernel.mul_(3.0)
            rnn.recurrent_kernel.mul_(3.0)
        if job["projection"]:
            m.decoder.projection.bias.normal_(0.0, 0.5)
    for rnn in m.rnns:
        prune.l1_unstructured(rnn, "kernel", amount=0.85)
        prune.l1_unstructured(rnn, "recurrent_kernel", amount=0.85)
    if job["projection"]:
        prune.l1_unstructured(m.decoder.projection, "weight", amount=0.85)
    m.eval()
    torch.save(m.state_dict(), job["state_dict"])
    ids = torch.tensor(job["ids"], dtype=torch.long)
    rows = {}
    for act in (["identity", "relu"] if job["projection"] else [None]):
        models.Decoder.forward = decoder_2023 if act == "relu" else decoder_020
        W = [rnn.kernel.detach().numpy() for rnn in m.rnns]                       # [in, 3h], pruned
        R = [rnn.recurrent_kernel.detach().numpy() for rnn in m.rnns]
        wrow = [np.count_nonzero(w, axis=1) for w in W]                           # fan-out per input unit
        rrow = [np.count_nonzero(r, axis=1) for r in R]
        for protocol, bptt in (("streaming", len(ids)), ("chunked", job["bptt"])):
            hidden = m.init_hidden(1)
            nll, macs, T = 0.0, 0, len(ids) - 1
            active = [0 for _ in m.rnns]
            prev = [np.zeros(r.shape[0], bool) for r in R]
            with torch.no_grad():
                for i in range(0, T, bptt):
                    n = min(bptt, T - i)
                    out, hidden, raw, _ = m(ids[i:i + n].view(1, n), hidden)
                    nll -= float(out.double()[torch.arange(n), ids[i + 1:i + 1 + n]].sum())
                    ys = [(h[0] != 0).numpy() for h in raw]                      # [n, h_l] active units
                    for t in range(n):
                        for l in range(len(ys)):
                            macs += int(wrow[l].sum()) if l == 0 else int(wrow[l][ys[l - 1][t]].sum())
                            macs += int(rrow[l][prev[l]].sum())
                            prev[l] = ys[l][t]
                    for l, y in enumerate(ys):
                        active[l] += int(y.sum())
            rows[f"{act}/{protocol}"] = {
                "perplexity": math.exp(nll / T), "macs_per_token": macs / T,
                "activity": [a / (T * r.shape[0]) for a, r in zip(active, R)]}
    json.dump(rows, open(job["out"], "w"))
''')


def evnn_reference(py: Path, src: Path, work: Path, name: str, vocab_size: int, ids, seed: int = 0) -> dict:
    projection, hidden_dim = CONFIGS[name]
    tag = "proj" if projection else "tied"
    job = {"src": str(src), "vocab_size": int(vocab_size), "projection": projection, "hidden_dim": hidden_dim,
           "seed": seed, "ids": [int(i) for i in ids], "bptt": BPTT, "out": str(work / f"evnn_{tag}.json"),
           "state_dict": str(work / f"evnn_{tag}.pt")}
    (work / f"job_{tag}.json").write_text(json.dumps(job))
    (work / "evnn_forward.py").write_text(EVNN_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH", "PYTHONPATH")}
    env["PATH"] = _hidden_path()
    r = subprocess.run([str(py), str(work / "evnn_forward.py"), str(work / f"job_{tag}.json")], env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(Path(job["out"]).read_text()), Path(job["state_dict"])


# ------------------------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def evnn_python(tmp_path_factory):
    src = Path(EVNN_SRC).resolve()
    work = Path(os.environ["EVNN_BUILD_DIR"]) if os.environ.get("EVNN_BUILD_DIR") else \
        tmp_path_factory.mktemp("evnn_build")
    return build_evnn(src, work), src


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(train file for the vocabulary, test token ids, description)."""
    from conftest import PTB_DIR as SHARED_PTB

    from egru_compile.data import Vocabulary
    PTB_DIR = Path(os.environ.get("PTB_DIR") or SHARED_PTB)
    if (PTB_DIR / "ptb.train.txt").is_file() and (PTB_DIR / "ptb.test.txt").is_file():
        train, test, what = PTB_DIR / "ptb.train.txt", PTB_DIR / "ptb.test.txt", "PTB test"
    else:
        d = tmp_path_factory.mktemp("synthetic")
        rng = np.random.default_rng(0)
        words = [f"w{i}" for i in range(400)]
        p = 1.0 / np.arange(1, 401)
        train, test, what = d / "train.txt", d / "test.txt", "synthetic text"
        train.write_text(" ".join(words) + "\n")
        test.write_text("\n".join(" ".join(rng.choice(words, 20, p=p / p.sum())) for _ in range(60)) + "\n")
    vocab = Vocabulary.from_train_file(train)
    return train, vocab, vocab.encode_file(test, max_tokens=TOKENS), what


def _ours(target: str, sd: Path, train: Path, act, ids, out_dir: Path) -> dict:
    from click.testing import CliRunner

    from egru_compile.cli import main
    from egru_compile.runtime import open_artifact
    from egru_compile.runtime.evaluate import evaluate
    flag = ["--projection-activation", act] if act else []
    if target == "source":
        path = sd
    else:
        path = out_dir / f"{sd.stem}_{act}_{target}"
        res = CliRunner().invoke(main, [str(sd), "--vocab", str(train), "--target", target, "-o", str(path),
                                        "--force", *flag])
        assert res.exit_code == 0, res.output
    kw = {"vocab_file": train, "projection_activation": act} if target == "source" else {}
    rows = {}
    for protocol, chunked in (("streaming", None), ("chunked", BPTT)):
        r = evaluate(open_artifact(path, **kw), ids, quiet=True, chunked=chunked)
        rows[protocol] = r
    return rows


def test_evnn_parity(evnn_python, corpus, tmp_path):
    pytest.importorskip("onnxruntime")
    py, src = evnn_python
    train, vocab, ids, what = corpus
    assert len(ids) == TOKENS
    targets = ["source", "onnx"] + (["tvm"] if _has_tvm() else [])
    table = [f"EvNN 0.2.0 ({src.name}) vs egru-compile, {what}, {len(ids) - 1} predictions, batch 1, zero state",
             "", "| configuration | activation | protocol | who | perplexity | activity | MACs/token |",
             "|---|---|---|---|---|---|---|"]
    failures = []
    for name in CONFIGS:
        ref, sd = evnn_reference(py, src, tmp_path, name, len(vocab), ids)
        for key, want in ref.items():
            act, protocol = key.split("/")
            act = None if act == "None" else act
            table.append(f"| {name} | {act or '-'} | {protocol} | EvNN native | {want['perplexity']:.4f} | "
                         f"{' '.join(f'{a:.4f}' for a in want['activity'])} | {want['macs_per_token']:,.1f} |")
            for target in targets:
                got = _ours(target, sd, train, act, ids, tmp_path)[protocol]
                ok = (abs(got["perplexity"] / want["perplexity"] - 1) < 1e-3
                      and got["macs_per_token"] * got["tokens"] == pytest.approx(want["macs_per_token"] * got["tokens"],
                                                                                 abs=1e-6)
                      and np.allclose(got["activity"], want["activity"], rtol=0, atol=1e-12))
                table.append(f"| {name} | {act or '-'} | {protocol} | {target} | {got['perplexity']:.4f} | "
                             f"{' '.join(f'{a:.4f}' for a in got['activity'])} | {got['macs_per_token']:,.1f} |"
                             + ("" if ok else " **differs**"))
                if not ok:
                    failures.append(f"{name} {act} {protocol} {target}")
    text = "\n".join(table) + "\n"
    print(text)
    if os.environ.get("EVNN_PARITY_TABLE"):
        Path(os.environ["EVNN_PARITY_TABLE"]).write_text(text)
    assert not failures, "\n" + text


def _has_tvm() -> bool:
    try:
        import tvm  # noqa: F401
    except ImportError:
        return False
    return True
