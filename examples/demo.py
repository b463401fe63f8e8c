"""`make demo`: compile the bundled example model for every implemented target and evaluate it.

Runs the same commands a user would type (through the CLI entry point), so it doubles as an end-to-end check:

    egru-compile MODEL --target T -o OUT/T --calib-data ptb.valid.txt --report OUT/macs.json
    egru-compile eval OUT/T --data ptb.test.txt --max-tokens N
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

TARGETS = ["onnx", "tvm", "loihi-like"]


def run(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "egru_compile.cli", *args]
    print("$ egru-compile " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ptb", required=True, help="folder with ptb.{train,valid,test}.txt")
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--tokens", type=int, default=2000)
    a = ap.parse_args()
    model, ptb, out = Path(a.model), Path(a.ptb), Path(a.out)
    if not model.is_file():
        print(f"error: example model {model} is missing", file=sys.stderr)
        return 1
    out.mkdir(exist_ok=True)
    have_ptb = (ptb / "ptb.test.txt").is_file()
    if run(["inspect", str(model)]).returncode:
        return 1
    calib = ["--calib-data", str(ptb / "ptb.valid.txt"), "--calib-tokens", "1000"] if have_ptb else []
    built = []
    for t in TARGETS:
        proc = run([str(model), "--target", t, "-o", str(out / t), "--force", *calib,
                    "--report", str(out / "macs.json")])
        if proc.returncode:
            return proc.returncode
        built.append(t)
    if not have_ptb:
        print(f"(no Penn Treebank at {ptb}: skipping evaluation)")
        return 0
    for artifact in [str(model)] + [str(out / t) for t in built]:
        if run(["eval", artifact, "--data", str(ptb / "ptb.test.txt"), "--max-tokens", str(a.tokens),
                "--quiet"]).returncode:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
