"""The documentation's commands run: every ```sh / ```bash / ```python block of README.md and docs/*.md, page by
page.

Each page runs in its own temporary working directory that looks like the repository root to its commands:
``examples/`` and ``benchmarks/`` are copied (commands write next to the example model and into
``benchmarks/results``), ``data/`` (the shipped Penn Treebank) and ``egru_compile/`` are linked, and the virtual
environment's ``bin`` comes first on PATH (``egru-compile``, ``python``). A page's blocks run in order in that
directory, each with ``bash -e -o pipefail`` (python blocks: the environment's python), so a later block may use
what an earlier one wrote — as a reader following the page would.

A block is not run when its fence says why, visibly in the Markdown source::

    ```sh {skip-test: slow, TVM compile ~40 s}

Kinds: ``slow`` (runs when ``EGRU_DOCS_ALL=1``; kept out of the default suite for its time budget),
``benchmark`` and ``training`` (minutes to hours; never run here), ``setup`` (``make ...``: creates a virtual
environment; checked by hand on a fresh clone), ``suite`` (``make test`` itself),
``placeholder`` (a pattern with the reader's own file names). Every skipped block is reported with its reason
(``pytest -ra``). Relative links between the pages must resolve, and README.md stays ≤ 200 lines.
``EGRU_DOCS_TIMES=FILE`` appends each block's CPU and wall seconds to FILE (the budget: ≤ 60 s of CPU for all
blocks run by default).
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"\{\s*skip-test:\s*([a-z-]+)\s*(?:,\s*([^}]*))?\}")
KINDS = {"slow", "benchmark", "training", "setup", "suite", "placeholder"}
BLOCK_TIMEOUT_S = 600


def blocks(page: Path) -> list[dict]:
    """The fenced blocks of a Markdown page: language, skip kind and reason, first line number, text."""
    out, cur = [], None
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if cur is None:
            if line.startswith("```"):
                info = line[3:].strip()
                s = SKIP.search(info)
                cur = {"lang": "" if info.startswith("{") else (info.split() or [""])[0], "line": n, "lines": [],
                       "skip": s.group(1) if s else None, "why": (s.group(2) or "").strip() if s else ""}
        elif line.strip() == "```":
            cur["text"] = "\n".join(cur.pop("lines")) + "\n"
            out.append(cur)
            cur = None
        else:
            cur["lines"].append(line)
    assert cur is None, f"{page.name}: unclosed ``` block from line {cur['line']}"
    return out


RUN = {"sh": "bash", "bash": "bash", "shell": "bash", "python": "python"}


def runnable_blocks():
    for page in PAGES:
        for b in blocks(page):
            if b["lang"] in RUN:
                yield pytest.param(page, b, id=f"{page.relative_to(ROOT)}:{b['line']}")


def _workdir(tmp_path_factory, page: Path, cache={}) -> Path:
    if page not in cache:
        d = tmp_path_factory.mktemp(page.stem.lower())
        shutil.copytree(ROOT / "examples", d / "examples", ignore=shutil.ignore_patterns("run", "sweep*", "out"))
        shutil.copytree(ROOT / "benchmarks", d / "benchmarks")      # benchmarks write into their results/
        for name in ("data", "egru_compile", "tests", "constraints.txt", "pyproject.toml", "Makefile"):
            (d / name).symlink_to(ROOT / name)
        cache[page] = d
    return cache[page]


@pytest.mark.parametrize("page,block", list(runnable_blocks()))
def test_doc_block_runs(page, block, tmp_path_factory):
    if block["skip"]:
        assert block["skip"] in KINDS, f"unknown skip-test kind {block['skip']!r} (known: {sorted(KINDS)})"
        if not (block["skip"] == "slow" and os.environ.get("EGRU_DOCS_ALL") == "1"):
            pytest.skip(f"skip-test: {block['skip']}" + (f" ({block['why']})" if block["why"] else ""))
    cwd = _workdir(tmp_path_factory, page)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               TVM_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("EGRU_PTB", None)
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    if RUN[block["lang"]] == "bash":
        cmd, stdin = ["bash", "-e", "-o", "pipefail", "-c", block["text"]], None
    else:
        cmd, stdin = [sys.executable, "-"], block["text"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, input=stdin, capture_output=True,
                          timeout=BLOCK_TIMEOUT_S)
    r1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    if os.environ.get("EGRU_DOCS_TIMES"):           # CPU and wall seconds per block, for the time budget
        cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        with open(os.environ["EGRU_DOCS_TIMES"], "a") as f:
            f.write(f"{page.relative_to(ROOT)}:{block['line']}\tcpu {cpu:.1f} s\twall {wall:.1f} s\n")
    assert proc.returncode == 0, (f"{page.relative_to(ROOT)} line {block['line']}: exit {proc.returncode}\n"
                                  f"{block['text']}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                                  f"{proc.stderr[-3000:]}")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= 200, f"README.md has {n} lines (≤ 200: detail belongs in docs/)"


LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue                                        # http(s):, mailto: — not checked (no network)
        if not (page.parent / target).exists():
            missing.append(os.path.relpath(page.parent / target, ROOT))
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"

def test_every_block_is_run_or_says_why():
    """The convention itself: a fenced block's skip kind is one of KINDS, so nothing is skipped silently."""
    for page in PAGES:
        for b in blocks(page):
            assert b["skip"] in (None, *KINDS), f"{page.name}:{b['line']}: skip-test kind {b['skip']!r}"
            if b["skip"] and b["lang"] not in RUN:
                pytest.fail(f"{page.name}:{b['line']}: skip-test on a {b['lang'] or 'plain'} block (never run)")
