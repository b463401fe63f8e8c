"""A fatal signal that lands in the instant after a temporary is created (before its name is bound) or in the
middle of swapping a new artifact for the old one: the temporaries are still removed and the previous artifact
is never left hidden. Signals are raised in this very process with the CLI's own handler installed, at the exact
instant, instead of racing a subprocess (test_security_io's signal test, which raced it, failed once under load)."""
import os
import signal
from pathlib import Path

import pytest

from egru_compile import fsio
from egru_compile.guard import _Interrupts
from egru_compile.targets import output


@pytest.fixture
def handler():
    saved = _Interrupts.saved()
    _Interrupts.install()
    yield
    _Interrupts.restore(saved)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _signal_after(fn):
    def wrapped(*a, **k):
        r = fn(*a, **k)
        os.kill(os.getpid(), signal.SIGHUP)      # lands right after the temporary exists
        return r
    return wrapped


def test_signal_right_after_the_temp_dir_is_made_leaves_nothing(tmp_path, monkeypatch, handler):
    monkeypatch.setattr(output, "make_temp_dir", _signal_after(fsio.make_temp_dir))
    with pytest.raises(KeyboardInterrupt):
        with output.atomic_output_dir(tmp_path / "out") as tmp:
            (Path(tmp) / "f").write_text("x")
    assert list(tmp_path.iterdir()) == []


def test_signal_right_after_the_temp_file_is_made_leaves_nothing(tmp_path, monkeypatch, handler):
    monkeypatch.setattr(fsio.tempfile, "mkstemp", _signal_after(fsio.tempfile.mkstemp))
    with pytest.raises(KeyboardInterrupt):
        fsio.atomic_write(tmp_path / "a.txt", "data")
    assert list(tmp_path.iterdir()) == []


def test_signal_during_the_swap_never_hides_the_previous_artifact(tmp_path, monkeypatch, handler):
    """--force over a previous artifact: a signal between moving the old one aside and moving the new one in
    is held until the swap is done, so `out` is always a whole artifact."""
    out = tmp_path / "out"
    with output.atomic_output_dir(out) as tmp:
        (Path(tmp) / "model.txt").write_text("old")
    monkeypatch.setattr(output, "owned_files", lambda p: ["model.txt"], raising=False)
    import egru_compile.artifact as artifact
    monkeypatch.setattr(artifact, "owned_files", lambda p: ["model.txt"])
    real_replace = os.replace
    calls = []

    def replace(a, b):
        real_replace(a, b)
        calls.append((a, b))
        if len(calls) == 1:                       # the old artifact just moved aside
            os.kill(os.getpid(), signal.SIGHUP)
    monkeypatch.setattr(output.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with output.atomic_output_dir(out, force=True) as tmp:
            (Path(tmp) / "model.txt").write_text("new")
    assert (out / "model.txt").read_text() == "new"  # the swap completed before the signal was acted on
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
