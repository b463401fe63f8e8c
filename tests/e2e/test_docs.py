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
without the compile cache, as the benchmarks document their compile times) and ``ci`` (the README's quick start,
``make demo`` then ``make test``: it creates the virtual environment this suite runs in, so ``.ci/run`` runs that
block itself, first, on the fresh clone — ``test_ci_runs_the_quick_start_block`` checks it does). No other kind
exists: every block runs in CI. Every skipped block is reported with its reason (``pytest -ra``). Relative links between
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
KINDS = {"slow", "benchmark", "ci"}
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


def _output_folders(folder: str, names: list[str]) -> list[str]:
    """The folders a local training run leaves in examples/ (run.sh's run/, the sweeps' sweep*/, smoke-run/,
    out/): not copied; scripts such as sweep_wd85.sh are."""
    return [n for n in names if (Path(folder) / n).is_dir()
            and (n in ("run", "out", "smoke-run") or n.startswith("sweep"))]


def _workdir(tmp_path_factory, page: Path, cache={}) -> Path:
    if page not in cache:
        d = tmp_path_factory.mktemp(page.stem.lower())
        shutil.copytree(ROOT / "examples", d / "examples", ignore=_output_folders)
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


def test_training_block_runs_the_examples_whole_recipe():
    """docs/training.md runs examples/ptb-egru-small/run.sh itself with SMOKE=1 (CI runs it), and SMOKE changes
    nothing but how long each step runs and where it writes: inside run.sh's SMOKE switch only OUT, LIMIT and
    EVAL_LIMIT are set, both empty in the real run; every training command (run.sh's and sweep_wd85.sh's)
    carries $LIMIT and the evaluation $EVAL_LIMIT; nothing is written under the shipped example ($EX) except
    through $OUT (whose default in the real run is the example)."""
    ex = ROOT / "examples" / "ptb-egru-small"
    run_sh, sweep = (ex / "run.sh").read_text(encoding="utf-8"), (ex / "sweep_wd85.sh").read_text(encoding="utf-8")
    doc = [b for b in blocks(ROOT / "docs" / "training.md") if "examples/ptb-egru-small/run.sh" in b["text"]]
    assert len(doc) == 1 and doc[0]["skip"] in (None, "slow"), "one runnable block running the whole recipe"
    assert re.search(r"^SMOKE=1 examples/ptb-egru-small/run\.sh$", doc[0]["text"], re.M), doc[0]["text"]
    switch = re.search(r'^if \[ "\$\{SMOKE:-0\}" = 1 \]; then\n(.*?)^else\n(.*?)^fi$', run_sh, re.S | re.M)
    assert switch, "run.sh's SMOKE switch"
    smoke, real = (dict(re.findall(r"^\s*(\w+)=(.*)$", part, re.M)) for part in switch.groups())
    assert set(smoke) == set(real) == {"OUT", "LIMIT", "EVAL_LIMIT"}, (smoke, real)
    assert real["LIMIT"] == real["EVAL_LIMIT"] == '""' and real["OUT"] == "${OUT:-$EX}", real
    assert "--max-steps" in smoke["LIMIT"] and "--max-tokens" in smoke["EVAL_LIMIT"]
    joined = [re.sub(r"\\\n\s*", " ", text) for text in (run_sh, sweep)]
    trains = [ln for text in joined for ln in text.splitlines() if re.match(r"\s*\$PY -m egru_compile\.train", ln)]
    assert len(trains) == 4 and all("$LIMIT" in ln for ln in trains), trains
    evals = [ln for ln in joined[0].splitlines() if "ppl_vs_macs.py" in ln and ln.lstrip().startswith("$PY")]
    assert len(evals) == 1 and "$EVAL_LIMIT" in evals[0], evals
    writes = re.findall(r"(?:-o|--ckpt-dir|--png|--json|cp \S+)\s+(\S+)", joined[0])
    assert writes and all(w.startswith(("$OUT/", '"$OUT')) for w in writes), writes
    assert "DENSE=$OUT/" in run_sh and "SWEEP=$OUT/" in run_sh


def quick_start_block() -> dict:
    """The README's quick-start block: the one `ci` block, run by .ci/run itself."""
    found = [b for p in PAGES for b in blocks(p) if b["skip"] == "ci"]
    assert len(found) == 1 and found[0] in blocks(ROOT / "README.md"), "one `ci` block: the README's quick start"
    return found[0]


def test_ci_runs_the_quick_start_block():
    """.ci/run extracts the README's `ci` block (with the same fence pattern) and runs it as its first step, with
    bash -e: a README whose quick start fails fails CI. Checked by running .ci/run's extraction on this README."""
    block = quick_start_block()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    m = re.search(r"^quick_start\(\) \{\n(.*?)^\}$", ci, re.S | re.M)
    assert m, ".ci/run defines quick_start()"
    out = subprocess.run(["bash", "-c", m.group(0) + "\nquick_start"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == block["text"], (out.stdout, block["text"], out.stderr)
    assert re.search(r"^quick_start > (\S+)\n.*bash -e -o pipefail \1", ci, re.S | re.M), "runs the extracted block"
