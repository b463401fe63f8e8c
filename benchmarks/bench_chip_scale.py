"""Whole-compile scaling of the chip targets: wall seconds, placement seconds and peak memory vs synapses.

Random EGRU language models of growing size (embedding / hidden = s x 1024 / 4096 / 4096 / 1024, the PTB
vocabulary, RNN matrices magnitude-pruned to 85 %, thresholds bisected to ~20 % activity: the models of
`bench_chip.random_checkpoint`; s = 1 is the 27M-synapse model of issue 14) are compiled by the CLI, one
fresh process per size, exactly as a user would::

    egru-compile MODEL --target loihi-like --calib-data data/ptb/ptb.valid.txt --calib-tokens 200 --max-chips 1000

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
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


#: named sizes: (embedding, hidden sizes); a float scale s means (s x 1024, s x [4096, 4096, 1024])
SIZES = {"27M": (1024, [4096, 4096, 1024]), "107M": (2048, [8192, 8192, 2048])}


def shape_of(scale: str) -> tuple[int, list[int]]:
    if scale in SIZES:
        return SIZES[scale]
    s = float(scale)
    return int(1024 * s), [int(4096 * s), int(4096 * s), int(1024 * s)]


def checkpoint(ckpt_dir: Path, scale: str, ptb: Path, activity: float) -> Path:
    """The random model of `scale` (built once by `lean_checkpoint`, then reused from `ckpt_dir`)."""
    emb, hidden = shape_of(scale)
    path = ckpt_dir / f"lean_{emb}_{'_'.join(map(str, hidden))}.pt"
    if not path.is_file():
        from benchmarks.common import ptb_vocab
        t = time.perf_counter()
        lean_checkpoint(path, ptb_vocab(ptb), emb, hidden, activity)
        print(f"built {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def _pruned(rng, rows: int, cols: int, keep: float, draw, chunk: int = 512):
    """Dense [rows, cols] float32 with a Bernoulli(`keep`) mask of values from `draw(rng, n)`, built in row
    chunks."""
    import torch
    dense = torch.zeros(rows, cols)
    for lo in range(0, rows, chunk):
        m = rng.random((min(chunk, rows - lo), cols)) < keep
        blk = np.zeros(m.shape, np.float32)
        blk[m] = draw(rng, int(m.sum()))
        dense[lo:lo + len(m)] = torch.from_numpy(blk)
    return dense


def lean_checkpoint(path: Path, vocab, emb: int, hidden: list[int], activity: float, sparsity: float = 0.85,
                    seed: int = 0, calib_len: int = 60, iters: int = 14) -> Path:
    """A random 85 %-pruned EGRU language model built without the dense init or `torch.nn.utils.prune`
    (`benchmarks.common.random_checkpoint` needs ~4x the weights' size and a dense bisection at 107M synapses):
    the model is created on the meta device and every weight matrix is built row-chunk by row-chunk with a
    Bernoulli(0.15) mask — magnitude pruning of an i.i.d. init keeps uniformly random positions — and the kept
    values drawn as magnitude pruning leaves them (kernel: the top 15 % of xavier-uniform, |w| in
    [0.85 a, a]; recurrent kernel: the orthogonal init's ~N(0, 1/(3h)) tail beyond its 85 % quantile).
    Thresholds are bisected layer by layer to ~`activity` as `benchmarks.common.calibrate` does (same tokens,
    same iterations), each layer run with sparse (CSR) matrices on the previous layer's cached outputs."""
    import torch
    from egru_compile.frontend import save_checkpoint
    from egru_compile.model import EGRUConfig, EGRULanguageModel
    rng = np.random.default_rng(seed)
    keep = 1.0 - sparsity
    cfg = EGRUConfig(len(vocab), emb, list(hidden))
    with torch.device("meta"):
        model = EGRULanguageModel(cfg)
    sd = {"embeddings.weight": torch.from_numpy(rng.uniform(-0.1, 0.1, (len(vocab), emb)).astype(np.float32)),
          "decoder.decoder.bias": torch.zeros(len(vocab))}
    sd["decoder.decoder.weight"] = sd["embeddings.weight"]
    tail = 1.4395314709384563                     # |N(0, 1)|'s 85 % quantile (N(0, 1)'s 92.5 % quantile)
    csr = []
    for l, (n_in, h) in enumerate(zip(cfg.layer_input_sizes(), hidden)):
        a = float(np.sqrt(6.0 / (n_in + 3 * h)))

        def unif(r, n, a=a):
            return (r.uniform(sparsity * a, a, n) * r.choice([-1.0, 1.0], n)).astype(np.float32)

        def gauss_tail(r, n, sd_=1.0 / np.sqrt(3 * h)):
            z = np.abs(r.standard_normal(n))
            bad = z < tail
            while bad.any():
                z[bad] = np.abs(r.standard_normal(int(bad.sum())))
                bad = z < tail
            return (z * sd_ * r.choice([-1.0, 1.0], n)).astype(np.float32)
        W, R = _pruned(rng, n_in, 3 * h, keep, unif), _pruned(rng, h, 3 * h, keep, gauss_tail)
        sd.update({f"rnns.{l}.kernel": W, f"rnns.{l}.recurrent_kernel": R,
                   f"rnns.{l}.bias": torch.from_numpy(rng.normal(0, 0.1, 3 * h).astype(np.float32)),
                   f"rnns.{l}.recurrent_bias": torch.from_numpy(rng.normal(0, 0.1, 3 * h).astype(np.float32)),
                   f"rnns.{l}.thr": torch.zeros(h)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                                   # "sparse CSR support is in beta"
            csr.append((W.t().to_sparse_csr(), R.t().to_sparse_csr()))
    toks = np.random.default_rng(0).integers(0, len(vocab), calib_len)
    x = sd["embeddings.weight"][torch.from_numpy(toks)]                       # [T, emb]
    for l, h in enumerate(hidden):
        Wt, Rt = csr[l]
        gx = (Wt @ x.t()).t() + sd[f"rnns.{l}.bias"]                          # [T, 3h]: the input is fixed
        b_rec = sd[f"rnns.{l}.recurrent_bias"]

        def run(thr):
            c, y, ys = torch.zeros(h), torch.zeros(h), []
            for t in range(len(toks)):
                gh = Rt @ y + b_rec
                z = torch.sigmoid(gx[t, :h] + gh[:h])
                r = torch.sigmoid(gx[t, h:2 * h] + gh[h:2 * h])
                g = torch.tanh(gx[t, 2 * h:] + r * gh[2 * h:])
                ct = z * c + (1 - z) * g
                o = (ct - thr > 0).float()
                y, c = o * ct, ct - o * thr
                ys.append(y)
            return torch.stack(ys)
        lo, hi = 0.0, 1.0
        for _ in range(iters):
            mid = (lo + hi) / 2
            act = float((run(mid) != 0).float().mean())
            lo, hi = (mid, hi) if act > activity else (lo, mid)
        sd[f"rnns.{l}.thr"].fill_((lo + hi) / 2)
        x = run((lo + hi) / 2)
        print(f"  layer {l}: threshold {(lo + hi) / 2:.4f}, activity {float((x != 0).float().mean()):.3f}",
              flush=True)
    del csr
    model.load_state_dict(sd, assign=True)
    model.decoder.decoder.weight = model.embeddings.weight
    save_checkpoint(path, model, vocab)
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
    if keep:                                       # the compile's own output, for what the table leaves out
        (keep / f"{ckpt.stem}.{profile}.log").write_text(r.stdout + "\n" + r.stderr)
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
           "placement_s": num(r"chip target: placement ([\d.]+) s"), "frontend_s": (num(r"frontend: .*\(([\d.]+) ms\)")
                                                                          or 0) / 1e3,
           "passes_s": (num(r"\[pass\] total\s+([\d.]+) ms") or 0) / 1e3,
           "placement_cpu_s": num(r"chip target: placement [\d.]+ s \(([\d.]+) s CPU\)"),
           "sim_s": num(r"simulation ([\d.]+) s \("), "sim_cpu_s": num(r"simulation [\d.]+ s \(([\d.]+) s CPU"),
           "synapses": (mapping.get("totals") or {}).get("synapses"),
           "cores": len(mapping.get("cores") or []), "chips": mapping.get("chips"),
           "bound": int((re.search(r"synaptic-memory bound: ([\d,]+) cores", report) or [None, "0"])[1]
                        .replace(",", "")),
           "layout": (re.search(r"^layout: (.*)$", report, re.M) or [None, "?"])[1]}
    if not res["ok"]:
        res["error"] = (text.strip().splitlines() or ["?"])[-1][:300]
    return res


HEADER = ["| model | profile | synapses | cores | chips | memory bound (cores) | cores / bound | placement s (CPU) | "
          "simulation s (CPU) | frontend s | passes s | wall s | CPU s | peak RSS GiB | load | layout |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]


def row(scale: str, profile: str, m: dict) -> str:
    emb, hidden = shape_of(scale)
    name = f"{scale} ({emb}/{'/'.join(map(str, hidden))})"
    if not m["ok"]:
        return (f"| {name} | {profile} | failed after {m['wall_s']:.0f} s wall, {m['cpu_s']:.0f} s CPU, peak "
                f"{m['peak_gib']:.2f} GiB: {m['error']} | | | | | | | | | | | | | |")
    bound = m["bound"] or float("nan")
    m = {k: (float("nan") if v is None else v) for k, v in m.items()}
    return (f"| {name} | {profile} | {m['synapses']:,} | {m['cores']:,} | {m['chips']:,} | "
            f"{bound:,} | {m['cores'] / bound:.2f} | {m['placement_s']:.1f} ({m['placement_cpu_s']:.1f}) | "
            f"{m['sim_s']:.1f} ({m['sim_cpu_s']:.1f}) | {m['frontend_s']:.1f} | {m['passes_s']:.1f} | "
            f"{m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['peak_gib']:.2f} | {m['load_before']:.1f} → "
            f"{m['load_after']:.1f} | {m['layout']} |")


def merge(out: Path, rows: dict, commands: dict, intro: str) -> str:
    """The results file with `rows` ((model, profile) -> table row) replacing or joining the rows already
    there, and each row's command listed under the table."""
    old_rows, old_cmds = {}, {}
    if out.is_file():
        for ln in out.read_text().splitlines():
            cells = [c.strip() for c in ln.split("|")]
            if ln.startswith("| ") and len(cells) > 3 and cells[1] not in ("model", "---") and "(" in cells[1]:
                old_rows[(cells[1].split(" ")[0], cells[2])] = ln
            elif ln.startswith("* `") and "`: `" in ln:
                key, cmd = ln[3:].split("`: `", 1)
                old_cmds[tuple(key.split(" on "))] = cmd.rstrip("`")
    old_rows.update(rows)
    old_cmds.update(commands)
    order = sorted(old_rows, key=lambda k: (k[1], float(k[0][:-1]) * 4 if k[0] in SIZES else float(k[0])))
    lines = [intro, "", *HEADER, *[old_rows[k] for k in order], "", "Commands (one per row):", ""]
    lines += [f"* `{k[0]} on {k[1]}`: `{old_cmds[k]}`" for k in order if k in old_cmds]
    return "\n".join(lines) + "\n"


INTRO = ("# Whole-compile scaling of the chip targets (200 calibration tokens of ptb.valid)\n\n"
         "Random EGRU models (emb / hidden as named; a number s means s × 1024 / 4096 / 4096 / 1024; 85 % pruned, "
         "thresholds for ~20 % activity, built by `bench_chip_scale.lean_checkpoint`), one `egru-compile --target "
         "PROFILE --calib-data data/ptb/ptb.valid.txt --calib-tokens 200 --max-chips 1000 -v` per row in a fresh "
         "process under `/usr/bin/time -v`, `nice`, with an address-space limit. memory bound: the fewest cores "
         "that can hold the model's synapses and unit state in synaptic memory (report.txt `synaptic-memory bound`); "
         "placement: `place` + its evaluations, wall (CPU) s from report.txt; simulation: the calibration text on "
         "the simulated chip; frontend / passes: wall s of the `-v` timings; wall, CPU (user + system) s and peak "
         "RSS of the whole compile; load: the machine's 1-minute load average before → after (2 cores, shared); "
         "layout: the report's layout line (a verified local optimum, or where it stopped).")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", default=str(ROOT / "data" / "ptb"))
    ap.add_argument("--profile", default="loihi-like")
    ap.add_argument("--scales", default="0.25,0.5,27M",
                    help="comma-separated sizes: a number s (s x 1024/4096/4096/1024) or a name "
                         f"({', '.join(f'{k} = {v[0]}/' + '/'.join(map(str, v[1])) for k, v in SIZES.items())})")
    ap.add_argument("--calib-tokens", type=int, default=200)
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--ckpt-dir", default=None, help="where checkpoints are built / reused (default: a temp dir)")
    ap.add_argument("--keep", default=None, help="keep the compiled artifacts under this directory")
    ap.add_argument("--mem-limit-gb", type=float, default=16.0, help="address-space limit of each compile")
    ap.add_argument("--out", default=str(HERE / "results" / "chip_scale.md"))
    a = ap.parse_args(argv)
    ptb = Path(a.ptb)
    if not (ptb / "ptb.valid.txt").is_file():
        raise SystemExit(f"error: Penn Treebank not found at {ptb}")
    try:
        scales = [x.strip() for x in a.scales.split(",") if x.strip()]
        for x in scales:
            shape_of(x)
    except ValueError:
        raise SystemExit(f"error: --scales {a.scales!r}: each size is a number or one of {', '.join(SIZES)}")
    tmp = tempfile.TemporaryDirectory(prefix="bench_chip_scale_ckpt_")
    ckpt_dir = Path(a.ckpt_dir or tmp.name)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    keep = Path(a.keep) if a.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    cmd = "python -m benchmarks.bench_chip_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    rows, cmds, failed = {}, {}, []
    for scale in scales:
        ckpt = checkpoint(ckpt_dir, scale, ptb, a.activity)
        m = compile_one(ckpt, ptb, a.profile, a.calib_tokens, int(a.mem_limit_gb * 2 ** 20), keep)
        rows[(scale, a.profile)] = row(scale, a.profile, m)
        cmds[(scale, a.profile)] = cmd
        print(rows[(scale, a.profile)], flush=True)
        if not m["ok"]:
            failed.append(f"{scale} on {a.profile}: {m.get('error', '?')}")
    out = Path(a.out)
    text = merge(out, rows, cmds, INTRO)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    if failed:          # the row says so in the table; the exit status says so to scripts and CI
        raise SystemExit("error: compile failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
