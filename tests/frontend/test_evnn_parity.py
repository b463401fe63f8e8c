"""Parity with the authors' code: EvNN 0.2.0's C++ ``egru_forward_cpu`` (through its own ``EGRU`` layer, and,
from a repository checkout, its own ``LanguageModel``) against egru-compile's source, onnx and tvm on the same
state_dicts.

Optional: runs only when ``EVNN_SRC`` names EvNN 0.2.0's source (the project neither ships nor vendors EvNN),
one of two kinds:

* a **checkout** of the authors' repository (Efficient-Scalable-Machine-Learning/EvNN; it has
  ``benchmarks/lm/models.py``): the reference LM is EvNN's own ``LanguageModel`` / ``Decoder`` from
  ``benchmarks/lm/models.py``, every part of it EvNN's code;
* the **PyPI source package** ``evnn-pytorch==0.2.0`` unpacked (``setup.py``, ``lib/*.cc``,
  ``frameworks/pytorch/egru.py``; no ``benchmarks/``): EvNN's code is the ``EGRU`` layer module and its C++
  ``egru_forward_cpu``, which computes every recurrent step (both layers, y and c, the events); the test's glue
  (``GLUE`` below) is the rest of the LM written as EvNN 0.2.0's ``benchmarks/lm/models.py`` does it at eval with
  its dropouts 0: ``torch.nn.Embedding`` (init uniform ±0.1), the layers constructed with its arguments
  (``batch_first``, ``use_custom_cuda=True``), each layer's last y handed on as the next chunk's state, and the
  ``Decoder`` (optional projection ``nn.Linear(h_last, emb)`` — no activation as in 0.2.0, or relu as in its
  March-2023 ``Decoder.forward`` — then ``nn.Linear(emb, vocab)`` tied to the embedding, bias 0,
  ``log_softmax``). Modules are created in the order ``LanguageModel.__init__`` creates them, so one seed gives the
  same state_dict as the checkout's ``LanguageModel``.

The source is copied to a scratch directory (``EVNN_BUILD_DIR``, reused while the source, torch and the BLAS are
the same; default a pytest temporary directory), its ``setup.py`` gets the C++ ABI flag of the installed torch
(EvNN hard-codes ``-D_GLIBCXX_USE_CXX11_ABI=0``; torch 2.13 uses the new ABI) — the copy only, never the source —
and its ``CppExtension`` is built CPU-only (nvcc hidden from PATH, CUDA_HOME unset) with
``setup.py build_ext --inplace`` in a scratch venv that sees this environment's torch through a ``.pth`` file.
BLAS (EvNN links ``-lopenblas`` and includes ``cblas.h``): the system's OpenBLAS when ``cblas.h`` and
``-lopenblas`` link (Debian ``libopenblas-dev``), else PyPI's ``scipy-openblas32`` when it imports (installed, or
``pip install --no-deps --target DIR scipy-openblas32==0.3.34.481.3`` and ``PYTHONPATH=DIR``): its symbols are
prefixed, so the build gets ``-I<its include> -Dcblas_sgemm=scipy_cblas_sgemm -Dcblas_dgemm=scipy_cblas_dgemm``
(EvNN's ``lib/blas.h`` uses only those two) through ``CPPFLAGS``, and ``-lopenblas`` finds a scratch symlink to
``libscipy_openblas.so`` (rpath to its folder) — EvNN's sources and its setup.py's library list stay as they are.
Without the source, a C++ compiler, or either BLAS the test skips with the reason; the table names the BLAS used.

Configurations (emb 64, 85 % of every RNN matrix and the projection pruned with ``torch.nn.utils.prune``,
EvNN's own initialisation, with biases N(0, 0.5) and kernels x3 so that ~25 % of the units fire (EvNN's init
alone fires < 0.3 %), thresholds from its Beta(mean 0.3)): no projection, layers (128, 64); projection,
layers (128, 128) -> 64, evaluated with both projection activations — identity (0.2.0's ``Decoder``) and relu
(its March-2023 ``Decoder.forward``, ``F.relu(self.projection(x))``: patched in for a checkout, the glue's
``activation`` for the source package). Text: PTB test (1,000 predictions) from ``PTB_DIR`` (default: the shared
data folder) when it has it, else a synthetic corpus. Protocols: streaming (one EvNN forward over the whole text
= the whole state carried) and EvNN's ``eval.py`` chunks (bptt 70: each layer's last y handed on, c from zero)
against ``evaluate(chunked=70)``.

Reference numbers are EvNN's: perplexity from the log-softmax output of the reference LM, activity and MACs
recounted from EvNN's per-step layer outputs (an active unit's row of ``kernel`` / ``recurrent_kernel`` costs its
non-zeros; the embedding input counts fully active). Every target must match: perplexity within 0.1 %, activity
and MACs/token equal. The table is written to ``EVNN_PARITY_TABLE`` (markdown) when set.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
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
pytestmark = pytest.mark.skipif(not EVNN_SRC, reason="EVNN_SRC (EvNN 0.2.0's source: a checkout of the authors' "
                                                     "repository or PyPI's evnn-pytorch sdist unpacked) is not set")

TOKENS = 1001            # 1,000 predictions
BPTT = 70                # EvNN's default --bptt
CONFIGS = {              # name -> (projection, EvNN hidden_dim); layers: (128, 64) without, (128, 128) with
    "no projection (128, 64)": (False, 128),
    "projection (128, 128) → 64": (True, 128),
}
SCIPY_OPENBLAS = "scipy_openblas32"


# --------------------------------------------------------------------------------------------- build
def _skip(reason: str):
    pytest.skip(reason)


def source_kind(src: Path) -> str:
    """'checkout' (the authors' repository: EvNN's LanguageModel) or 'sdist' (PyPI's evnn-pytorch: the layer)."""
    layer = [src / "setup.py", src / "frameworks" / "pytorch" / "egru.py", src / "lib" / "egru_forward_cpu.cc"]
    if not all(p.is_file() for p in layer):
        _skip(f"EVNN_SRC={src} is not EvNN's source (no setup.py / frameworks/pytorch/egru.py / "
              "lib/egru_forward_cpu.cc)")
    return "checkout" if (src / "benchmarks" / "lm" / "models.py").is_file() else "sdist"


def describe_source(src: Path, kind: str) -> str:
    m = re.search(r"VERSION\s*=\s*['\"]([^'\"]+)", (src / "setup.py").read_text())
    version = m.group(1) if m else "?"
    if kind == "sdist":
        return f"EvNN {version}, PyPI source package evnn-pytorch ({src.name})"
    commit = ""
    if (src / ".git").exists():
        r = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commit = f" commit {r.stdout.strip()}" if r.returncode == 0 and r.stdout.strip() else ""
    return f"EvNN {version}, repository checkout ({src.name}{commit})"


def _cxx() -> str:
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        _skip("no C++ compiler (g++ / c++) to build EvNN's CppExtension")
    return cxx


BLAS_PROBE = ("#include <cblas.h>\nint main() { float a = 1, b = 1, c = 0;\n"
              "  cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.f, &a, 1, &b, 1, 0.f, &c, 1);\n"
              "  return c == 1.f ? 0 : 1; }\n")


def find_blas(work: Path) -> dict:
    """The BLAS EvNN's CPU build links: system OpenBLAS, else scipy-openblas32 (see the module docstring).
    {"name": for the table, "env": extra build environment (CPPFLAGS, LDFLAGS)}."""
    cxx = _cxx()
    work.mkdir(parents=True, exist_ok=True)
    probe = work / "blas_probe.cc"
    probe.write_text(BLAS_PROBE)
    r = subprocess.run([cxx, str(probe), "-o", str(work / "blas_probe"), "-lopenblas"], capture_output=True,
                       text=True)
    if r.returncode == 0:
        return {"name": "system OpenBLAS (cblas.h, -lopenblas)", "env": {}}
    spec = importlib.util.find_spec(SCIPY_OPENBLAS)
    if spec is None or not spec.origin:
        _skip("no OpenBLAS for EvNN's CPU build: no system cblas.h / -lopenblas (Debian: apt-get install "
              "libopenblas-dev) and scipy-openblas32 does not import (pip install --no-deps --target DIR "
              "scipy-openblas32==0.3.34.481.3, then PYTHONPATH=DIR)")
    pkg = Path(spec.origin).resolve().parent
    libs = sorted((pkg / "lib").glob("libscipy_openblas*.so"))
    if not (pkg / "include" / "cblas.h").is_file() or not libs:
        _skip(f"scipy-openblas32 at {pkg} has no include/cblas.h or lib/libscipy_openblas*.so")
    from importlib.metadata import PackageNotFoundError, version
    try:
        ver = version("scipy-openblas32")
    except PackageNotFoundError:
        ver = "?"
    link = work / "blaslib"                 # -lopenblas (EvNN's setup.py) -> scipy-openblas32's library
    link.mkdir(exist_ok=True)
    (link / "libopenblas.so").unlink(missing_ok=True)
    (link / "libopenblas.so").symlink_to(libs[0])
    env = {"CPPFLAGS": f"-I{pkg / 'include'} -Dcblas_sgemm=scipy_cblas_sgemm -Dcblas_dgemm=scipy_cblas_dgemm",
           "LDFLAGS": f"-L{link} -Wl,-rpath,{libs[0].parent}"}
    r = subprocess.run([cxx, *env["CPPFLAGS"].split(), str(probe), "-o", str(work / "blas_probe"),
                        *env["LDFLAGS"].split(), "-lopenblas"], capture_output=True, text=True)
    if r.returncode != 0 or subprocess.run([str(work / "blas_probe")]).returncode != 0:
        _skip(f"scipy-openblas32 at {pkg} does not link / run a cblas_sgemm probe: "
              + " | ".join((r.stderr or r.stdout).strip().splitlines()[-2:]))
    return {"name": f"scipy-openblas32 {ver} (PyPI; symbols scipy_cblas_*)", "env": env, "lib": str(libs[0])}


def _tree_digest(src: Path, blas: dict) -> str:
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file() and ".git" not in p.parts and p.suffix in (".py", ".cc", ".h", ".cu"):
            h.update(str(p.relative_to(src)).encode())
            h.update(p.read_bytes())
    h.update(torch.__version__.encode())
    h.update(json.dumps(blas, sort_keys=True).encode())
    return h.hexdigest()


def _hidden_path() -> str:
    """PATH without any directory holding nvcc (EvNN's setup.py builds a CUDAExtension whenever it runs)."""
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "nvcc")))


def build_evnn(src: Path, work: Path) -> tuple[Path, str]:
    """(the python of a scratch venv in which ``import evnn_pytorch`` is EvNN built from `src` (CPU only), the
    BLAS it links)."""
    source_kind(src)
    work.mkdir(parents=True, exist_ok=True)
    blas = find_blas(work)
    py = work / "venv" / "bin" / "python"
    stamp = work / "built.sha256"
    digest = _tree_digest(src, blas)
    if py.is_file() and stamp.is_file() and stamp.read_text() == digest:
        return py, blas["name"]
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
    for k, v in blas["env"].items():
        env[k] = f"{env[k]} {v}" if env.get(k) else v
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
    return py, blas["name"]


# ----------------------------------------------------------------------------------- EvNN's forward
# The source package's reference LM: EvNN's EGRU layer (evnn_pytorch.EGRU -> C++ egru_forward_cpu) in the test's
# glue, written as EvNN 0.2.0's benchmarks/lm/models.py (LanguageModel, Decoder) at eval with every dropout 0.
GLUE = '''
    import evnn_pytorch as evnn                      # EvNN's layer: frameworks/pytorch/egru.py + its C++

    class Decoder(nn.Module):                         # glue: models.py's Decoder (0.2.0; relu: 37192dd)
        def __init__(self, ninp, ntokens, project, nemb):
            super().__init__()
            self.nemb, self.project, self.activation = nemb, project, None
            self.projection = nn.Linear(ninp, nemb) if project else nn.Identity()
            self.decoder = nn.Linear(self.nemb, ntokens)
            nn.init.zeros_(self.decoder.bias)

        def forward(self, x):
            bs, seq_len, ninp = x.shape
            if self.project:
                x = x.view(-1, ninp)
                x = self.projection(x)               # 0.2.0: no activation
                if self.activation == "relu":        # March 2023: F.relu(self.projection(x))
                    x = F.relu(x)
                x = x.view(bs, seq_len, self.nemb)
            x = x.view(-1, self.nemb)
            return self.decoder(x)

    class LanguageModel(nn.Module):                   # glue: models.py's LanguageModel("egru", ...), eval
        def __init__(self, nlayers, emb_dim, hidden_dim, vocab_size, projection):
            super().__init__()
            self.embeddings = nn.Embedding(vocab_size, emb_dim)
            nn.init.uniform_(self.embeddings.weight, -0.1, 0.1)
            self.decoder = Decoder(hidden_dim if projection else emb_dim, vocab_size, projection, emb_dim)
            self.decoder.decoder.weight = self.embeddings.weight          # tied
            self.rnns = nn.ModuleList([evnn.EGRU(
                input_size=emb_dim if l == 0 else hidden_dim,
                hidden_size=emb_dim if l == nlayers - 1 and not projection else hidden_dim,
                batch_first=True, dropout=0.0, zoneout=0.0, return_state_sequence=False, use_custom_cuda=True)
                for l in range(nlayers)])

        def init_hidden(self, batch_size):
            return [None for _ in self.rnns]

        def forward(self, inputs, state):
            hiddens = self.embeddings(inputs)
            new_states, raw_hiddens = [], []
            for l, rnn in enumerate(self.rnns):
                hiddens, _ = rnn(hiddens, state[l])  # EvNN: egru_forward_cpu over the whole chunk
                raw_hiddens.append(hiddens)
                new_states.append(torch.unsqueeze(hiddens[:, -1], dim=0))    # only the last y handed on
            decoded = self.decoder(hiddens.contiguous())
            return F.log_softmax(decoded, dim=1), new_states, raw_hiddens, None

    def make_model(job):
        return LanguageModel(nlayers=2, emb_dim=64, hidden_dim=job["hidden_dim"], vocab_size=job["vocab_size"],
                             projection=job["projection"])

    def set_activation(m, act):
        m.decoder.activation = act
'''

CHECKOUT = '''
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

    def make_model(job):
        return models.LanguageModel("egru", nlayers=2, emb_dim=64, hidden_dim=job["hidden_dim"],
                                    vocab_size=job["vocab_size"], projection=job["projection"], dropout_words=0.0,
                                    dropout_embedding=0.0, dropout_connect=0.0, dropout_forward=0.0, alpha=0.0,
                                    beta=0.0, gamma=0.0)

    def set_activation(m, act):
        models.Decoder.forward = decoder_2023 if act == "relu" else decoder_020
'''

EVNN_SCRIPT = '''
    """Run in EvNN's venv: make the pruned state_dict with the reference LM (EvNN's LanguageModel from a checkout,
    or EvNN's EGRU layer in the test's glue for the source package), then evaluate it with that LM's forward.
    argv: job.json (src, kind, vocab_size, projection, hidden_dim, seed, ids, bptt, out, state_dict)."""
    import json, math, sys
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn.utils import prune
    job = json.load(open(sys.argv[1]))
    if job["kind"] == "checkout":
''' + textwrap.indent(textwrap.dedent(CHECKOUT), " " * 8) + '''
    else:
''' + textwrap.indent(textwrap.dedent(GLUE), " " * 8) + '''
    torch.manual_seed(job["seed"])
    m = make_model(job)
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
        set_activation(m, act)
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
'''
EVNN_SCRIPT = textwrap.dedent(EVNN_SCRIPT)


def evnn_reference(py: Path, src: Path, kind: str, work: Path, name: str, vocab_size: int, ids,
                   seed: int = 0) -> tuple[dict, Path]:
    projection, hidden_dim = CONFIGS[name]
    tag = "proj" if projection else "tied"
    job = {"src": str(src), "kind": kind, "vocab_size": int(vocab_size), "projection": projection,
           "hidden_dim": hidden_dim, "seed": seed, "ids": [int(i) for i in ids], "bptt": BPTT,
           "out": str(work / f"evnn_{tag}.json"), "state_dict": str(work / f"evnn_{tag}.pt")}
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
    kind = source_kind(src)
    work = Path(os.environ["EVNN_BUILD_DIR"]) if os.environ.get("EVNN_BUILD_DIR") else \
        tmp_path_factory.mktemp("evnn_build")
    py, blas = build_evnn(src, work)
    return py, src, kind, blas


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
    """{protocol: evaluate()'s result} of one target compiled once from the state_dict `sd`."""
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
        rows[protocol] = evaluate(open_artifact(path, **kw), ids, quiet=True, chunked=chunked)
    return rows


def _agrees(got: dict, want: dict) -> bool:
    return (abs(got["perplexity"] / want["perplexity"] - 1) < 1e-3
            and got["macs_per_token"] * got["tokens"] == pytest.approx(want["macs_per_token"] * got["tokens"],
                                                                       abs=1e-6)
            and np.allclose(got["activity"], want["activity"], rtol=0, atol=1e-12))


def test_evnn_parity(evnn_python, corpus, tmp_path):
    pytest.importorskip("onnxruntime")
    py, src, kind, blas = evnn_python
    train, vocab, ids, what = corpus
    assert len(ids) == TOKENS
    targets = ["source", "onnx"] + (["tvm"] if _has_tvm() else [])
    ref_lm = ("EvNN's own LanguageModel (benchmarks/lm/models.py)" if kind == "checkout" else
              "EvNN's EGRU layer (frameworks/pytorch/egru.py, C++ egru_forward_cpu: every recurrent step) in the "
              "test's glue (nn.Embedding, tied Decoder as EvNN's models.py)")
    table = [f"{describe_source(src, kind)}; torch {torch.__version__}; BLAS: {blas}.",
             f"Reference LM: {ref_lm}. {what}, {len(ids) - 1} predictions, batch 1, zero state.", "",
             "| configuration | activation | protocol | EvNN native | " + " | ".join(targets)
             + " | activity (all) | MACs/token (all) |",
             "|---" * (6 + len(targets)) + "|"]
    failures = []
    for name in CONFIGS:
        ref, sd = evnn_reference(py, src, kind, tmp_path, name, len(vocab), ids)
        acts = sorted({key.split("/")[0] for key in ref}, key=lambda a: (a != "None", a))
        for act_s in acts:
            act = None if act_s == "None" else act_s
            ours = {target: _ours(target, sd, train, act, ids, tmp_path) for target in targets}
            for protocol in ("streaming", "chunked"):
                want = ref[f"{act_s}/{protocol}"]
                cells = []
                for target in targets:
                    got = ours[target][protocol]
                    cell = f"{got['perplexity']:.4f}"
                    if not _agrees(got, want):
                        failures.append(f"{name} {act} {protocol} {target}")
                        cell += (f" **differs** (activity {' / '.join(f'{a:.4f}' for a in got['activity'])}, "
                                 f"MACs {got['macs_per_token']:,.1f})")
                    cells.append(cell)
                table.append(f"| {name} | {act or '-'} | {protocol} | {want['perplexity']:.4f} | "
                             + " | ".join(cells)
                             + f" | {' / '.join(f'{a:.4f}' for a in want['activity'])} | "
                             f"{want['macs_per_token']:,.1f} |")
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
