"""The shipped Penn Treebank (data/ptb): the files are Mikolov's, one path finds them, a missing copy is one line.

References are independent of the code under test: MD5 sums recomputed with hashlib against data/ptb/MD5SUMS,
and token / vocabulary counts recounted with str.split against the figures published with the split
(929,589 / 73,760 / 82,430 tokens with one <eos> per line, a 10,000-word vocabulary).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PTB_DIR
from egru_compile.data import DataError, Vocabulary, ptb_dir, ptb_file

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED_TOKENS = {"train": 929_589, "valid": 73_760, "test": 82_430}


def test_shipped_files_are_mikolovs():
    sums = dict(line.split()[::-1] for line in (PTB_DIR / "MD5SUMS").read_text().splitlines() if line.strip())
    assert set(sums) == {f"ptb.{s}.txt" for s in PUBLISHED_TOKENS}
    for name, md5 in sums.items():
        assert hashlib.md5((PTB_DIR / name).read_bytes()).hexdigest() == md5, name
    assert (PTB_DIR / "README.md").is_file()                     # source and terms beside the data


def test_token_and_vocabulary_counts_match_the_published_split():
    words = set()
    for split, n in PUBLISHED_TOKENS.items():
        lines = (PTB_DIR / f"ptb.{split}.txt").read_text().splitlines()
        assert sum(len(ln.split()) + 1 for ln in lines) == n, split     # + <eos> per line
        if split == "train":
            words = {w for ln in lines for w in ln.split()} | {"<eos>"}
    assert len(words) == 10_000
    assert len(Vocabulary.from_train_file(ptb_file("train"))) == len(words)


def test_ptb_dir_is_the_repository_copy_and_env_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv("EGRU_PTB", raising=False)
    assert ptb_dir() == PTB_DIR.resolve() and ptb_file("test") == PTB_DIR.resolve() / "ptb.test.txt"
    for s in ("train", "valid", "test"):
        (tmp_path / f"ptb.{s}.txt").write_text("a b\n")
    monkeypatch.setenv("EGRU_PTB", str(tmp_path))
    assert ptb_dir() == tmp_path
    (tmp_path / "ptb.valid.txt").unlink()
    with pytest.raises(DataError, match=r"lacks ptb\.valid\.txt") as e:
        ptb_dir()
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="unknown Penn Treebank split"):
        ptb_file("dev")


def test_demo_refuses_a_missing_data_folder_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "demo.py"), "--ptb", str(tmp_path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: Penn Treebank text") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()                       # nothing written


def test_one_path_everywhere():
    """No script, test or benchmark default points at the old shared folder any more."""
    files = [ROOT / "Makefile", *ROOT.glob("examples/**/*.sh"), *ROOT.glob("examples/*.py"),
             *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tests/**/*.py"), ROOT / ".ci" / "wheel-check"]
    old = "shared/data/ptb"
    offenders = [str(f.relative_to(ROOT)) for f in files if f.name != Path(__file__).name
                 and (old in f.read_text(encoding="utf-8") or '"shared" / "data"' in f.read_text(encoding="utf-8"))]
    assert not offenders, offenders
