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

    .venv/bin/python -m benchmarks.bandwidth [--rows 1024,4096,16384] [--out benchmarks/results/bandwidth]
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


# ------------------------------------------------------------------------------------------------ table
def _pct(x: float) -> str:
    return "—" if not np.isfinite(x) else f"{x:.0%}"


def roofline_rows(acc, times: dict, bw: dict, gather_at) -> tuple[list[str], dict]:
    """Markdown rows for one target. times: group -> µs ("layer l" where separable, "RNN stack", "decoder",
    "whole token"). bw: the `bandwidth.measure` dict; gather_at(res, row_bytes, key) interpolates gathers.
    acc: `egru_compile.runtime.traffic.Accounting`. Returns (rows, summary of the whole token)."""
    s = {k: bw["stream"][k]["best"] for k in ("L2", "L3", "DRAM")}

    def gather_time(parts, key):       # seconds at the random-row gather rate of each part's row size
        t = 0.0
        for p in parts:
            rate = s["DRAM" if key == "gather_dram" else "L3"] if p.stream else gather_at(bw, p.row_bytes, key)
            t += p.bytes / (rate * 1e9)
        return t

    def row(label, parts, us, rowsize=None):
        b = sum(p.bytes for p in parts)
        rs = f"{rowsize:,.0f}" if rowsize else "—"
        if us is None or us <= 0:
            why = "—" if us is None else f"{us:,.1f} (noise)"
            return f"| {acc.target} | {label} | {b / 1024:,.1f} KiB | {rs} | {why} | — | — | — | — | — | — |"
        gbs = b / (us * 1e-6) / 1e9
        tg3, tgd = gather_time(parts, "gather_l3"), gather_time(parts, "gather_dram")
        return (f"| {acc.target} | {label} | {b / 1024:,.1f} KiB | {rs} | {us:,.1f} | {gbs:.1f} | "
                f"{_pct(gbs / s['L2'])} | {_pct(gbs / s['L3'])} | {_pct(gbs / s['DRAM'])} | "
                f"{_pct(tg3 / (us * 1e-6))} | {_pct(tgd / (us * 1e-6))} |")

    out = []
    L = sum(1 for p in acc.parts if p.name.endswith(" W"))
    for l in range(L):
        ps = [p for p in acc.parts if p.group == f"layer {l}"]
        for p in ps:
            out.append(row(p.name, [p], None, p.row_bytes))
        if f"layer {l}" in times:
            out.append(row(f"**layer {l}** (W + R + update)", ps, times[f"layer {l}"]))
    rnn = [p for p in acc.parts if p.group.startswith("layer")]
    dec = [p for p in acc.parts if p.group == "decoder"]
    out.append(row("**RNN stack**" + ("" if "layer 0" in times else " (layers not separable)"), rnn,
                   times.get("RNN stack")))
    out.append(row("**decoder** (token − RNN stack)", dec, times.get("decoder"), dec[0].row_bytes))
    out.append(row("**whole token**", acc.parts, times.get("whole token")))
    b = sum(p.bytes for p in acc.parts)
    us = times.get("whole token")
    summ = {"bytes": b, "us": us, "GBps": b / (us * 1e-6) / 1e9 if us else float("nan"),
            "t_dram_us": b / (s["DRAM"] * 1e9) * 1e6, "t_l3_us": b / (s["L3"] * 1e9) * 1e6,
            "t_gather_dram_us": gather_time(acc.parts, "gather_dram") * 1e6,
            "t_gather_l3_us": gather_time(acc.parts, "gather_l3") * 1e6, "footprint": acc.footprint}
    return out, summ


HEADER = ("| target | part | bytes / token | mean row (B) | µs / token | GB/s | % of L2 stream | % of L3 stream | "
          "% of DRAM stream | % of L3 gather roofline | % of DRAM gather roofline |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def conclusion(target: str, s: dict, l3_bytes: int) -> str:
    where = "fit" if s["footprint"] <= l3_bytes else "do not fit"
    return (f"* **{target}**: {s['bytes'] / 2 ** 20:.2f} MiB of weights + indices per token in {s['us']:,.0f} µs = "
            f"{s['GBps']:.1f} GB/s; the matrices it reads from ({s['footprint'] / 2 ** 20:,.0f} MiB) {where} in the "
            f"{l3_bytes / 2 ** 20:.0f} MiB L3. At the DRAM stream rate the token would take {s['t_dram_us']:,.0f} µs, "
            f"at the DRAM random-row gather rate of its row sizes {s['t_gather_dram_us']:,.0f} µs, at the L3 "
            f"stream rate {s['t_l3_us']:,.0f} µs: measured = {s['us'] / s['t_dram_us']:.1f}x the DRAM-stream "
            f"bound, {s['us'] / s['t_gather_dram_us']:.1f}x the DRAM-gather bound, "
            f"{s['us'] / s['t_l3_us']:.1f}x the L3-stream bound.")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="64,256,1024,4096,16384,40000", help="gather row sizes in bytes")
    ap.add_argument("--out", default=str(HERE / "results" / "bandwidth"), help="prefix of the .md/.json")
    a = ap.parse_args(argv)
    res = measure([int(x) for x in a.rows.split(",") if x])
    load = os.getloadavg()
    text = (fmt(res) + f"\n\nLoad average during the run (uptime): {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
            f"(2 cores). Command: `.venv/bin/python -m benchmarks.bandwidth` ({res['seconds']:.0f} s).")
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
