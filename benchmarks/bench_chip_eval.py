"""Chip eval speed and the simulated chip figures of the PTB-size model, decoder on the host and on chip.

PTB-size layers (embedding 750, hidden 1350,1350,750, the Penn Treebank vocabulary), random weights with the
RNN matrices magnitude-pruned to 85 % (`bench_onnx.build_model`, seed 0), thresholds for ~20 % activity (as
bench_chip.py). The checkpoint is compiled with the CLI as a user would —

    egru-compile ptb.pt --target loihi-like --calib-data data/ptb/ptb.valid.txt --calib-tokens N --decoder host|chip

— and the artifact is evaluated in-process (`runtime.evaluate`, the code `egru-compile eval` runs) on the
first --eval-tokens tokens of ptb.test, with TVM / BLAS / OpenMP held to one thread (one core). Prints the
eval speed (tokens/s, the issue-16 goal is >= 100) and the simulated per-token figures beside the compile's
estimates (mapping.json "totals": the whole configuration, decoder cores included). The machine's load
average is printed with it: on a shared machine wall-clock tokens/s falls with the load; tokens per
CPU-second of the eval process (one thread) is what one unshared core would give.

    python -m benchmarks.bench_chip_eval                   # loihi-like, decoder host and chip
    python -m benchmarks.bench_chip_eval --decoder host --eval-tokens 1000
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent

from benchmarks.common import build_model, calibrate  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from egru_compile.cli import main as cli  # noqa: E402
from egru_compile.data import Vocabulary  # noqa: E402
from egru_compile.frontend import save_checkpoint  # noqa: E402
from egru_compile.runtime import open_artifact  # noqa: E402
from egru_compile.runtime.evaluate import evaluate, load_eval_tokens  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", default=str(HERE.parent / "data" / "ptb"))
    ap.add_argument("--profile", default="loihi-like")
    ap.add_argument("--calib-tokens", type=int, default=200)
    ap.add_argument("--eval-tokens", type=int, default=500)
    ap.add_argument("--decoder", choices=["host", "chip", "both"], default="both")
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--artifacts", help="keep the compiled artifacts here (default: a temporary directory)")
    ap.add_argument("--reuse", action="store_true", help="with --artifacts: evaluate the artifacts already there")
    a = ap.parse_args(argv)
    ptb = Path(a.ptb)
    if not (ptb / "ptb.train.txt").is_file():
        raise SystemExit(f"Penn Treebank not found at {ptb}")
    vocab = Vocabulary.from_train_file(ptb / "ptb.train.txt")
    decoders = ["host", "chip"] if a.decoder == "both" else [a.decoder]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_chip_eval_") as td:
        root = Path(a.artifacts or td)
        root.mkdir(parents=True, exist_ok=True)
        ckpt = root / "ptb.pt"
        if not (a.reuse and ckpt.is_file()):
            model = build_model(len(vocab), 750, [1350, 1350, 750], 0.85)
            calibrate(model, a.activity, np.random.default_rng(0).integers(0, len(vocab), 60))
            save_checkpoint(ckpt, model, vocab)
        for dec in decoders:
            out = root / f"{a.profile}.{dec}"
            t0 = time.perf_counter()
            if not (a.reuse and (out / "mapping.json").is_file()):
                res = CliRunner().invoke(cli, [str(ckpt), "--target", a.profile, "-o", str(out), "--force",
                                               "--calib-data", str(ptb / "ptb.valid.txt"), "--calib-tokens",
                                               str(a.calib_tokens), "--decoder", dec])
                if res.exit_code:
                    raise SystemExit(res.output)
            compile_s = time.perf_counter() - t0
            m = json.loads((out / "mapping.json").read_text())
            runner = open_artifact(out)
            ids = load_eval_tokens(ptb / "ptb.test.txt", runner.vocab, a.eval_tokens + 1)
            cpu0 = time.process_time()
            r = evaluate(runner, ids, quiet=True)
            r["tokens_per_cpu_second"] = r["tokens"] / (time.process_time() - cpu0)
            rows.append((dec, m, r, compile_s, os.getloadavg()[0]))
    print(f"PTB-size EGRU 750/1350/1350/750, vocab {len(vocab)}, RNN pruned to 85 % (random, seed 0), ~"
          f"{a.activity:.0%} activity; {a.profile}; compiled with {a.calib_tokens} calibration tokens of "
          f"ptb.valid; chip eval of the first {a.eval_tokens} tokens of ptb.test on one thread; per token.\n")
    print("| decoder | chips | cores | eval tokens/s wall (load avg) / per CPU-second | synops est. / sim. "
          "| decoder synops (chip) "
          "| host decoder MACs | messages | hops est. / sim. | busiest link | energy est. / sim. | "
          "latency est. / sim. |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for dec, m, r, compile_s, load in rows:
        t, c = m["totals"], r["chip"]["totals"]
        host = r["chip"].get("host")
        host_macs = f"{host['decoder_macs']:,.0f}" if host else "-"
        print(f"| {dec} | {c['chips']} | {c['cores_used']} | {r['tokens_per_second']:.1f} ({load:.1f}) / "
              f"{r['tokens_per_cpu_second']:.1f} | "
              f"{t['synops_estimated']:,.0f} / {c['synops']:,.0f} | {c['decoder_synops']:,.0f} | "
              f"{host_macs} | "
              f"{c['messages_out']:,.0f} | {t['hops_out']:,.0f} / {c['hops_out']:,.0f} | "
              f"{c['busiest_link_messages']:,.0f} | {t['energy_pj'] / 1e6:.2f} / {c['energy_pj'] / 1e6:.2f} µJ | "
              f"{t['latency_ns'] / 1e3:.1f} / {c['latency_ns'] / 1e3:.1f} µs |")
    print("\nEstimates (mapping.json, compile time, from calibration activity) and simulated figures (the chip "
          "eval's counters on ptb.test) cover the whole configuration, decoder cores included with --decoder chip "
          "(synops = RNN + decoder cores; the decoder cores' share in its own column). "
          f"Perplexity (random weights) {rows[0][2]['perplexity']:.1f}. Compile times"
          + (" (artifacts reused)" if a.reuse else "") + ": " +
          ", ".join(f"{d} {s:.0f} s" for d, _, _, s, _ in rows) + ".")
    print(f"\nCommand: `python -m benchmarks.bench_chip_eval --profile {a.profile} --calib-tokens "
          f"{a.calib_tokens} --eval-tokens {a.eval_tokens} --decoder {a.decoder}`.")


if __name__ == "__main__":
    main()
