"""Running a command: the project's errors as one ``error: ...`` line (`_fail`, `_run_guarded`, `_guard`) and
fatal signals (SIGINT, SIGTERM, SIGHUP) as an ``error: interrupted`` exit after cleanup (`_Interrupts`)."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import warnings

import click

from .errors import EgruError, cli_spelling


def _fail(msg: str, code: int = 1):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


class _Interrupts:
    """Counts fatal signals (SIGINT, SIGTERM, SIGHUP) while a command runs. Each raises KeyboardInterrupt in
    the main thread, so every ``finally`` / ``except BaseException`` on the way out runs: temporaries
    (``.out.tmp-*`` of an artifact being compiled, ``.FILE.tmp-*`` of an atomic write) are removed and the
    command ends with one ``error: interrupted`` line, exit 128 + the signal number (130 for Ctrl-C). Native
    code (TVM's compiler, torch) can catch the KeyboardInterrupt and re-raise it as its own error type; a
    recorded signal still makes the command end as interrupted instead of reporting that error."""

    count = 0
    signum = signal.SIGINT
    SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))
    deferred = 0                # > 0 inside `signals_deferred`: a signal is recorded, raised when the block ends
    pending = False

    @classmethod
    def install(cls):
        cls.count = 0
        cls.pending = False
        cls.signum = signal.SIGINT
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):
            cls.count += 1
            cls.signum = signum
            if cls.deferred:
                cls.pending = True
            elif cls.count != 2:        # a second signal while cleaning up does not cut the cleanup short
                raise KeyboardInterrupt
        for sig in cls.SIGNALS:
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover - not the main thread of the main interpreter
                pass

    @staticmethod
    def saved() -> dict:
        """The SIGTERM / SIGHUP handlers before `install` (restored when an in-process call returns)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.getsignal(sig) for sig in _Interrupts.SIGNALS if sig != signal.SIGINT}

    @staticmethod
    def restore(saved: dict) -> None:
        for sig, h in saved.items():
            try:
                signal.signal(sig, h if h is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover
                pass

    @classmethod
    def fail(cls):
        """One ``error: interrupted`` line, exit 128 + the signal. After a real signal (the cleanup on the way
        here has run) the process ends at once: the interpreter's own shutdown (joining helper threads) could
        otherwise see a pending KeyboardInterrupt and end the process by SIGINT (exit -2) instead."""
        sig = signal.Signals(cls.signum)
        msg, code = ("interrupted" if sig == signal.SIGINT else f"interrupted ({sig.name})"), 128 + int(sig)
        if cls.count and threading.current_thread() is threading.main_thread():
            for s in cls.SIGNALS:                   # no second KeyboardInterrupt while exiting
                try:
                    signal.signal(s, signal.SIG_IGN)
                except (ValueError, OSError):  # pragma: no cover
                    pass
            click.echo(f"error: {msg}", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        _fail(msg, code)


def run_click_main(run, prog: str):
    """End a click command as the CLI does: ``run()`` is the command's ``main(..., standalone_mode=False)``; a usage
    error is one ``error: ... (see PROG --help)`` line, exit 2; another click error one line, its exit code; Ctrl-C
    and the fatal signals ``error: interrupted`` after cleanup (`_Interrupts`); bare `egru-compile` (no arguments)
    prints the help as laid out. Used by `egru-compile` and ``python -m egru_compile.train``."""
    saved = _Interrupts.saved()
    _Interrupts.install()
    try:
        rv = run()
    except click.exceptions.NoArgsIsHelpError as e:     # bare `egru-compile`: the help, as it is laid out
        click.echo(e.ctx.get_help() if e.ctx is not None else e.format_message())
        sys.exit(0)
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else prog
        _fail(f"{' '.join(e.format_message().split())} (see {cmd} --help)", 2)
    except click.ClickException as e:
        _fail(" ".join(e.format_message().split()), e.exit_code or 1)
    except (click.Abort, KeyboardInterrupt):
        _Interrupts.fail()
    except Exception:
        if _Interrupts.count:
            _Interrupts.fail()
        raise
    finally:
        _Interrupts.restore(saved)
    sys.exit(rv if isinstance(rv, int) else 0)


@contextlib.contextmanager
def signals_deferred():
    """A fatal signal arriving inside the block is acted on when the block ends (with the CLI's handler
    installed, `_Interrupts`): a temporary created in the block is bound to its name first, so the cleanup that
    follows always knows it — a signal landing between ``mkdtemp`` and the assignment left a ``.out.tmp-*``
    folder behind — and a swap of two folders runs whole. Python runs signal handlers in the main thread
    between bytecodes, whichever thread the OS delivered the signal to, so this holds in a process with native
    thread pools (TVM, torch), where blocking the signal in one thread would not."""
    _Interrupts.deferred += 1
    try:
        yield
    finally:
        _Interrupts.deferred -= 1
        if not _Interrupts.deferred and _Interrupts.pending:
            _Interrupts.pending = False
            if _Interrupts.count != 2:
                raise KeyboardInterrupt


def _run_guarded(debug: bool, fn, *args, **kwargs):
    """Run `fn`: the project's errors become one `error:` line (exit 1; 2 for a usage error), Ctrl-C exit 130, MemoryError
    exit 1; anything else is a bug and keeps its traceback."""
    warnings.simplefilter("default")
    # ResourceWarning is for developers (Python hides it by default): a signal that lands while the interpreter
    # reads a module's source leaves that file to the garbage collector, which must not add a second line to
    # the one ``error: interrupted`` the user gets
    warnings.simplefilter("ignore", ResourceWarning)
    warnings.formatwarning = lambda m, c, *a, **k: f"warning: {m}\n"
    _Interrupts.install()
    try:
        with cli_spelling():                    # messages name flags, also those raised inside the API it calls
            return fn(*args, **kwargs)
    except EgruError as e:
        if debug:
            raise
        _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, e.exit_code)
    except (KeyboardInterrupt, click.Abort):
        _Interrupts.fail()
    except MemoryError:
        _fail("out of memory")
    except Exception:
        if _Interrupts.count:
            _Interrupts.fail()
        raise


def _guard(debug: bool, quiet: bool, fn, *args, **kwargs):
    """`_run_guarded`, with warnings silenced under --quiet."""
    def call():
        if quiet:
            warnings.simplefilter("ignore")
        return fn(*args, **kwargs)
    return _run_guarded(debug, call)
