"""Progress lines for long steps: a step that is still running after ~2 s says so on stderr, and says when it
ends; a quicker one prints nothing. The CLI turns them on (``--quiet`` off), the Python API only on request."""
from __future__ import annotations

import contextlib
import sys
import threading
import time

#: seconds a step runs before its progress line appears
AFTER_S = 2.0


@contextlib.contextmanager
def step(label: str, enabled: bool = True, after: float = AFTER_S, stream=None):
    """Run the body; if `enabled` and it takes longer than `after` seconds, print ``label ...`` when that time
    has passed and ``label: done in X s`` at the end (to `stream`, default stderr)."""
    if not enabled:
        yield
        return
    out = stream if stream is not None else sys.stderr
    lock = threading.Lock()
    state = {"shown": False, "done": False}
    t0 = time.perf_counter()

    def show():
        with lock:
            if not state["done"]:
                print(f"{label} ...", file=out, flush=True)
                state["shown"] = True

    timer = threading.Timer(after, show)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True        # a timer firing now prints nothing
        if state["shown"]:
            print(f"{label}: done in {time.perf_counter() - t0:.1f} s", file=out, flush=True)
