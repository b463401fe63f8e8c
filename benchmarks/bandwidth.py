"""This core's memory roofline, single thread: streaming read bandwidth out of L2, out of L3 and out of DRAM, and
the read rate of random row gathers (what an event-driven kernel does: each active unit's weights are one
contiguous row / CSR column somewhere in a large matrix).

Cache sizes come from ``/sys/devices/system/cpu/cpu0/cache/index*/size``. Buffers: half the L2 ("L2"), a
quarter of the L3 ("L3": the L3 is shared with the other core and, on this VM, with other tenants — a buffer
of half its size already falls out of it), and 8x the L3 (at least 256 MiB, "DRAM").

The measuring loop is `gather_bandwidth.c` (8 independent 256-bit accumulators; gathers walk 8 random rows
in lock step), compiled here with ``cc -O3 -march=native`` when a C compiler exists; each figure is the
median and the fastest of 15 batches of >= 2 ms of the thread's CPU time (time spent descheduled by other
processes does not count; contention for the shared caches and memory does). Without a compiler a numpy
fallback is used (``a.sum()`` for streams, ``take`` for gathers: the gather then also writes the copy) and
the report says so.

    .venv/bin/python benchmarks/bandwidth.py [--rows 1024,4096,16384] [--out benchmarks/results/bandwidth]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE / "gather_bandwidth.c"


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
    return int(text.rstrip("KMG") or 0) * mult


def cache_sizes() -> dict[str, int]:
    """{"L1d": bytes, "L2": bytes, "L3": bytes} of cpu0 (sysfs); missing levels are left out."""
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for d in sorted(base.glob("index*")):
        try:
            level = (d / "level").read_text().strip()
            kind = (d / "type").read_text().strip()
            size = _parse_size((d / "size").read_text())
        except OSError:
            continue
        if kind == "Instruction":
            continue
        out["L1d" if level == "1" else f"L{level}"] = size
    return out


def buffer_sizes(caches: dict[str, int]) -> dict[str, int]:
    l2 = caches.get("L2", 512 * 1024)
    l3 = caches.get("L3", 32 * 2 ** 20)
    return {"L2": l2 // 2, "L3": l3 // 4, "DRAM": max(8 * l3, 256 * 2 ** 20)}


def _compile() -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    exe = Path(tempfile.mkdtemp(prefix="egru_bw_")) / "gather_bandwidth"
    for flags in (["-O3", "-march=native"], ["-O3"]):
        r = subprocess.run([cc, *flags, str(SRC), "-o", str(exe)], capture_output=True, text=True)
        if r.returncode == 0:
            return exe
    return None


def _run(exe: Path, *args) -> list[list[str]]:
    r = subprocess.run(["nice", str(exe), *map(str, args)], capture_output=True, text=True, check=True)
    return [line.split() for line in r.stdout.splitlines() if line.strip()]


def _np_stream(nbytes: int) -> tuple[float, float]:
    a = np.ones(nbytes // 4, np.float32)
    a.sum()
    reps = max(1, int(2e-3 * 20e9 / nbytes))
    rates = []
    for _ in range(15):
        t0 = time.thread_time()
        for _ in range(reps):
            a.sum()
        dt = max(time.thread_time() - t0, 1e-9)
        rates.append(reps * nbytes / dt / 1e9)
    return float(np.median(rates)), float(max(rates))


def _np_gather(buf: np.ndarray, row_bytes: int, rng) -> tuple[float, float]:
    rf = max(8, (row_bytes // 4 + 7) // 8 * 8)
    m = buf[: buf.size // rf * rf].reshape(-1, rf)
    per = min(len(m), 4096)
    rates = []
    for _ in range(15):
        idx = rng.integers(0, len(m), per)
        t0 = time.thread_time()
        m.take(idx, axis=0)
        dt = max(time.thread_time() - t0, 1e-9)
        rates.append(per * rf * 4 / dt / 1e9)
    return float(np.median(rates)), float(max(rates))


def measure(row_bytes=(), dram_rows: bool = True) -> dict:
    """Measure the stream rates (L2 / L3 / DRAM buffers) and, for each row size in `row_bytes`, the random
    gather rate out of the DRAM-sized buffer (and out of the L3-sized one). Returns a JSON-able dict:
    {"method", "caches", "buffers", "stream": {level: {"median", "best"}},
     "gather_dram": {row: {"median", "best"}}, "gather_l3": {...}, "seconds"}."""
    t0 = time.perf_counter()
    caches = cache_sizes()
    bufs = buffer_sizes(caches)
    rows = sorted({max(32, int(r)) for r in row_bytes})
    exe = _compile()
    res = {"caches": caches, "buffers": bufs, "stream": {}, "gather_dram": {}, "gather_l3": {}}
    if exe is not None:
        res["method"] = "gather_bandwidth.c (cc -O3 -march=native), thread CPU time"
        for level, nb in bufs.items():
            (_, _, med, best), = _run(exe, "stream", nb)
            res["stream"][level] = {"median": float(med), "best": float(best)}
        for key, level in (("gather_dram", "DRAM"), ("gather_l3", "L3")):
            if rows and (dram_rows or key == "gather_l3"):
                for _, _, rb, med, best in _run(exe, "gather", bufs[level], *rows):
                    res[key][int(rb)] = {"median": float(med), "best": float(best)}
        shutil.rmtree(exe.parent, ignore_errors=True)
    else:
        res["method"] = "numpy fallback (no C compiler): a.sum() streams, take() gathers (read + write)"
        for level, nb in bufs.items():
            med, best = _np_stream(nb)
            res["stream"][level] = {"median": med, "best": best}
        rng = np.random.default_rng(0)
        for key, level in (("gather_dram", "DRAM"), ("gather_l3", "L3")):
            buf = np.ones(bufs[level] // 4, np.float32)
            for rb in rows:
                med, best = _np_gather(buf, rb, rng)
                res[key][rb] = {"median": med, "best": best}
            del buf
    res["seconds"] = time.perf_counter() - t0
    return res


def gather_at(res: dict, row_bytes: float, key: str = "gather_dram", stat: str = "best") -> float:
    """Gather rate for a row of `row_bytes`, log-interpolated between the measured row sizes."""
    table = res[key]
    if not table:
        return float("nan")
    xs = sorted(int(k) for k in table)
    ys = [table[k][stat] if k in table else table[str(k)][stat] for k in xs]
    return float(np.interp(np.log(max(row_bytes, 1.0)), np.log(xs), ys))


def fmt(res: dict) -> str:
    c, b = res["caches"], res["buffers"]
    mib = 2 ** 20
    lines = [f"Caches (sysfs, cpu0): " + ", ".join(f"{k} {v // 1024:,} KiB" for k, v in c.items())
             + f"; method: {res['method']}.", "",
             "| read | buffer | GB/s median | GB/s best |", "|---|---|---|---|"]
    for level, nb in b.items():
        s = res["stream"][level]
        lines.append(f"| stream, {level} | {nb / mib:,.2f} MiB | {s['median']:.1f} | {s['best']:.1f} |")
    for key, level in (("gather_l3", "L3"), ("gather_dram", "DRAM")):
        for rb, s in sorted(res[key].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| random {int(rb):,} B rows, {level} | {b[level] / mib:,.2f} MiB | {s['median']:.1f} | "
                         f"{s['best']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="64,256,1024,4096,16384,40000", help="gather row sizes in bytes")
    ap.add_argument("--out", default=str(HERE / "results" / "bandwidth"), help="prefix of the .md/.json")
    a = ap.parse_args(argv)
    res = measure([int(x) for x in a.rows.split(",") if x])
    load = os.getloadavg()
    text = (fmt(res) + f"\n\nLoad average during the run (uptime): {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
            f"(2 cores). Command: `.venv/bin/python benchmarks/bandwidth.py` ({res['seconds']:.0f} s).")
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
