"""`make demo`: compile the bundled example model for every implemented target and evaluate it.

Runs the same commands a user would type (through the CLI entry point), so it doubles as an end-to-end check:

    egru-compile MODEL --target T -o OUT/T --calib-data ptb.valid.txt --report OUT/macs.json
    egru-compile eval OUT/T --data ptb.test.txt --max-tokens N

The Penn Treebank text comes from the repository's data/ptb (shipped; see data/ptb/README.md) unless --ptb
names another folder. It ends with one line per artifact: the test perplexity on the first N tokens.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

TARGETS = ["onnx", "tvm", "loihi-like"]
ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "egru_compile.cli", *args]
    print("$ egru-compile " + " ".join(args), flush=True)
    proc = subprocess.run(cmd, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "examples" / "ptb-egru-small" / "model.pt"))
    ap.add_argument("--ptb", default=str(ROOT / "data" / "ptb"), help="folder with ptb.{train,valid,test}.txt "
                    "(default: the repository's data/ptb)")
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--tokens", type=int, default=2000)
    a = ap.parse_args()
    model, ptb, out = Path(a.model), Path(a.ptb), Path(a.out)
    if not model.is_file():
        print(f"error: example model {model} is missing", file=sys.stderr)
        return 1
    missing = [f for f in ("ptb.valid.txt", "ptb.test.txt") if not (ptb / f).is_file()]
    if missing:
        print(f"error: Penn Treebank text {ptb / missing[0]} is missing (the repository ships it in data/ptb)",
              file=sys.stderr)
        return 1
    out.mkdir(exist_ok=True)
    if run(["inspect", str(model)]).returncode:
        return 1
    calib = ["--calib-data", str(ptb / "ptb.valid.txt"), "--calib-tokens", "1000"]
    built = []
    for t in TARGETS:
        proc = run([str(model), "--target", t, "-o", str(out / t), "--force", *calib,
                    "--report", str(out / "macs.json")])
        if proc.returncode:
            return proc.returncode
        built.append(t)
    results = []
    for artifact in [str(model)] + [str(out / t) for t in built]:
        proc = run(["eval", artifact, "--data", str(ptb / "ptb.test.txt"), "--max-tokens", str(a.tokens),
                    "--quiet"])
        if proc.returncode:
            return 1
        ppl = next((ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("perplexity")), "?")
        results.append((artifact, ppl))
    print(f"\ntest perplexity, first {a.tokens} tokens of {ptb / 'ptb.test.txt'}:")
    for artifact, ppl in results:
        print(f"  {artifact:40s} {ppl}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
