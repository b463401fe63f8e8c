"""The documentation's commands run: every ```sh / ```bash / ```python block of README.md and docs/*.md, page by
page.

Each page runs in its own temporary working directory that looks like the repository root to its commands:
``examples/`` and ``benchmarks/`` are copied (commands write next to the example model and into
``benchmarks/results`` of the copy; the repository's own ``examples/`` and ``benchmarks/results`` are checked
unchanged after every block), ``data/`` (the shipped Penn Treebank) and ``egru_compile/`` are linked, ``.venv``
links the running virtual environment (``.venv/bin/python`` as the pages write it), and its ``bin`` comes first
on PATH (``egru-compile``, ``python``). A page's blocks run in order in that
directory, each with ``bash -e -o pipefail`` (python blocks: the environment's python), so a later block may use
what an earlier one wrote — as a reader following the page would.

A block is not run when its fence says why, visibly in the Markdown source::

    ```sh {skip-test: slow, TVM compile ~40 s}

Kinds: ``slow`` (runs when ``EGRU_DOCS_ALL=1``; kept out of the default suite for its time budget),
``benchmark`` (the full benchmark runs, tens of minutes: run when ``EGRU_DOCS_BENCH=1``, which runs *only* the
benchmark blocks — `.ci/run` has a step for it — so a benchmark block must not need an earlier block's output;
without the compile cache, as the benchmarks document their compile times), ``training`` (the example's
whole recipe, hours; never run here), ``setup`` (``make ...``: creates a virtual environment; checked by hand
on a fresh clone), ``suite`` (``make test`` itself), ``placeholder`` (a pattern with the reader's own file
names or checkout). Every skipped block is reported with its reason (``pytest -ra``). Relative links between
the pages must resolve, and README.md stays ≤ 200 lines. ``EGRU_DOCS_TIMES=FILE`` appends each block's CPU and
wall seconds to FILE (the budget: ≤ 60 s of CPU for all blocks run by default).
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
BENCH_TIMEOUT_S = 3600          # a benchmark block (all its commands); CI's whole limit is 90 min


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
        if sys.prefix != sys.base_prefix:                            # the pages write .venv/bin/python
            (d / ".venv").symlink_to(Path(sys.prefix))
        cache[page] = d
    return cache[page]


def _runs(block) -> bool:
    """Whether this session runs the block: EGRU_DOCS_BENCH=1 runs the benchmark blocks only; otherwise the
    unmarked ones, and the slow ones too with EGRU_DOCS_ALL=1."""
    if os.environ.get("EGRU_DOCS_BENCH") == "1":
        return block["skip"] == "benchmark"
    return not block["skip"] or (block["skip"] == "slow" and os.environ.get("EGRU_DOCS_ALL") == "1")


def _user_tree() -> dict:
    """(size, mtime) of every file a doc block could write by mistake into the repository itself instead of
    its working directory: the example and the benchmark results."""
    out = {}
    for top in (ROOT / "examples", ROOT / "benchmarks" / "results"):
        for f in top.rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                st = f.stat()
                out[str(f.relative_to(ROOT))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("page,block", list(runnable_blocks()))
def test_doc_block_runs(page, block, tmp_path_factory):
    assert block["skip"] in (None, *KINDS), f"unknown skip-test kind {block['skip']!r} (known: {sorted(KINDS)})"
    if not _runs(block):
        if os.environ.get("EGRU_DOCS_BENCH") == "1":
            pytest.skip("EGRU_DOCS_BENCH=1 runs only the benchmark blocks")
        pytest.skip(f"skip-test: {block['skip']}" + (f" ({block['why']})" if block["why"] else ""))
    cwd = _workdir(tmp_path_factory, page)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               TVM_NUM_THREADS="1", OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env.pop("EGRU_PTB", None)
    if block["skip"] == "benchmark":
        env.pop("EGRU_COMPILE_CACHE", None)           # benchmarks time real compiles, as their tables say
    before = _user_tree()
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    if RUN[block["lang"]] == "bash":
        cmd, stdin = ["bash", "-e", "-o", "pipefail", "-c", block["text"]], None
    else:
        cmd, stdin = [sys.executable, "-"], block["text"]
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, input=stdin, capture_output=True,
                          timeout=BENCH_TIMEOUT_S if block["skip"] == "benchmark" else BLOCK_TIMEOUT_S)
    r1, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    if os.environ.get("EGRU_DOCS_TIMES"):           # CPU and wall seconds per block, for the time budget
        cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
        with open(os.environ["EGRU_DOCS_TIMES"], "a") as f:
            f.write(f"{page.relative_to(ROOT)}:{block['line']}\tcpu {cpu:.1f} s\twall {wall:.1f} s\n")
    assert proc.returncode == 0, (f"{page.relative_to(ROOT)} line {block['line']}: exit {proc.returncode}\n"
                                  f"{block['text']}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n"
                                  f"{proc.stderr[-3000:]}")
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    after = _user_tree()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{page.relative_to(ROOT)} line {block['line']} wrote into the repository: {changed}"


def test_blocks_write_into_their_working_directory():
    """A doc block that writes to a fixed absolute path (`-o /tmp/x`) fails on the second run of the same machine
    ("output directory already exists") and can collide with another user's files: blocks write relative paths
    (the doc test runs each page in its own folder)."""
    bad = [f"{p.relative_to(ROOT)}:{b['line']}" for p in PAGES for b in blocks(p)
           if b["lang"] in RUN and re.search(r"(-o|--out|--ckpt-dir|--out-dir)[ =]+/", b["text"])]
    assert not bad, f"blocks writing to an absolute path: {bad}"


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


def _train_steps(script: str, subst: dict) -> tuple[list[str], list[list[str]]]:
    """(COMMON's flags, each `-m egru_compile.train $COMMON ...` line's further flags) of a shell text, with
    `subst` applied, the smoke limits ($LIMIT) and --force (run.sh regenerates the shipped example's files; the
    doc's block writes new ones) dropped and path values (--ckpt-dir, -o, --resume) cut to their file name: what is
    left is the recipe itself."""
    import shlex
    text = script.replace("\\\n", " ")
    for k, v in subst.items():
        text = text.replace(k, v)
    common = shlex.split(re.search(r'^COMMON="(.*?)"', text, re.S | re.M).group(1))

    def norm(flags):
        out, it = [], iter(flags)
        for f in it:
            if f in ("--ckpt-dir", "-o", "--resume"):
                v = next(it)
                if f != "--ckpt-dir":
                    out += [f, Path(v).name]
            elif f not in ("$LIMIT", "--force"):
                out.append(f)
        return out
    steps = [norm(shlex.split(line.split("$COMMON", 1)[1])) for line in text.splitlines()
             if re.match(r"\s*\S+ -m egru_compile\.train \$COMMON", line)]
    return norm(common), steps


def test_training_smoke_block_is_the_examples_recipe():
    """docs/training.md's runnable training block runs examples/ptb-egru-small/run.sh's two training steps with
    the recipe's own flags (only output paths and the smoke limits differ), so CI's smoke run checks the real
    recipe; the hours-long whole run.sh stays a skipped `training` block."""
    run_sh = (ROOT / "examples" / "ptb-egru-small" / "run.sh").read_text(encoding="utf-8")
    doc = [b for b in blocks(ROOT / "docs" / "training.md") if "egru_compile.train $COMMON" in b["text"]]
    assert len(doc) == 1 and doc[0]["skip"] in (None, "slow"), "one runnable block of the recipe's steps"
    ours = _train_steps(doc[0]["text"], {})
    theirs = _train_steps(run_sh, {"$DATA": "data/ptb", "$EX/": ""})
    assert ours == theirs and len(theirs[1]) == 2, (ours, theirs)
    assert re.search(r'^LIMIT="--max-steps \d+ ', doc[0]["text"], re.M)
    whole = [b for b in blocks(ROOT / "docs" / "training.md") if b["text"].strip() == "examples/ptb-egru-small/run.sh"]
    assert len(whole) == 1 and whole[0]["skip"] == "training"
