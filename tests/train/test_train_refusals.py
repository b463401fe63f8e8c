"""`egru-compile train` refuses, before training starts, what would lose the user's files or silently ignore an
option: one ``error:`` line, exit 2 for a usage error (1 for a file conflict), nothing written or modified.
Tiny models (2 steps an epoch) on a synthetic corpus: a few seconds in all."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from egru_compile.train.data import synthetic_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synthetic_corpus(tmp_path_factory.mktemp("corpus"), n_lines=200, vocab_size=24)


def _train(corpus, *args):
    from click.testing import CliRunner

    from egru_compile.cli import main
    return CliRunner().invoke(main, ["train", "--data-dir", str(corpus), "--emb", "8", "--hidden", "12,8",
                                     "--epochs", "1", "--max-steps", "2", "--batch-size", "4", "--bptt", "10",
                                     "--no-progress", *map(str, args)])


def is_train_log(path: Path, n_layers: int) -> bool:
    first = path.read_text().splitlines()[0]
    return first.startswith("time,kind,stage,") and first.count(",activity_") == n_layers


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _one_line_error(res, code: int, *needles: str) -> str:
    lines = res.output.strip().splitlines()
    assert res.exit_code == code, (res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------ empty names
@pytest.mark.parametrize("args,needle", [(["-o", ""], "-o ''"),
                                         (["-o", "t.pt", "--ckpt-dir", ""], "--ckpt-dir ''"),
                                         (["-o", "t.pt", "--log", ""], "--log ''")])
def test_an_empty_output_name_is_a_usage_error(corpus, tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    _one_line_error(_train(corpus, *args), 2, needle, "empty")
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ contradictions
@pytest.mark.parametrize("args,needle", [
    (["--projection-activation", "relu"], "--projection-activation relu applies only with --projection"),
    (["--finetune-epochs", "3"], "--finetune-epochs applies only with --prune-schedule"),
    (["--finetune-lr", "1e-3"], "--finetune-lr applies only with --prune-schedule"),
    (["--hidden", "12,,8"], "empty item in '12,,8'"),
    (["--prune-schedule", "0.5,"], "empty item"),
    (["--prune-schedule", "0.5", "--finetune-epochs", ""], "empty value"),
    (["--prune-schedule", "0.5,0.7", "--finetune-epochs", "1,2,3"], "3 values for 2 pruning steps"),
    (["--model", "lstm", "--act-reg", "0.5"], "--act-reg applies to --model egru only, not lstm"),
    (["--model", "gru", "--dampening", "0.5"], "--dampening applies to --model egru only, not gru"),
    (["--model", "gru", "--support", "2"], "--support applies to --model egru only"),
    (["--model", "gru", "--thr-init", "0,0.2"], "--thr-init applies to --model egru only"),
    (["--model", "gru", "--input-wd-mult", "5"], "--input-wd-mult applies to --model egru only"),
    (["--model", "gru", "--projection"], "--projection"),
    (["--model", "gru", "--prune-schedule", "0.5"], "--prune-schedule applies to --model egru only"),
])
def test_options_that_do_not_apply_are_usage_errors(corpus, tmp_path, args, needle):
    _one_line_error(_train(corpus, "-o", tmp_path / "t.pt", *args), 2, needle)
    assert not list(tmp_path.iterdir())


def test_an_option_given_with_its_default_value_contradicts_nothing(corpus, tmp_path):
    res = _train(corpus, "-o", tmp_path / "g.pt", "--model", "gru", "--act-reg", "0", "--dampening", "0.7",
                 "--no-projection")
    assert res.exit_code == 0, res.output


def test_resume_keeps_the_checkpoints_model(corpus, tmp_path):
    """A resumed run trains the checkpoint's model: --model (or --emb / --hidden) contradicting it is refused;
    left out, the checkpoint's model type is used (and recorded in the new checkpoint's meta)."""
    res = _train(corpus, "-o", tmp_path / "g.pt", "--model", "gru", "--ckpt-dir", tmp_path / "gck")
    assert res.exit_code == 0, res.output
    before = _snapshot(tmp_path)
    last = tmp_path / "gck" / "last.pt"
    for args, needle in ((["--model", "egru"], "--model egru, but --resume"),
                         (["--model", "lstm"], "is a --model gru checkpoint"),
                         (["--dampening", "0.5"], "--dampening applies to --model egru only"),
                         (["--hidden", "16,8"], "--hidden 16,8 differs from the --resume")):
        _one_line_error(_train(corpus, "-o", tmp_path / "g2.pt", "--resume", last, "--epochs", "2", *args), 2, needle)
        assert _snapshot(tmp_path) == before
    res = _train(corpus, "-o", tmp_path / "g2.pt", "--resume", last, "--epochs", "2")
    assert res.exit_code == 0, res.output
    meta = torch.load(tmp_path / "g2.pt", weights_only=True)["meta"]
    assert meta["model_type"] == "gru" and meta["progress"] == {"stage": 0, "epochs_done": 2}


# ------------------------------------------------------------------------------------------ the checkpoint folder
def test_a_ckpt_dir_holding_the_users_files_is_refused_unless_force(corpus, tmp_path):
    ck = tmp_path / "myck"
    ck.mkdir()
    (ck / "config.json").write_text('{"mine": 1}\n')
    (ck / "train_log.csv").write_text("my log\n")
    (ck / "notes.txt").write_text("my notes\n")
    before = _snapshot(tmp_path)
    line = _one_line_error(_train(corpus, "-o", tmp_path / "t.pt", "--ckpt-dir", ck), 1,
                           f"--ckpt-dir {ck} already holds config.json, notes.txt, train_log.csv", "--force",
                           "another --ckpt-dir")
    assert "--resume" not in line                      # nothing there to resume
    assert _snapshot(tmp_path) == before
    res = _train(corpus, "-o", tmp_path / "t.pt", "--ckpt-dir", ck, "--force")
    assert res.exit_code == 0, res.output
    assert '"train"' in (ck / "config.json").read_text() and is_train_log(ck / "train_log.csv", 2)
    assert "my log" not in (ck / "train_log.csv").read_text()       # replaced, not appended to
    assert (ck / "notes.txt").read_text() == "my notes\n"           # --force touches only train's files


def test_a_previous_runs_ckpt_dir_is_refused_with_the_ways_out(corpus, tmp_path):
    res = _train(corpus, "-o", tmp_path / "t.pt")
    assert res.exit_code == 0, res.output
    ck = tmp_path / "t_ckpts"
    assert {p.name for p in ck.iterdir()} == {"config.json", "dense.pt", "last.pt", "last.state.pt", "train_log.csv"}
    before = _snapshot(tmp_path)
    _one_line_error(_train(corpus, "-o", tmp_path / "t2.pt", "--ckpt-dir", ck), 1,
                    f"--ckpt-dir {ck} already holds config.json, dense.pt", f"--resume {ck / 'last.pt'}",
                    "another --ckpt-dir", "--force")
    assert _snapshot(tmp_path) == before
    (tmp_path / "t.pt").rename(tmp_path / "kept.pt")            # the same -o again: its default folder is refused
    before = _snapshot(tmp_path)
    _one_line_error(_train(corpus, "-o", tmp_path / "t.pt"), 1,
                    f"checkpoint folder {ck} (--ckpt-dir's default for -o {tmp_path / 't.pt'}) already holds")
    assert _snapshot(tmp_path) == before
    # continuing that run in its folder is allowed, and appends to its log
    log_before = (ck / "train_log.csv").read_bytes()
    res = _train(corpus, "-o", tmp_path / "t.pt", "--resume", ck / "last.pt", "--epochs", "2")
    assert res.exit_code == 0, res.output
    log_after = (ck / "train_log.csv").read_bytes()
    assert log_after.startswith(log_before) and len(log_after.splitlines()) > len(log_before.splitlines())


# ------------------------------------------------------------------------------------------ --log
def test_an_existing_log_file_is_refused_unless_force(corpus, tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("my notes\n")
    before = _snapshot(tmp_path)
    _one_line_error(_train(corpus, "-o", tmp_path / "t.pt", "--log", mine), 1, f"--log {mine} already exists",
                    "--force")
    assert _snapshot(tmp_path) == before
    res = _train(corpus, "-o", tmp_path / "t.pt", "--log", mine, "--force")
    assert res.exit_code == 0, res.output
    assert is_train_log(mine, 2) and "my notes" not in mine.read_text()


def test_a_continued_run_appends_only_to_a_train_log(corpus, tmp_path):
    ck = tmp_path / "ck"
    res = _train(corpus, "-o", tmp_path / "t.pt", "--ckpt-dir", ck, "--log", tmp_path / "log.csv")
    assert res.exit_code == 0, res.output
    mine = tmp_path / "mine.txt"
    mine.write_text("my notes\n")
    before = _snapshot(tmp_path)
    resume = ["--resume", ck / "last.pt", "--epochs", "2", "--ckpt-dir", ck]
    _one_line_error(_train(corpus, "-o", tmp_path / "t2.pt", *resume, "--log", mine), 1,
                    f"--log {mine} is not the train log of the continued run", "--force")
    assert _snapshot(tmp_path) == before
    res = _train(corpus, "-o", tmp_path / "t2.pt", *resume, "--log", tmp_path / "log.csv")
    assert res.exit_code == 0, res.output
    log = (tmp_path / "log.csv").read_bytes()
    assert log.startswith(before["log.csv"]) and len(log.splitlines()) == len(before["log.csv"].splitlines()) + 1


# ------------------------------------------------------------------------------------------ interrupted runs
def test_a_run_stopped_before_its_first_checkpoint_leaves_nothing(corpus, tmp_path, monkeypatch):
    """An interruption (or any failure) before the run's first checkpoint removes the folder and the log it
    created: a rerun is not refused. After the first checkpoint the files stay, and a rerun is refused with
    ``--resume CK/last.pt``, which continues the run."""
    import egru_compile.train.trainer as trainer
    real, calls = trainer.evaluate, []

    def evaluate(*a, **k):                         # the end of an epoch, before its checkpoint
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(trainer, "evaluate", evaluate)
    stop_at = 1
    res = _train(corpus, "-o", tmp_path / "t.pt", "--log-interval", "1")
    assert res.exit_code == 130 and res.output == "error: interrupted\n", res.output
    assert not list(tmp_path.iterdir())
    calls.clear()
    stop_at = 2
    res = _train(corpus, "-o", tmp_path / "t.pt", "--epochs", "2")
    assert res.exit_code == 130, res.output
    ck = tmp_path / "t_ckpts"
    assert {p.name for p in tmp_path.iterdir()} == {"t_ckpts"}
    assert {p.name for p in ck.iterdir()} == {"config.json", "last.pt", "last.state.pt", "train_log.csv"}
    _one_line_error(_train(corpus, "-o", tmp_path / "t.pt", "--epochs", "2"), 1, f"--resume {ck / 'last.pt'}")
    calls.clear()
    stop_at = 0
    res = _train(corpus, "-o", tmp_path / "t.pt", "--epochs", "2", "--resume", ck / "last.pt")
    assert res.exit_code == 0, res.output
    assert torch.load(tmp_path / "t.pt", weights_only=True)["meta"]["progress"] == {"stage": 0, "epochs_done": 2}


@pytest.mark.parametrize("entry", [["-c", "from egru_compile.cli import main; main()", "train"],
                                   ["-m", "egru_compile.train"]], ids=["egru-compile", "python-m"])
def test_sigterm_during_the_first_epoch_leaves_nothing(corpus, tmp_path, entry):
    proc = subprocess.Popen([sys.executable, *entry, "--data-dir", str(corpus), "--emb", "8", "--hidden", "12,8",
                             "--epochs", "1", "--batch-size", "1", "--bptt", "2", "--log-interval", "1",
                             "--no-progress", "-o", str(tmp_path / "t.pt")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "t_ckpts" / "train_log.csv"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and len(log.read_bytes().splitlines()) >= 3):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err == "error: interrupted (SIGTERM)\n", err
    assert not list(tmp_path.iterdir())
