"""Where the time of a shared-read step goes at 1 and N threads (`eval --batch-size B --threads N`), per phase.

PTB-size EGRU (as `bench_batch.py`: 750/1350/1350/750, vocabulary 10,000, random weights pruned to 85 %,
thresholds for ~20 % activity), B streams (default 16) on random tokens. The shared-read kernels
(`targets/tvm/shared.py`) are built a second time with every task of every phase of the step's parallel region
(`targets/tvm/region.py`) timed by the CPU's time-stamp counter (``llvm.readcyclecounter`` at the start and end
of each task, summed over the steps) and the whole step timed the same way around the region. Per phase the
table gives each thread's busy time per step; a phase's scaling is its 1-thread time over the slowest thread's
time at N threads (what the phase would give on idle cores). What the step takes beyond the sum of its phases'
slowest threads is synchronisation and waiting: pool wake-up, barriers, and a thread without a core of its own
on a shared machine (the busy times are counted on the task's own core, so they are far less disturbed by other
processes than the step's wall time). Results are checked bit-identical across the thread counts.

    nice .venv/bin/python -m benchmarks.bench_threads [--batch 16] [--threads 2] [--steps 32] [--rounds 8]

Writes benchmarks/results/threads.md (``--out``).
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from benchmarks.common import (QUIET_CORES, add_model_args, add_wait_idle_arg, build_model, calibrate,  # noqa: E402
                               wait_idle)

from egru_compile.data import Vocabulary  # noqa: E402
from egru_compile.frontend import trace_model  # noqa: E402
from egru_compile.passes import PassManager  # noqa: E402
from egru_compile.runtime import open_artifact  # noqa: E402
from egru_compile.targets import get_target  # noqa: E402

PTB = ROOT / "data" / "ptb"
NPHASE = 64


@contextlib.contextmanager
def timed_phases(names: list):
    """While building: every `region.par` task adds its TSC cycles to ``prof[phase, iteration]`` and the step
    to ``prof[step, NPHASE - 1]``; part p (< 8) of a scatter or the decoder counts the CPU it ran on in
    ``prof[NPHASE - 2 - p, cpu]`` (an extra int64 argument ``prof`` [NPHASE, NPHASE] after the others);
    `names` receives the phase names (``L{l}.`` + the loop's name inside layer l)."""
    from tvm.script import tirx as T
    from egru_compile.targets.tvm import region, shared, tir
    saved = (shared._declare, region.par, shared._layer, shared._step)
    st: dict = {}

    def tsc():
        return T.call_llvm_intrin("int64", "llvm.readcyclecounter")

    def rid(name):
        if name not in names:
            names.append(name)
        return names.index(name)

    def declare(spec, score):
        a = saved[0](spec, score)
        a["prof"] = T.match_buffer(T.arg("prof_h", T.handle()), (NPHASE, NPHASE), "int64")
        st["prof"] = a["prof"]
        names.clear()
        return a

    class par(saved[1]):
        def __enter__(self):
            self.r = rid(st.get("pfx", "") + self.name)
            self.v = super().__enter__()
            self.t0 = tir.let("t0", tsc())
            if self.name in ("p", "vp"):    # the CPU of each part of the scatters and the decoder
                prof, cpu = st["prof"], T.min(T.call_extern("int32", "sched_getcpu"), NPHASE - 1)
                T.buffer_store(prof, prof[NPHASE - 2 - T.min(self.v, 7), cpu] + 1,
                               [NPHASE - 2 - T.min(self.v, 7), cpu])
            return self.v

        def __exit__(self, *exc):
            prof = st["prof"]
            T.buffer_store(prof, prof[self.r, self.v] + (tsc() - self.t0), [self.r, self.v])
            return super().__exit__(*exc)

    def layer(spec, a, t, l, blk, nval):
        st["pfx"] = f"L{l}."
        saved[2](spec, a, t, l, blk, nval)
        st["pfx"] = ""

    def step(spec, a, t, score):
        r = rid("step")
        t0 = tir.let("st0", tsc())
        saved[3](spec, a, t, score)
        T.buffer_store(a["prof"], a["prof"][r, NPHASE - 1] + (tsc() - t0), [r, NPHASE - 1])

    shared._declare, region.par, shared._layer, shared._step = declare, par, layer, step
    try:
        yield
    finally:
        shared._declare, region.par, shared._layer, shared._step = saved


def build(tmp: Path, a) -> Path:
    vocab = Vocabulary.from_train_file(PTB / "ptb.train.txt")
    model = build_model(len(vocab), a.emb, [int(h) for h in a.hidden.split(",")], a.sparsity)
    calibrate(model, a.activity, np.random.default_rng(0).integers(0, len(vocab), 60))
    get_target("tvm")(PassManager(None).run(trace_model(model)), None, tmp, {})
    return tmp


def per_task(p: np.ndarray, k: int, n_iter: int, threads: int) -> list[float]:
    """Cycles of each task of phase k: iterations split into contiguous ranges of ceil(n_iter / threads)."""
    ch = -(-n_iter // threads)
    return [float(p[k, q * ch:min(n_iter, (q + 1) * ch)].sum()) for q in range(threads)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=32, help="steps per timed call")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (1 and N threads each)")
    add_wait_idle_arg(ap, "each timed call")
    ap.add_argument("--out", default=str(HERE / "results" / "threads.md"))
    a = ap.parse_args(argv)
    if a.threads < 2 or a.threads > 60 or a.batch < 1:
        ap.error("--threads must be 2..60 and --batch >= 1")
    import tvm
    from egru_compile.targets.tvm import shared
    from egru_compile.targets.tvm.shared_runner import SharedStreams, set_kernel_threads
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as td:
        rt = open_artifact(build(Path(td), a), threads=1).rt
        names: list = []
        with timed_phases(names):
            mod = shared.build_egru_shared(rt.spec, rt._target)
    B, Tn, ths = a.batch, a.steps, (1, a.threads)
    tok = np.random.default_rng(0).integers(0, rt.spec.vocab_size, (Tn + 1) * B).reshape(B, Tn + 1).T.copy()
    streams = {th: SharedStreams(rt, mod, B, th) for th in ths}
    prof = tvm.runtime.tensor(np.zeros((NPHASE, NPHASE), np.int64))
    pv = np.from_dlpack(prof)
    runs: dict = {th: [] for th in ths}
    n_idle = 0
    for rnd in range(a.rounds + 1):                     # round 0 warms up
        for th in (ths if rnd % 2 else ths[::-1]):
            s = streams[th]
            s.reset()
            (t_tok, t_tg, t_nll, t_st), (n_tok, n_tg, n_nll, _) = s._io(Tn, True)
            n_tok[...], n_tg[...] = tok[:Tn], tok[1:]
            pv[...] = 0
            set_kernel_threads(th)
            idle = wait_idle(QUIET_CORES, a.wait_idle) if a.wait_idle > 0 else False
            t0 = time.perf_counter()
            s._score_fn(th, t_tok, t_tg, *s._args, s._logits, s._red, t_nll, t_st, prof)
            dt = time.perf_counter() - t0
            if rnd:
                runs[th].append((dt, pv.copy(), n_nll.copy()))
                n_idle += idle
    load1 = os.getloadavg()
    if not np.array_equal(runs[1][0][2], runs[a.threads][0][2]):
        sys.exit("error: the NLL of 1 and N threads differ")
    ks = [k for k, n in enumerate(names) if n != "step"]
    kstep = names.index("step")
    table, steps = {}, {}
    for th in ths:
        dt, p, _ = min(runs[th], key=lambda r: r[0])            # the fastest round
        hz = p[kstep, NPHASE - 1] / dt
        table[th] = {names[k]: [c / hz / Tn * 1e6 for c in per_task(p, k, B if names[k] == "nb" else th, th)]
                     for k in ks}
        steps[th] = (dt / Tn * 1e6, [r[0] / Tn * 1e6 for r in runs[th]])
    N = a.threads
    lines = [f"EGRU {a.emb}/{a.hidden.replace(',', '/')}, {a.sparsity:.0%} pruned, ~{a.activity:.0%} "
             f"activity; B = {B} streams, {Tn} steps per call, best of {a.rounds} interleaved rounds; load "
             f"average {load0[0]:.2f} at start, {load1[0]:.2f} at end ({os.cpu_count()} cores)"
             + (f"; {n_idle} of {2 * a.rounds} calls started at a quiet moment (other processes < "
                f"{QUIET_CORES:g} cores busy over 0.3 s; waited up to {a.wait_idle:g} s)." if a.wait_idle > 0
                else "."), "",
             "Command: `nice .venv/bin/python -m benchmarks.bench_threads " + " ".join(argv or sys.argv[1:]) + "`",
             "", f"| phase | 1 thread µs/step | {N} threads: each thread µs/step | phase scaling |",
             "|---|---|---|---|"]
    busy = {th: 0.0 for th in ths}
    for n in table[1]:
        one, many = sum(table[1][n]), table[N][n]
        busy[1] += one
        busy[N] += max(many)
        if one < 0.5:
            continue
        lines.append(f"| {n} | {one:.1f} | " + " / ".join(f"{x:.1f}" for x in many)
                     + f" | {one / max(max(many), 1e-9):.2f}× |")
    for th in ths:
        sync = steps[th][0] - busy[th]
        lines.append(f"| sync + waiting, {th} thread{'s' * (th > 1)} | {sync:.1f} µs/step | | |")
    dt, p, _ = min(runs[N], key=lambda r: r[0])
    on = [{c: int(p[NPHASE - 2 - q, c]) for c in range(NPHASE) if p[NPHASE - 2 - q, c]} for q in range(min(N, 8))]
    lines += ["", f"CPUs the parts of the scatters and the decoder ran on ({N} threads, fastest round; part: "
              "{cpu: phases}): " + "; ".join(f"part {q}: {on[q]}" for q in range(len(on)))
              + " (parts sharing one CPU run one after the other)."]
    r_best = steps[1][0] / steps[N][0]
    r_med = float(np.median(steps[1][1]) / np.median(steps[N][1]))
    lines += ["", f"Whole step: 1 thread {steps[1][0]:.0f} µs, {N} threads {steps[N][0]:.0f} µs (best of rounds): "
              f"{r_best:.2f}× (median of rounds {r_med:.2f}×). Sum of the phases (1 thread) over the sum of the "
              f"phases' slowest threads ({N} threads) — the speed-up with idle cores and free synchronisation: "
              f"{busy[1] / busy[N]:.2f}×.",
              f"Goal (issue 26): {N} threads ≥ 1.7× 1 thread at B=16: {'met' if r_best >= 1.7 else 'not met'} "
              f"({r_best:.2f}× whole step, this load)."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
