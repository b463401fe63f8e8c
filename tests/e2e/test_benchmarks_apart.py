"""The tests never import the benchmarks and the benchmarks never edit sys.path (they run as modules,
``python -m benchmarks.NAME``, against the installed package)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_tests_do_not_import_benchmarks():
    bench = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} | {"benchmarks"}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        bad = {n for n in _imports(path) if n.split(".")[0] in bench}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_benchmarks_do_not_edit_sys_path():
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text and "PYTHONPATH" not in text, path.name
