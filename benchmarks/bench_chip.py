"""Placement of a PTB-size EGRU on the neuromorphic profiles: sequential baseline vs ours (both objectives).

PTB-size layers (embedding 750, hidden 1350,1350,750, the Penn Treebank vocabulary), random weights with the
RNN matrices magnitude-pruned to 85 % (`bench_onnx.build_model`, seed 0), per-layer thresholds bisected to
about 20 % activity. The checkpoint is compiled with the CLI exactly as a user would —

    egru-compile ptb.pt --target PROFILE --calib-data ptb.valid.txt --calib-tokens N --placement-objective OBJ

— once per objective; every number of the table is read back from the artifacts' ``mapping.json`` (the
sequential baseline is computed in the same compile). Needs ../shared/data/ptb.

    python benchmarks/bench_chip.py                         # loihi-like, 300 calibration tokens
    python benchmarks/bench_chip.py --profile spinnaker2-like --calib-tokens 1000
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_onnx import build_model, calibrate  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from egru_compile.cli import main as cli  # noqa: E402
from egru_compile.data import Vocabulary  # noqa: E402
from egru_compile.frontend import save_checkpoint  # noqa: E402


def row(name: str, part: dict, chips: int, hops_ratio: str = "") -> str:
    t = part["totals"]
    return (f"| {name} | {chips} | {t['cores_used']} | {t['max_core_macs']:,.0f} | {t['energy_uj']:.2f} µJ | "
            f"{t['latency_ns'] / 1e3:.1f} µs | {t['spike_hops_out']:,.0f}{hops_ratio} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", default=str(HERE.parent.parent / "shared" / "data" / "ptb"))
    ap.add_argument("--profile", default="loihi-like")
    ap.add_argument("--calib-tokens", type=int, default=300)
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--out", default=str(HERE / "results" / "chip.md"))
    a = ap.parse_args(argv)
    ptb = Path(a.ptb)
    if not (ptb / "ptb.train.txt").is_file():
        raise SystemExit(f"Penn Treebank not found at {ptb}")
    vocab = Vocabulary.from_train_file(ptb / "ptb.train.txt")
    model = build_model(len(vocab), 750, [1350, 1350, 750], 0.85)
    calibrate(model, a.activity, np.random.default_rng(0).integers(0, len(vocab), 60))
    maps, secs = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench_chip_") as td:
        ckpt = Path(td) / "ptb.pt"
        save_checkpoint(ckpt, model, vocab)
        for obj in ("traffic", "latency"):
            out = Path(td) / obj
            t0 = time.perf_counter()
            res = CliRunner().invoke(cli, [str(ckpt), "--target", a.profile, "-o", str(out), "--calib-data",
                                           str(ptb / "ptb.valid.txt"), "--calib-tokens", str(a.calib_tokens),
                                           "--placement-objective", obj])
            secs[obj] = time.perf_counter() - t0
            if res.exit_code:
                raise SystemExit(res.output)
            maps[obj] = json.loads((out / "mapping.json").read_text())
            place = [ln for ln in (out / "report.txt").read_text().splitlines() if ln.startswith("placement took")]
            secs[obj] = (secs[obj], float(place[0].split()[2]) if place else float("nan"))
    tr, la = maps["traffic"], maps["latency"]
    base_hops = tr["baseline"]["totals"]["spike_hops_out"]
    ratio = lambda m: (f" ({base_hops / m['totals']['spike_hops_out']:.2f}× less)"  # noqa: E731
                       if m["totals"]["spike_hops_out"] < base_hops else "")
    dense = tr["dense_reference"]
    lines = [f"PTB-size EGRU 750/1350/1350/750, vocab {len(vocab)}, RNN matrices pruned to 85 % (random, seed 0), "
             f"thresholds for ~{a.activity:.0%} activity, profile {a.profile}, {a.calib_tokens} calibration tokens "
             f"of ptb.valid; per token.", "",
             "| placement | chips | cores | max core MACs/token | energy/token | latency/token | spike-hops/token |",
             "|---|---|---|---|---|---|---|",
             row("sequential baseline", tr["baseline"], tr["baseline"]["chips"]),
             row("ours, `--placement-objective traffic`", tr, tr["chips"], ratio(tr)),
             row("ours, `--placement-objective latency`", la, la["chips"], ratio(la)), "",
             f"The same layers unpruned need {dense['chips']} {a.profile} chip(s) "
             f"({dense['memory_bytes'] / 2 ** 20:.1f} MiB of synaptic memory). Placement (ours + baseline): "
             f"{secs['traffic'][1]:.2f} s (traffic), {secs['latency'][1]:.2f} s (latency); whole compile (trace, "
             f"passes, calibration, placement, simulator check, reports): {secs['traffic'][0]:.1f} s / "
             f"{secs['latency'][0]:.1f} s.", "",
             f"Command: `python benchmarks/bench_chip.py --profile {a.profile} --calib-tokens {a.calib_tokens}`."]
    text = "\n".join(lines)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
