"""The package's layers point down only and no modules import each other in a loop: the import-linter contracts
in pyproject.toml ``[tool.importlinter]`` (`lint-imports`), and a back-edge planted in a copy of the package
breaks them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter not installed (pip install -e '.[test]')")


def lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_contracts_kept():
    r = lint(ROOT, ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    for contract in ("layers point down", "targets layered", "no import cycle"):
        assert f"{contract} KEPT" in r.stdout, r.stdout


@pytest.mark.parametrize("module, line, contract", [
    # the IR importing the runtime: a layer pointing up
    ("ir/graph.py", "from ..runtime import open_artifact\n", "layers point down"),
    # the TVM target importing the ONNX one: across the target layers
    ("targets/tvm/layout.py", "from ..onnx import runner\n", "targets layered"),
    # a loop inside one layer: ir.types -> ir.graph -> ir.types
    ("ir/types.py", "from . import graph\n", "no import cycle"),
])
def test_planted_back_edge_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "egru_compile", tmp_path / "egru_compile",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    f = tmp_path / "egru_compile" / module
    f.write_text(line + f.read_text())
    r = lint(tmp_path, tmp_path)
    assert r.returncode != 0
    assert f"{contract} BROKEN" in r.stdout, r.stdout
