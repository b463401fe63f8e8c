"""Whole-compile scaling of the chip targets: wall seconds, placement seconds and peak memory vs synapses.

Random EGRU language models of growing size (embedding / hidden = s x 1024 / 4096 / 4096 / 1024, the PTB
vocabulary, RNN matrices magnitude-pruned to 85 %, thresholds bisected to ~20 % activity: the models of
`bench_chip.random_checkpoint`; s = 1 is the 27M-synapse model of issue 14) are compiled by the CLI, one
fresh process per size, exactly as a user would::

    egru-compile MODEL --target loihi-like --calib-data ptb.valid.txt --calib-tokens 200 --max-chips 1000

under ``/usr/bin/time -v`` (wall clock, user + system CPU seconds, peak resident set of the process) with
``nice`` and an address-space limit (``--mem-limit-gb``, ``ulimit -v``). The placement seconds and the chip
target's phases come from the compile's own report (``report.txt``: "placement took", "chip target:"),
the frontend and pass seconds from its ``-v`` output. The machine's load average is recorded before and
after each compile: on a shared machine wall seconds are inflated by the other jobs, CPU seconds much less.

    python -m benchmarks.bench_chip_scale                         # s = 0.25, 0.5, 0.75, 1.0
    python -m benchmarks.bench_chip_scale --scales 0.25,0.5 --ckpt-dir /tmp/ckpts   # reuse checkpoints

Writes benchmarks/results/chip_scale.md (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def checkpoint(ckpt_dir: Path, s: float, ptb: Path, activity: float) -> Path:
    """The random model of scale s (built once, then reused from `ckpt_dir`)."""
    path = ckpt_dir / f"m{s}.pt"
    if not path.is_file():
        from benchmarks.common import ptb_vocab, random_checkpoint
        t = time.perf_counter()
        random_checkpoint(path, ptb_vocab(ptb), int(1024 * s), [int(4096 * s), int(4096 * s), int(1024 * s)],
                          activity)
        print(f"built {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def _limit(kb: int):
    def f():
        os.nice(10)
        if kb:
            resource.setrlimit(resource.RLIMIT_AS, (kb * 1024, kb * 1024))
    return f


def compile_one(ckpt: Path, ptb: Path, profile: str, calib_tokens: int, mem_kb: int, keep: Path | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_chip_scale_") as td:
        out = (keep or Path(td)) / f"{ckpt.stem}.{profile}"
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "egru_compile.cli", "compile", str(ckpt), "--target",
               profile, "-o", str(out), "--force", "-v", "--calib-data", str(ptb / "ptb.valid.txt"),
               "--calib-tokens", str(calib_tokens), "--max-chips", "1000"]
        load0 = os.getloadavg()
        r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_limit(mem_kb))
        load1 = os.getloadavg()
        report = (out / "report.txt").read_text() if (out / "report.txt").is_file() else ""
        mapping = json.loads((out / "mapping.json").read_text()) if (out / "mapping.json").is_file() else {}
    err = r.stderr.splitlines()

    def field(name):
        return next((ln.split(": ", 1)[-1].strip() for ln in err if name in ln), "")
    wall = field("Elapsed (wall clock)")
    h_m_s = [float(p) for p in wall.split(":")] if wall else [0.0]
    wall_s = sum(v * 60 ** i for i, v in enumerate(reversed(h_m_s)))
    text = r.stdout + "\n" + r.stderr
    num = lambda pat: float(m.group(1)) if (m := re.search(pat, text)) else None  # noqa: E731
    res = {"ok": r.returncode == 0, "wall_s": wall_s, "cpu_s": float(field("User time") or 0) +
           float(field("System time") or 0), "peak_gib": int(field("Maximum resident set size") or 0) / 2 ** 20,
           "load_before": load0[0], "load_after": load1[0],
           "placement_s": num(r"placement took ([\d.]+) s"), "frontend_s": (num(r"frontend: .*\(([\d.]+) ms\)")
                                                                          or 0) / 1e3,
           "passes_s": (num(r"\[pass\] total\s+([\d.]+) ms") or 0) / 1e3,
           "placement_cpu_s": num(r"chip target: placement [\d.]+ s \(([\d.]+) s CPU\)"),
           "sim_s": num(r"simulation ([\d.]+) s \("), "sim_cpu_s": num(r"simulation [\d.]+ s \(([\d.]+) s CPU"),
           "synapses": (mapping.get("totals") or {}).get("synapses"),
           "cores": len(mapping.get("cores") or []), "chips": mapping.get("chips")}
    if not res["ok"]:
        res["error"] = (text.strip().splitlines() or ["?"])[-1][:300]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", default=str(ROOT / "data" / "ptb"))
    ap.add_argument("--profile", default="loihi-like")
    ap.add_argument("--scales", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--calib-tokens", type=int, default=200)
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--ckpt-dir", default=None, help="where checkpoints are built / reused (default: a temp dir)")
    ap.add_argument("--keep", default=None, help="keep the compiled artifacts under this directory")
    ap.add_argument("--mem-limit-gb", type=float, default=12.0, help="address-space limit of each compile")
    ap.add_argument("--out", default=str(HERE / "results" / "chip_scale.md"))
    a = ap.parse_args(argv)
    ptb = Path(a.ptb)
    if not (ptb / "ptb.valid.txt").is_file():
        raise SystemExit(f"Penn Treebank not found at {ptb}")
    tmp = tempfile.TemporaryDirectory(prefix="bench_chip_scale_ckpt_")
    ckpt_dir = Path(a.ckpt_dir or tmp.name)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    keep = Path(a.keep) if a.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    lines = [f"# Whole-compile scaling ({a.profile}, {a.calib_tokens} calibration tokens of ptb.valid)", "",
             "Random models emb/hidden = s × 1024/4096/4096/1024 (85 % pruned, ~20 % activity), one `egru-compile "
             f"--target {a.profile} --calib-data ptb.valid.txt --calib-tokens {a.calib_tokens} --max-chips 1000 -v` "
             "per row in a fresh process under `/usr/bin/time -v`, `nice`, address space limited to "
             f"{a.mem_limit_gb:g} GB. placement: `place` + both evaluations, wall (CPU) seconds from report.txt; "
             "simulation: the calibration text on the simulated chip, wall (CPU) s; frontend / passes: wall seconds "
             "of the `-v` timings; wall, CPU (user + system) seconds and peak RSS of the whole compile; load: the "
             "machine's 1-minute load average before → after (2 cores).", "",
             "| s | synapses | cores | chips | placement s (CPU) | simulation s (CPU) | frontend s | passes s | "
             "wall s | CPU s | peak RSS GiB | load |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for s in [float(x) for x in a.scales.split(",")]:
        ckpt = checkpoint(ckpt_dir, s, ptb, a.activity)
        m = compile_one(ckpt, ptb, a.profile, a.calib_tokens, int(a.mem_limit_gb * 2 ** 20), keep)
        rows.append((s, m))
        if not m["ok"]:
            lines.append(f"| {s} | failed after {m['wall_s']:.0f} s wall, peak {m['peak_gib']:.2f} GiB: "
                         f"{m['error']} |||||||||||")
        else:
            lines.append(f"| {s} | {m['synapses']:,} | {m['cores']:,} | {m['chips']} | {m['placement_s']:.1f} "
                         f"({m['placement_cpu_s']:.1f}) | {m['sim_s']:.1f} ({m['sim_cpu_s']:.1f}) | {m['frontend_s']:.1f} | {m['passes_s']:.1f} | {m['wall_s']:.1f} | "
                         f"{m['cpu_s']:.1f} | {m['peak_gib']:.2f} | {m['load_before']:.1f} → {m['load_after']:.1f} |")
        print(lines[-1], flush=True)
    ok = [(s, m) for s, m in rows if m["ok"] and m["synapses"]]
    if len(ok) >= 2:
        (s0, m0), (s1, m1) = ok[0], ok[-1]
        g = m1["synapses"] / m0["synapses"]
        lines += ["", f"From s = {s0} to s = {s1}: synapses ×{g:.1f}, placement seconds "
                  f"×{m1['placement_s'] / m0['placement_s']:.1f} (CPU ×{m1['placement_cpu_s'] / m0['placement_cpu_s']:.1f}), "
                  f"simulation CPU ×{m1['sim_cpu_s'] / m0['sim_cpu_s']:.1f}, whole-compile CPU seconds ×{m1['cpu_s'] / m0['cpu_s']:.1f}, "
                  f"peak RSS ×{m1['peak_gib'] / m0['peak_gib']:.1f}."]
    lines += ["", f"Command: `python -m benchmarks.bench_chip_scale {' '.join(argv if argv is not None else sys.argv[1:])}`"]
    text = "\n".join(lines)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
