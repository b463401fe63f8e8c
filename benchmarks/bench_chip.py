"""Chip placement: sequential baseline vs ours (each objective) vs standard partitioners (METIS, KaHIP,
hypergraph), and the scaling of placement time and memory with model size.

Models (random ones: `bench_onnx.build_model`, seed 0, RNN matrices magnitude-pruned to 85 %, per-layer
thresholds bisected to ~20 % activity):

* ``ptb``: PTB-size, embedding 750, hidden 1350/1350/750, the Penn Treebank vocabulary (10,000 words);
* ``trained``: the bundled trained example examples/ptb-egru-small/model.pt;
* ``27m``: embedding 1024, hidden 4096/4096/1024 (27M synapses) — partitioners that do not scale are skipped.

Each model is traced, quantized and calibrated exactly as `egru-compile --target PROFILE --calib-data
ptb.valid.txt --calib-tokens N` does; then every placement runs on the same network:

* sequential — the baseline in every chip report;
* ours — `place(objective=traffic | latency)`: the default pipeline of the chip targets;
* at equal cores (the per-layer core counts of ours `traffic`, then the baseline's): ours (rate-sorted cut +
  repair + connectivity refinement, no tightening) and metis / kahip / hypergraph —
  `balanced_placement(method=..., min_cores=k, tighten=False)` (partitioner, then our capacity repair), laid
  out twice: by our layout search (``+ours layout``) and by the greedy + pairwise-swap layout of the previous
  release (``+swap layout``, copied below), i.e. the standard pipeline of issue 14 — with a met / not met
  line for the acceptance of issue 14 (no more messages and no more hops than the best of them).

Per token: messages (one per spike and destination core), hops, energy, busiest-core MACs (and
max/mean), latency (per layer phase the busiest core plus a barrier), and placement seconds.

``--scaling`` times `place` alone (seconds, peak RSS of a fresh process) on random models of growing size;
``--compile-27m`` runs the whole CLI compile of the 27M model under /usr/bin/time -v.

    python -m benchmarks.bench_chip                       # ptb + trained, loihi-like, 300 calibration tokens
    python -m benchmarks.bench_chip --models ptb,trained,27m --scaling --compile-27m
    python -m benchmarks.bench_chip --placement-table     # default vs baseline vs latency (issue 25 item 3)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from benchmarks.common import ptb_vocab, random_checkpoint  # noqa: E402
from egru_compile.targets.chip import load_profile, measure_unit_activity  # noqa: E402
from egru_compile.targets.chip import placement as P  # noqa: E402
from egru_compile.targets.chip.layout import hop_matrices  # noqa: E402
from egru_compile.targets.chip.network import build_network  # noqa: E402
from egru_compile.targets.chip.partition import PartitionerUnavailable  # noqa: E402


# ----------------------------------------------------------------------------------------------- old layout
def swap_layout(traffic: np.ndarray, profile, n: int, chips: int) -> np.ndarray:
    """The previous release's layout (reference only): greedy construction + pairwise-swap local search over
    dense slot x slot energy matrices, 8 sweeps; the better of greedy and identity starts."""
    n_slots = chips * profile.chip.cores
    _, Pm, _ = hop_matrices(profile, np.arange(n_slots))
    p0 = float(Pm[0, 0])
    W = np.zeros((n_slots, n_slots))
    W[:n, :n] = traffic + traffic.T
    np.fill_diagonal(W, 0.0)
    greedy = -np.ones(n_slots, np.int64)
    free = np.ones(n_slots, bool)
    placed: list[int] = []
    for a in np.argsort(-W[:n, :n].sum(1), kind="stable"):
        if not placed:
            s = int(np.argmin(Pm.sum(1)))
        else:
            cost = Pm[:, greedy[placed]] @ W[a, placed]
            cost[~free] = np.inf
            s = int(np.argmin(cost))
        greedy[a] = s
        free[s] = False
        placed.append(int(a))
    greedy[n:] = np.nonzero(free)[0]
    best, best_cost = None, np.inf
    for start in (greedy, np.arange(n_slots)):
        assign = start.copy()
        for _ in range(8):
            improved = False
            for a in range(n):
                D = Pm[assign][:, assign]
                S = ((W[a][None, :] - W) * (D - D[a][None, :])).sum(1)
                delta = S + 2 * W[a] * (D[a] - p0)
                delta[a] = 0.0
                b = int(np.argmin(delta))
                if delta[b] < -1e-9:
                    assign[a], assign[b] = assign[b], assign[a]
                    improved = True
            if not improved:
                break
        cost = float((W * Pm[assign][:, assign]).sum())
        if cost < best_cost - 1e-9:
            best, best_cost = assign, cost
    return best[:n].copy()


# ----------------------------------------------------------------------------------------------- models
def load_nets(ckpt: Path, ptb: Path, calib_tokens: int):
    """(nets with calibration activity, synapse count) as the chip target sees them."""
    from egru_compile.compile_driver import run_passes
    from egru_compile.frontend import load_source
    from egru_compile.targets.stack import extract_stack
    source = load_source(ckpt)
    graph = source.to_graph()
    calib = source.vocab.encode_file(ptb / "ptb.valid.txt", max_tokens=calib_tokens, unk="<unk>")
    graph = run_passes(graph, None, calib, False, False, needs={"int8-weights"})
    nets = build_network(extract_stack(graph))
    measure_unit_activity(graph, np.asarray(calib, np.int64), nets)
    return nets, sum(int(n.synapses.sum()) for n in nets)


# ----------------------------------------------------------------------------------------------- rows
def metrics(nets, pl, profile, seconds: float) -> dict:
    c = P.evaluate(nets, pl, profile, True)
    T = nets[0].tokens
    mx, mean = c.balance(T)
    assert not P.violations(c, profile), P.violations(c, profile)[:3]
    return {"cores": pl.n_cores, "layer_cores": P.layer_core_counts(pl), "chips": pl.chips, "packets": c.packets,
            "hops": float(c.hops_out.sum()), "energy_uj": float(c.energy_pj.sum()) / 1e6, "max_macs": mx,
            "mean_macs": mean, "balance": mx / mean,
            "latency_us": float(c.busy_ns.max(1).sum() + len(nets) * profile.energy.barrier_ns) / 1e3,
            "seconds": seconds}


STANDARD = ("metis", "kahip", "hypergraph")


def run_model(name: str, nets, profile, max_chips: int, big: bool):
    """(rows of the default pipelines, [(per-layer cores, rows at exactly those cores, acceptance line)])."""
    rows, k_ours = [], None
    t = time.perf_counter()
    seq = P.sequential_placement(nets, profile, max_chips)
    rows.append(("sequential", metrics(nets, seq, profile, time.perf_counter() - t)))
    for obj in P.OBJECTIVES:
        t = time.perf_counter()
        info: dict = {}
        _, ours = P.place(nets, profile, max_chips, True, objective=obj, info=info)
        k_ours = k_ours or P.layer_core_counts(ours)
        rows.append((f"ours `{obj}` ({info.get('chosen', 'partitioned')}; "
                     f"{'/'.join(sorted(set(info.get('partitioners', []))))})",
                     metrics(nets, ours, profile, time.perf_counter() - t)))
        print(name, rows[-1], flush=True)
    blocks = []
    for k in (k_ours, P.layer_core_counts(seq)):
        if any(k == b[0] for b in blocks):
            continue
        blocks.append((k, *equal_cores(name, nets, profile, max_chips, k, big)))
    return rows, blocks


def equal_cores(name, nets, profile, max_chips, k, big):
    """Ours and every standard partitioner at exactly the per-layer core counts k (no tightening), each laid out
    by our layout search (standard ones also by the previous release's swap layout); the acceptance line."""
    rows = []
    for method in ("ours",) + STANDARD:
        if big and method not in ("ours", "metis"):
            rows.append((method, None))                 # minutes per layer at this size: not run
            continue
        t = time.perf_counter()
        info: dict = {}
        try:
            pl = P.balanced_placement(nets, profile, max_chips, True, min_cores=k,
                                      method="auto" if method == "ours" else method, tighten=False, info=info)
        except PartitionerUnavailable as e:
            rows.append((f"{method} (not installed: {e})", None))
            continue
        except P.PlacementError as e:
            rows.append((f"{method} (no assignment within the limits at these cores: {e})", None))
            continue
        label = f"ours ({' / '.join(sorted(set(info['partitioners'])))})" \
            if method == "ours" else method
        rows.append((f"{label} + ours layout", metrics(nets, pl, profile, time.perf_counter() - t)))
        print(name, k, rows[-1], flush=True)
        if method != "ours" and not big:
            t = time.perf_counter()
            c = P.evaluate(nets, pl, profile, True)
            slots = swap_layout(c.traffic, profile, pl.n_cores, pl.chips)
            dt = time.perf_counter() - t + rows[-1][1]["seconds"]
            rows.append((f"{method} + swap layout", metrics(nets, P.Placement(method, pl.core_of, slots, pl.n_cores,
                                                                            pl.chips), profile, dt)))
            print(name, k, rows[-1], flush=True)
    ours = rows[0][1]
    std = [(n, m) for n, m in rows[1:] if m is not None]
    if ours is None or not std:
        return rows, "acceptance: not measured (ours or every standard partitioner missing at these cores)"
    bp = min(std, key=lambda r: r[1]["packets"])
    bh = min(std, key=lambda r: r[1]["hops"])
    ok = ours["packets"] <= bp[1]["packets"] + 1e-6 and ours["hops"] <= bh[1]["hops"] + 1e-6
    return rows, (f"acceptance (ours sends no more messages and no more hops per token than the best standard "
                  f"partitioner at these cores): **{'met' if ok else 'not met'}** — messages "
                  f"{ours['packets']:,.1f} vs "
                  f"{bp[1]['packets']:,.1f} ({bp[0]}), hops {ours['hops']:,.1f} vs {bh[1]['hops']:,.1f} "
                  f"({bh[0]})")


def placement_table(name: str, nets, profile, max_chips: int) -> list[str]:
    """Issue 25 item 3: the default objective vs the sequential baseline vs ``--placement-objective latency``
    on messages, hops and latency, the default's trade, and the latency objective against every standard
    partitioner at its own per-layer core counts (partitioner + our capacity repair + our layout)."""
    t = time.perf_counter()
    seq = P.sequential_placement(nets, profile, max_chips)
    rows = [("sequential baseline", metrics(nets, seq, profile, time.perf_counter() - t))]
    trade = ""
    for obj in P.OBJECTIVES:
        t = time.perf_counter()
        info: dict = {}
        _, pl = P.place(nets, profile, max_chips, True, objective=obj, info=info)
        dflt = " (default)" if obj == P.DEFAULT_OBJECTIVE else ""
        rows.append((f"`{obj}`{dflt}" + (f": {info['chosen']}" if info.get("chosen") else ""),
                     metrics(nets, pl, profile, time.perf_counter() - t)))
        print(name, rows[-1], flush=True)
        if obj == P.DEFAULT_OBJECTIVE:
            trade = info.get("trade", "")
        if obj == "latency":
            k_lat = P.layer_core_counts(pl)
    base, dm, lat = rows[0][1], rows[1 + list(P.OBJECTIVES).index(P.DEFAULT_OBJECTIVE)][1], rows[-1][1]
    qs = (("messages", "messages"), ("hops", "hops"), ("latency_us", "latency"))
    ok = all(dm[q] <= base[q] * (1 + 1e-9) + 1e-9 for q, _ in qs)
    out = table(f"### {name}: default vs baseline vs latency objective", rows)
    out += [f"default no worse than the baseline on messages, hops and latency: **{'met' if ok else 'NOT met'}**"
            f" — " + "; ".join(f"{n} {dm[q]:,.1f} vs {base[q]:,.1f}" for q, n in qs), "",
            f"default's trade (as the report prints it): {trade}", ""]
    std = []
    for method in STANDARD:
        t = time.perf_counter()
        try:
            pl = P.balanced_placement(nets, profile, max_chips, True, min_cores=k_lat, method=method,
                                      tighten=False)
        except PartitionerUnavailable as e:
            std.append((f"{method} (not installed: {e})", None))
            continue
        except P.PlacementError as e:
            std.append((f"{method} (no assignment within the limits at these cores: {e})", None))
            continue
        std.append((f"{method} + ours layout", metrics(nets, pl, profile, time.perf_counter() - t)))
        print(name, k_lat, std[-1], flush=True)
    out += table(f"Standard partitioners at the latency objective's cores {'/'.join(map(str, k_lat))} "
                 f"({sum(k_lat)} cores), same limits:", [(rows[-1][0], lat)] + std)
    ran = [(n, m) for n, m in std if m is not None]
    if ran:
        best = min(ran, key=lambda r: r[1]["latency_us"])
        out += [f"latency objective beats every standard partitioner's latency at equal cores: "
                f"**{'met' if lat['latency_us'] < best[1]['latency_us'] else 'NOT met'}** — {lat['latency_us']:.1f}"
                f" vs {best[1]['latency_us']:.1f} µs ({best[0]})", ""]
    return out


def table(title: str, rows) -> list[str]:
    out = [f"{title}", "",
           "| placement | cores (per layer) | messages/token | hops/token | energy/token | "
           "core MACs/token max / mean (max/mean) | latency/token | placement s |",
           "|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        if m is None:
            out.append(f"| {name} | – | – | – | – | – | – | not run |")
            continue
        out.append(f"| {name} | {m['cores']} ({'/'.join(map(str, m['layer_cores']))}) | {m['packets']:,.1f} | "
                   f"{m['hops']:,.1f} | {m['energy_uj']:.2f} µJ | {m['max_macs']:,.0f} / {m['mean_macs']:,.0f} "
                   f"({m['balance']:.2f}) | {m['latency_us']:.1f} µs | {m['seconds']:.1f} |")
    return out + [""]


# ----------------------------------------------------------------------------------------------- scaling
SCALING_CHILD = r"""
import json, sys, time, resource
import numpy as np
from egru_compile.targets.chip import load_profile
from egru_compile.targets.chip import placement as P
from egru_compile.targets.chip.network import LayerNet, attach_activity
s = {scale}
emb, sizes = int(1024 * s), [int(4096 * s), int(4096 * s), int(1024 * s)]
rng = np.random.default_rng(0)
nets, n_in = [], emb
for l, h in enumerate(sizes):
    ci = sum((rng.random((h, n_in)) < 0.15).astype(np.int8) for _ in range(3))
    cr = sum((rng.random((h, h)) < 0.15).astype(np.int8) for _ in range(3))
    nets.append(LayerNet(l, n_in, h, l > 0, ci.sum(1, dtype=np.int64), cr.sum(1, dtype=np.int64), ci, cr))
    n_in = h
T = 200
fo = [rng.binomial(T, rng.uniform(0.05, 0.35, n.hidden)) for n in nets]
attach_activity(nets, [np.full(emb, T)] + fo[:-1], fo, fo, T)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
seq, ours = P.place(nets, load_profile({profile!r}), 10 ** 5, True)
dt = time.perf_counter() - t
print(json.dumps({{"synapses": sum(int(n.synapses.sum()) for n in nets), "cores": ours.n_cores, "chips": ours.chips,
                  "seconds": dt, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "before_mib": base / 1024}}))
"""


def scaling(profile: str, scales) -> list[str]:
    out = ["### Placement time and memory vs model size", "",
           "Random 85 %-pruned connectivity (emb/hidden = s × 1024/4096/4096/1024), random activity, 200 tokens; "
           "`place` (baseline + ours, traffic) in a fresh process; peak = peak RSS of the process (the network "
           "itself included).", "",
           "| scale s | synapses | cores | chips | placement s | peak RSS MiB (network alone) |", "|---|---|---|---|---|---|"]
    for s in scales:
        code = SCALING_CHILD.format(scale=s, profile=profile)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if r.returncode:
            out.append(f"| {s} | failed: {r.stderr.strip().splitlines()[-1] if r.stderr else r.returncode} |")
            continue
        m = json.loads(r.stdout.strip().splitlines()[-1])
        out.append(f"| {s} | {m['synapses']:,} | {m['cores']} | {m['chips']} | {m['seconds']:.1f} | "
                   f"{m['peak_mib']:,.0f} ({m['before_mib']:,.0f}) |")
        print(out[-1], flush=True)
    return out + [""]


def compile_27m(ckpt: Path, ptb: Path, profile: str, calib_tokens: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="bench_chip_27m_") as td:
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "egru_compile.cli", "compile", str(ckpt), "--target", profile,
               "-o", str(Path(td) / "out"), "--calib-data", str(ptb / "ptb.valid.txt"), "--calib-tokens",
               str(calib_tokens), "--max-chips", "1000"]
        r = subprocess.run(cmd, capture_output=True, text=True)
    err = r.stderr.splitlines()
    wall = next((ln.split("): ")[-1] for ln in err if "Elapsed (wall clock)" in ln), "?")
    rss = next((int(ln.split(":")[-1]) for ln in err if "Maximum resident set size" in ln), 0)
    place = next((ln for ln in r.stdout.splitlines() if ln.startswith("placement took")), "")
    head = next((ln for ln in r.stdout.splitlines() if "chip(s)" in ln), "")
    status = "ok" if r.returncode == 0 else f"failed ({(r.stdout + r.stderr).strip().splitlines()[-1][:200]})"
    return ["### Whole compile of the 27M-synapse model", "",
            f"`{' '.join(['egru-compile', ckpt.name] + cmd[7:])}` (under `/usr/bin/time -v`): {status}; wall "
            f"{wall}, peak RSS {rss / 2 ** 20:.2f} GiB. {head} {place}", ""]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", default=str(ROOT / "data" / "ptb"))
    ap.add_argument("--profile", default="loihi-like")
    ap.add_argument("--calib-tokens", type=int, default=300)
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--models", default="ptb,trained")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--scales", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--compile-27m", action="store_true")
    ap.add_argument("--placement-table", action="store_true",
                    help="only the default vs baseline vs latency table (issue 25 item 3) per model")
    ap.add_argument("--out", default=None,
                    help="results file (default results/chip.md; results/chip_placement.md with --placement-table)")
    a = ap.parse_args(argv)
    a.out = a.out or str(HERE / "results" / ("chip_placement.md" if a.placement_table else "chip.md"))
    ptb = Path(a.ptb)
    if not (ptb / "ptb.train.txt").is_file():
        raise SystemExit(f"Penn Treebank not found at {ptb}")
    profile = load_profile(a.profile)
    vocab = ptb_vocab(ptb)
    lines = [f"# Chip placement ({a.profile}, {a.calib_tokens} calibration tokens of ptb.valid)", "",
             "Per token. messages = spike messages (one per spike and destination core); hops = mesh hops "
             "of those messages (a chip-to-chip link counts one); latency = per layer phase the busiest core, plus "
             "a barrier; core MACs = MACs per token of the busiest core / the mean core (max/mean, "
             "`CoreCosts.balance`); placement s = wall seconds of partition + repair (+ refinement) + layout. "
             "`ours traffic` uses at most the baseline's cores per layer (one fewer where the layer still fits); "
             "`ours latency` adds the spare cores of the occupied chips to the bottleneck layer. The equal-core "
             "tables run ours and every standard partitioner (METIS, KaHIP, Mt-KaHyPar connectivity) at exactly "
             "the same per-layer core counts — those of `ours traffic`, then the baseline's — under the same "
             "per-core limits: partitioner, our capacity repair (moves, then exchanges where every core is full), "
             "then our layout search or the previous release's greedy + pairwise-swap layout. Ours there = "
             "rate-sorted cut, repair, connectivity refinement (`partition.py`, `refine.py`), our layout.", ""]
    with tempfile.TemporaryDirectory(prefix="bench_chip_") as td:
        for name in filter(None, a.models.split(",")):
            if name == "ptb":
                ckpt = random_checkpoint(Path(td) / "ptb.pt", vocab, 750, [1350, 1350, 750], a.activity)
                title = "PTB-size random model (750/1350/1350/750, 85 % pruned, ~20 % activity)"
            elif name == "trained":
                ckpt = ROOT / "examples" / "ptb-egru-small" / "model.pt"
                title = "Trained example (examples/ptb-egru-small/model.pt)"
            elif name == "27m":
                ckpt = random_checkpoint(Path(td) / "m27.pt", vocab, 1024, [4096, 4096, 1024], a.activity)
                title = "27M-synapse random model (1024/4096/4096/1024, 85 % pruned, ~20 % activity)"
            else:
                raise SystemExit(f"unknown model {name}")
            nets, syn = load_nets(ckpt, ptb, a.calib_tokens)
            if a.placement_table:
                lines += placement_table(f"{title}: {syn:,} synapses", nets, profile, 10 ** 4)
                continue
            rows, blocks = run_model(name, nets, profile, 10 ** 4, big=name == "27m")
            lines += table(f"### {title}: {syn:,} synapses", rows)
            for k, brows, verdict in blocks:
                lines += table(f"At equal cores {'/'.join(map(str, k))} per layer ({sum(k)} cores), same limits:",
                               brows)
                lines += [verdict, ""]
                print(verdict, flush=True)
            del nets
            if name == "27m" and a.compile_27m:
                lines += compile_27m(ckpt, ptb, a.profile, 200)
    if a.scaling:
        lines += scaling(a.profile, [float(s) for s in a.scales.split(",")])
    lines.append(f"Command: `python -m benchmarks.bench_chip {' '.join(argv if argv is not None else sys.argv[1:])}`"
                 f" (peak RSS of this run {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB).")
    text = "\n".join(lines)
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
