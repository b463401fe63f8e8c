"""The per-pass FileCheck tests (tests/lit/<pass>.ir) under LLVM's ``lit`` runner: every registered pass has
one, the suite passes, and it fails when a CHECK line no longer holds (a CHECK-NEXT line taken out of a chain,
the pass swapped for another). Each case's IR before and after its pass also runs on the reference interpreter
with the same outputs (the pass keeps the step's meaning)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from egru_compile.ir import run_graph
from egru_compile.ir.parser import parse_ir
from egru_compile.passes import PASS_REGISTRY, PassManager

LIT_DIR = Path(__file__).resolve().parents[1] / "lit"
LIT = Path(sys.executable).with_name("lit")
RUN = re.compile(r"^// RUN: egru-compile opt %s --passes (\S+) --split-input-file \| filecheck %s$", re.M)
#: passes whose output the interpreter must reproduce bit for bit (the others reassociate sums)
EXACT = {"const-fold", "fuse-cell", "dce", "count-macs", "fold-embedding", "weight-precision"}

needs_lit = pytest.mark.skipif(not LIT.exists() or not LIT.with_name("filecheck").exists(),
                               reason="lit / filecheck not installed (pip install -e '.[test]')")


def run_lit(*paths, exec_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LIT), "-v", "--param", f"exec_root={exec_root}", *map(str, paths)],
                          capture_output=True, text=True, timeout=300)


def test_every_registered_pass_has_a_lit_file():
    """The passes come from the registry (a new pass without a lit file fails here); each file's RUN line
    runs its own pass."""
    files = {p.stem: p for p in LIT_DIR.glob("*.ir")}
    assert sorted(set(PASS_REGISTRY) - set(files)) == [], "registered passes without tests/lit/<pass>.ir"
    for name, path in files.items():
        run = RUN.search(path.read_text())
        assert run and run.group(1) == name, f"{path.name}: the RUN line must run --passes {name}"


@needs_lit
def test_lit_suite_passes(tmp_path):
    r = run_lit(LIT_DIR, exec_root=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(list(LIT_DIR.glob("*.ir")))
    assert re.search(rf"Passed\s*:\s*{n}\b", r.stdout), r.stdout


@needs_lit
def test_lit_fails_when_a_check_line_no_longer_holds(tmp_path):
    suite = tmp_path / "lit"
    shutil.copytree(LIT_DIR, suite, ignore=shutil.ignore_patterns("*.ir"))
    text = (LIT_DIR / "event-gating.ir").read_text()
    # a CHECK-NEXT line taken out of a chain: the line after it is then no longer the next line
    line = "// CHECK-NEXT:    %b = const\n"
    assert text.count(line) == 1
    (suite / "removed-check-line.ir").write_text(text.replace(line, ""))
    # the same checks on the IR as it is (the pass left out of the RUN line)
    (suite / "no-pass.ir").write_text(text.replace("--passes event-gating ", ""))
    r = run_lit(suite, exec_root=tmp_path / "out")
    assert r.returncode != 0
    assert "FAIL: egru-compile passes :: removed-check-line.ir" in r.stdout, r.stdout
    assert "FAIL: egru-compile passes :: no-pass.ir" in r.stdout, r.stdout
    assert "Couldn't match \"%gx = sparse_matvec(%x, %w) : tensor<1x2xf32>\"" in r.stdout, r.stdout


def _cases():
    for path in sorted(LIT_DIR.glob("*.ir")):
        if path.stem == "quantize-int8":          # rounds the weights by design: its values are not compared
            continue
        for k, chunk in enumerate(path.read_text().split("// -----\n")):
            yield pytest.param(path.stem, chunk[chunk.index("// egru-ir v1\n"):], id=f"{path.stem}-{k}")


def _random_inputs(graph, rng):
    xs = []
    for v in graph.inputs:
        if v.type.dtype in ("i64", "i32"):
            xs.append(rng.integers(0, 2, v.type.shape).astype(v.type.np_dtype))
        elif v.meta.get("kind") == "y":                      # an event tensor: about half the units active
            a = rng.uniform(0.1, 1.0, v.type.shape) * (rng.random(v.type.shape) < 0.5)
            xs.append(a.astype(np.float32))
        else:
            xs.append(rng.uniform(-1.0, 1.0, v.type.shape).astype(np.float32))
    return xs


@pytest.mark.parametrize("name, text", list(_cases()))
def test_lit_case_keeps_the_step_meaning(name, text):
    """The case's input and the pass's output give the same outputs on the reference interpreter
    (quantize-int8 changes values by design: not compared)."""
    before = parse_ir(text, None, f"{name}.ir").graph
    after = PassManager([name]).run(before.clone())
    rng = np.random.default_rng(0)
    for _ in range(5):
        xs = _random_inputs(before, rng)
        for a, b in zip(run_graph(before, xs), run_graph(after, xs), strict=True):
            diff = np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0)
            assert diff <= (0.0 if name in EXACT else 1e-5), (name, diff)


def test_split_input_file_errors(tmp_path):
    """``opt --split-input-file``: a case that does not start with the IR header, or -o with it, is a one-line
    error with a non-zero exit and nothing written."""
    from click.testing import CliRunner

    from egru_compile.cli import main
    text = (LIT_DIR / "dce.ir").read_text()
    bad = tmp_path / "bad.ir"
    bad.write_text(text + "// -----\n%x = const dense<[1.0]> : tensor<1xf32>\n")
    r = CliRunner().invoke(main, ["opt", str(bad), "--passes", "dce", "--split-input-file"])
    assert r.exit_code != 0 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
    assert "case 2" in r.output
    r = CliRunner().invoke(main, ["opt", str(tmp_path / "bad.ir"), "--split-input-file", "-o", str(tmp_path / "o.ir")])
    assert r.exit_code != 0 and r.output.startswith("error: ") and not (tmp_path / "o.ir").exists(), r.output
