"""Energy of a partial-sum fan-in *split* mapping vs SANA-FE (issue 25, item 4; `bench_energy.py` does the
unsplit one).

A small random EGRU (default embedding 256, hidden 512/512/256, PTB vocabulary, RNN matrices pruned to 85 %,
thresholds for ~20 % activity) is compiled with the CLI for a profile derived from `loihi2-like` with
``input_axons`` lowered to 256 (default; ``--input-axons``): every layer's unit fan-in (~300-400 distinct
sources) exceeds it, so `split.py` splits every layer by source range. The compile is calibrated on the
first N tokens of ptb.valid, the same N tokens replayed here; the spike trains are the chip simulator's
(`ChipSimulator`, layer backend, the compiled int8 program and placement).

Replay through SANA-FE (PyPI `sanafe` 2.2.9, GPL-3.0: used only here, never imported by egru_compile), on
the cores and mesh slots of our placement (SANA-FE tile id = x * height + y):

* a unit's *home* is 3 neurons (z, r, g compartments) on its home core; the g neuron replays its spikes;
* every remote part (unit j, source range p >= 1) is 3 neurons (its z, r, g partial-sum accumulators, the
  compartments our capacity model reserves) on the part's core; its g accumulator replays the part's
  partial-sum message train (the tokens in which the part received an event, recounted here from the spikes
  and the synapses and checked against the simulator's ``psum_messages``) and has 3 connections to the home's
  z, r, g neurons: one packet to the home core and 3 synaptic events there per partial sum (our
  ``psum_adds``); SANA-FE messages carry no payload, so this *is* how it charges a graded message;
* every W/R synapse is one zero-weight connection from the source's g neuron (or embedding neuron) to the
  accumulator of the part that holds it (home for range 0);
* the embedding (dense: every dim is an event every token) is replay neurons on the free cores standing for
  the host; their soma is free and their packets' network energy is reported apart (our model charges no
  host -> chip traffic), read from SANA-FE's message trace, which also splits the network energy into spike
  and partial-sum messages.

Architectures (both declare each core's soma units one by one, so a core holds exactly the replay units it
uses, and allow the profile's compartments per core instead of Loihi 1's 1,024 — capacity only, no cost):
(a) ``stock``: SANA-FE's shipped ``loihi.yaml``, every replayed neuron (home and part) charged like its
``loihi_lif`` (51.2 + 21.6 pJ per step, 69.3 pJ per spike); (b) ``profile``: the same mesh with our profile's
per-event figures charged as our formula charges them (one message = one packet).

    python -m benchmarks.bench_energy_split                  # both architectures, 100 tokens (~1-2 min)
    python -m benchmarks.bench_energy_split --tables-only    # rewrite results/energy_split.md from the json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

from benchmarks.bench_energy_split_report import markdown  # noqa: E402
from benchmarks.common import random_checkpoint  # noqa: E402
from benchmarks.sanafe_split_arch import CPU, DEND_MAX, per_core_arch, profile_template, stock_template  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from egru_compile.cli import main as cli  # noqa: E402
from egru_compile.data import Vocabulary  # noqa: E402
from egru_compile.targets.chip import load_program, load_profile  # noqa: E402
from egru_compile.targets.chip.profile import PROFILE_DIR  # noqa: E402
from egru_compile.targets.chip.simulate import ChipSimulator  # noqa: E402


# ------------------------------------------------------------------------------------------ profile, model
def derived_profile(input_axons: int, workdir: Path) -> Path:
    """loihi2-like with a lower input-axon limit (everything else, costs included, unchanged)."""
    txt = (PROFILE_DIR / "loihi2-like.toml").read_text()
    new = re.sub(r'^name = "loihi2-like"', f'name = "loihi2-axons{input_axons}"', txt, count=1, flags=re.M)
    new = re.sub(r"^input_axons = 8192 ", f"input_axons = {input_axons} ", new, count=1, flags=re.M)
    assert new.count(f"input_axons = {input_axons} ") == 1 and "loihi2-axons" in new, "loihi2-like.toml changed"
    path = workdir / f"loihi2-axons{input_axons}.toml"
    path.write_text(new)
    return path


def simulate(stack, cm, profile, ids) -> tuple[list[np.ndarray], dict, list]:
    """Spike trains [T, h] per layer, our energy split (pJ per token) and the partial sums sent per (unit,
    remote part) [h, P-1] per layer (None: not split), from the event simulator."""
    sim = ChipSimulator(stack, cm, profile=profile, backend="layer")
    T = len(ids)
    spikes = [np.zeros((T, lw.hidden), bool) for lw in stack.layers]
    for t, tok in enumerate(ids):
        sim.step(int(tok))
        for l in range(len(spikes)):
            spikes[l][t] = sim.y[l] != 0
    c, e = sim.counters, profile.energy
    syn = float(c["synops"].sum()) * e.synop_pj
    adds = float(c["psum_adds"].sum()) * e.synop_pj
    act = float(c["updates_active"].sum())
    neuron = act * e.neuron_active_pj + (float(c["updates"].sum()) - act) * e.neuron_inactive_pj
    psum_net = float(sum((ps["count"] * np.where(ps["has"], ps["pj"], 0.0)).sum() for ps in sim._psum
                         if ps is not None))
    # the remote parts' accumulators (3 compartments each, every token; active in a token the part sends)
    cpu = profile.core.compartments_per_unit
    parts = sum(float(ps["has"].sum()) * T * cpu * e.neuron_inactive_pj + float(ps["count"].sum()) * cpu *
                (e.neuron_active_pj - e.neuron_inactive_pj) for ps in sim._psum if ps is not None)
    neuron -= parts
    total = float(c["energy_pj"].sum())
    out = {"synapse": syn, "psum_adds": adds, "neuron": neuron, "parts": parts,
           "network_spikes": total - syn - adds - neuron - parts - psum_net, "network_psums": psum_net, "total": total}
    out = {k: v / T for k, v in out.items()}
    out.update(synops=float(c["synops"].sum()) / T, psum_messages=float(c["psum_messages"].sum()) / T,
               messages=float(c["messages_out"].sum()) / T, hops=float(c["hops_out"].sum()) / T)
    return spikes, out, [None if ps is None else ps["count"].copy() for ps in sim._psum]


def psum_trains(stack, splits, spikes) -> list[np.ndarray | None]:
    """[T, h, P] bool per split layer: part p of unit j received an event in token t (its sources: the layer
    input of token t — all embedding dims for layer 0 — and the layer's own spikes of token t - 1)."""
    out = []
    for l, (lw, sp) in enumerate(zip(stack.layers, splits)):
        if sp is None:
            out.append(None)
            continue
        pres = np.concatenate([_gate_any(lw.W, lw.hidden), _gate_any(lw.R, lw.hidden)], axis=1)   # [h, n_src]
        T = spikes[l].shape[0]
        act = np.zeros((T, pres.shape[1]), bool)
        act[:, :lw.n_in] = True if l == 0 else spikes[l - 1]
        act[1:, lw.n_in:] = spikes[l][:-1]
        got = np.stack([act[:, lo:hi].astype(np.int64) @ pres[:, lo:hi].T.astype(np.int64) > 0
                        for lo, hi in zip(sp.bounds[:-1], sp.bounds[1:])], axis=2)
        got[:, :, 0] = False                              # part 0 is the home: no message
        assert not (got & (sp.part_core[None] < 0)).any()
        out.append(got)
    return out


def _psum_hops(cm, profile):
    """[h, P-1] hops of each (unit, remote part)'s partial-sum route per split layer (None: not split)."""
    from egru_compile.targets.chip.costs import CostModel
    from egru_compile.targets.chip.split import psum_routes
    return [None if sp is None else psum_routes(sp, np.asarray(home), np.asarray(cm.slot_of_core),
                                                CostModel(profile))["hops"] for sp, home in zip(cm.splits, cm.core_of)]


def _gate_any(M, h):
    d = M.to_dense() != 0
    return d[:h] | d[h:2 * h] | d[2 * h:]


# ------------------------------------------------------------------------------------------ replay
def sanafe_replay(template, stack, cm, profile, spikes, trains, workdir: Path) -> dict:
    import sanafe
    g = profile.chip
    T, L = spikes[0].shape[0], len(stack.layers)
    slots = np.asarray(cm.slot_of_core)
    if np.any(slots >= g.cores):
        raise SystemExit("error: this comparison needs a one-chip placement (SANA-FE models one mesh)")

    def hw(slot):                                     # (SANA-FE tile id, core in tile) of a slot
        tile = int(slot) // g.cores_per_tile
        return (tile % g.tiles_x) * g.tiles_y + tile // g.tiles_x, int(slot) % g.cores_per_tile
    splits = cm.splits or [None] * L
    # neurons: (group, index) -> slot; the banks each core needs
    home_slot = [np.repeat(slots[np.asarray(cm.core_of[l])][None], CPU, 0).reshape(-1) for l in range(L)]
    part_idx, part_slot = [], []
    for l, sp in enumerate(splits):
        if sp is None:
            part_idx.append(None)
            part_slot.append(np.zeros(0, np.int64))
            continue
        idx = -np.ones(sp.part_core.shape, np.int64)
        has = sp.part_core >= 0
        has[:, 0] = False
        idx[has] = np.arange(int(has.sum()))
        part_idx.append(idx)
        part_slot.append(np.repeat(slots[sp.part_core[has]], CPU))   # part k's neurons: CPU * k + gate
    free = sorted(set(range(g.cores)) - set(int(s) for s in slots))
    host_slot = np.array([free[j % len(free)] for j in range(stack.layers[0].n_in)])
    counts: dict = {}
    bank_of: dict = {}

    def assign(slot_arr, bank):
        names = []
        for s in slot_arr.tolist():
            key = hw(s)
            c = counts.setdefault(key, [0, 0, 0])
            names.append((key, f"{('home', 'part', 'host')[bank]}[{c[bank]}]", f"dend[{sum(c) // DEND_MAX}]"))
            c[bank] += 1
        return names
    for l in range(L):
        bank_of[f"l{l}"] = assign(home_slot[l], 0)
        bank_of[f"p{l}"] = assign(part_slot[l], 1)
    bank_of["emb"] = assign(host_slot, 2)
    compartments = int(re.search(r"max_neurons_supported: (\d+)", template[0]).group(1))
    arch_text = per_core_arch(template, g.tiles_x * g.tiles_y, g.cores_per_tile,
                              {k: tuple(v) for k, v in counts.items()})
    (workdir / "arch.yaml").write_text(arch_text)
    t0 = time.perf_counter()
    arch = sanafe.load_arch(str(workdir / "arch.yaml"))
    net = sanafe.Network()
    groups = {}

    def make(name, trains_of):
        grp = net.create_neuron_group(name, len(bank_of[name]))
        for i, ((tile, core), unit, dend) in enumerate(bank_of[name]):
            n = grp[i]
            n.set_attributes(soma_hw_name=unit, dendrite_hw_name=dend, default_synapse_hw_name="loihi_sparse_synapse",
                             model_attributes={"spikes": trains_of(i)})
            n.map_to_core(arch.tiles[tile].cores[core])
        groups[name] = grp
    quiet = [False] * T
    make("emb", lambda i: [True] * T)
    for l, lw in enumerate(stack.layers):
        h = lw.hidden
        s = spikes[l].T.tolist()
        make(f"l{l}", lambda i, s=s, h=h: s[i - (CPU - 1) * h] if i >= (CPU - 1) * h else quiet)
        if part_idx[l] is not None:
            has = part_idx[l] >= 0
            tr = trains[l][:, has].T.tolist()                         # [part k][T], k in part_idx order
            make(f"p{l}", lambda i, tr=tr: tr[i // CPU] if i % CPU == CPU - 1 else quiet)
    # connections (zero weight): synapse -> accumulator of the part holding it; partial sum -> home z, r, g
    n_conn = 0

    def connect(src, dst, s_idx, d_idx):
        nonlocal n_conn
        pairs = list(zip(np.asarray(s_idx).tolist(), np.asarray(d_idx).tolist()))
        if pairs:
            groups[src].connect_neurons_sparse(groups[dst], {"weight": [0.0] * len(pairs)}, pairs)
            n_conn += len(pairs)
    for l, lw in enumerate(stack.layers):
        h, sp = lw.hidden, splits[l]
        for M, src, off in ((lw.W, "emb" if l == 0 else f"l{l - 1}", 0), (lw.R, f"l{l}", lw.n_in)):
            csr = M if M.fmt == "csr" else M.convert("csr")
            rows = np.repeat(np.arange(M.shape[0]), np.diff(csr.indptr))
            cols = csr.indices.astype(np.int64)
            keep = csr.data != 0
            rows, cols = rows[keep], cols[keep]
            gate, unit = rows // h, rows % h
            src_h = None if src == "emb" else stack.layers[l if off else l - 1].hidden
            s_idx = cols if src_h is None else (CPU - 1) * src_h + cols            # the source unit's g neuron
            part = np.zeros_like(cols) if sp is None else sp.part_of(off + cols)
            at_home = part == 0
            connect(src, f"l{l}", s_idx[at_home], rows[at_home])
            if sp is not None:
                k = part_idx[l][unit[~at_home], part[~at_home]]
                assert (k >= 0).all()
                connect(src, f"p{l}", s_idx[~at_home], CPU * k + gate[~at_home])
        if sp is not None:
            has = part_idx[l] >= 0
            unit = np.nonzero(has)[0]                                # part k's unit, in part_idx order
            for gt in range(CPU):
                connect(f"p{l}", f"l{l}", CPU * np.arange(len(unit)) + CPU - 1, gt * h + unit)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    chip = sanafe.SpikingChip(arch)
    chip.load(net)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace = workdir / "messages.csv"
    r = chip.sim(T, processing_threads=1, message_trace=str(trace))
    sim_s = time.perf_counter() - t0
    costs = {k: float(re.search(rf"{k}:\s*([0-9.e+-]+)", arch_text).group(1)) * 1e12
             for k in ("energy_message_out", "energy_east_hop", "energy_north_hop")}
    costs["synop"] = float(re.search(r"loihi_sparse_synapse.*?energy_process_spike:\s*([0-9.e+-]+)", arch_text,
                                     re.S).group(1)) * 1e12
    net_pj = {"emb": 0.0, "l": 0.0, "p": 0.0}
    packets = {"emb": 0, "l": 0, "p": 0}
    hops = {"emb": 0, "l": 0, "p": 0}
    with open(trace) as f:
        for m in csv.DictReader(f):
            if int(m["mid"]) < 0:                    # a placeholder (a core's timing record), not a packet
                continue
            (st, _), (dt, _) = (map(int, m[k].split(".")) for k in ("src_hw", "dest_hw"))
            dx, dy = abs(st // g.tiles_y - dt // g.tiles_y), abs(st % g.tiles_y - dt % g.tiles_y)
            assert dx + dy == int(m["hops"])
            kind = re.match(r"(emb|l|p)", m["src_neuron"]).group(1)
            packets[kind] += 1
            hops[kind] += dx + dy
            net_pj[kind] += costs["energy_message_out"] + dx * costs["energy_east_hop"] + dy * costs["energy_north_hop"]
    en = {k: v * 1e12 for k, v in r["energy"].items()}
    assert abs(sum(net_pj.values()) - en["network"]) <= 1e-6 * en["network"], (net_pj, en["network"])
    # soma energy by neuron kind, from the banks' per-event costs (checked against SANA-FE's soma total)
    acc, upd, spk = template[1][0], template[1][2], template[1][4]
    home = (sum(len(bank_of[f"l{l}"]) for l in range(L)) * T * acc + sum(int(s.sum()) for s in spikes) * (upd + spk))
    acc, upd, spk = template[2][0], template[2][2], template[2][4]
    n_part = sum(len(bank_of[f"p{l}"]) for l in range(L))
    part = n_part * T * acc + sum(int(t.sum()) for t in trains if t is not None) * (upd + spk)
    assert abs(home + part - en["soma"] - en["dendrite"]) <= 1e-6 * (home + part), (home, part, en)
    return {"energy_pj": {k: v / T for k, v in en.items()}, "network_pj": {k: v / T for k, v in net_pj.items()},
            "packets": {k: v / T for k, v in packets.items()}, "hops": {k: v / T for k, v in hops.items()},
            "synaptic_events": r["spikes"] / T,
            "soma_pj": {"home": home / T, "part": part / T}, "costs_pj": costs,
            "part_soma_pj": {"access": template[2][0], "update": template[2][2], "spike": template[2][4]},
            "neurons": sum(len(v) for k, v in bank_of.items() if k != "emb"), "part_neurons": n_part,
            "max_neurons_per_core": max(sum(v) for v in counts.values()), "max_neurons_supported": compartments,
            "connections": n_conn, "build_s": build_s, "load_s": load_s, "sim_s": sim_s}


# ------------------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", default=str(HERE.parent / "data" / "ptb"))
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--emb", type=int, default=256)
    ap.add_argument("--hidden", default="512,512,256")
    ap.add_argument("--input-axons", type=int, default=256)
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--archs", default="stock,profile")
    ap.add_argument("--json", default=str(HERE / "results" / "energy_split.json"))
    ap.add_argument("--out", default=str(HERE / "results" / "energy_split.md"))
    ap.add_argument("--workdir", help="keep the compiled artifact, architecture files and message traces here")
    ap.add_argument("--tables-only", action="store_true", help="rewrite --out from --json without running")
    a = ap.parse_args(argv)
    if a.tables_only:
        Path(a.out).write_text(markdown(json.loads(Path(a.json).read_text())))
        return
    ptb = Path(a.ptb)
    if not (ptb / "ptb.train.txt").is_file():
        raise SystemExit(f"error: Penn Treebank not found at {ptb}")
    archs = [n for n in a.archs.split(",") if n]
    if set(archs) - {"stock", "profile"}:
        raise SystemExit(f"error: --archs takes stock and/or profile, not {a.archs!r}")
    if archs and find_spec("sanafe") is None:
        raise SystemExit("error: SANA-FE is not installed (pip install sanafe==2.2.9; GPL-3.0, benchmark only)")
    if a.tokens < 2 or a.input_axons < 1:
        raise SystemExit("error: --tokens must be >= 2 and --input-axons >= 1")
    hidden = [int(x) for x in a.hidden.split(",")]
    vocab = Vocabulary.from_train_file(ptb / "ptb.train.txt")
    res: dict = {"tokens": a.tokens, "emb": a.emb, "hidden": hidden, "input_axons": a.input_axons,
                 "activity_target": a.activity, "argv": sys.argv[1:] if argv is None else list(argv)}
    with tempfile.TemporaryDirectory(prefix="bench_energy_split_") as tmp:
        td = Path(a.workdir or tmp)
        td.mkdir(parents=True, exist_ok=True)
        prof_path = derived_profile(a.input_axons, td)
        profile = load_profile(str(prof_path))
        ckpt = random_checkpoint(td / "model.pt", vocab, a.emb, hidden, a.activity)
        ids = vocab.encode_file(ptb / "ptb.valid.txt", max_tokens=a.tokens)
        t0 = time.perf_counter()
        r = CliRunner().invoke(cli, [str(ckpt), "--profile", str(prof_path), "-o",
                                     str(td / "art"), "--force", "--calib-data", str(ptb / "ptb.valid.txt"),
                                     "--calib-tokens", str(len(ids))])
        if r.exit_code:
            raise SystemExit(r.output)
        res["compile_s"] = time.perf_counter() - t0
        mapping = json.loads((td / "art" / "mapping.json").read_text())
        if not mapping.get("split"):
            raise SystemExit("error: the compile did not split any layer: lower --input-axons")
        res["split"] = mapping["split"]
        res["cores"] = mapping["totals"]["cores_used"]
        stack, cm = load_program(td / "art" / "program.npz")
        spikes, ours, sent = simulate(stack, cm, profile, ids)
        sim_e = sum(c["energy_pj"] for c in mapping["simulated"]["cores"])
        assert abs(ours["total"] - sim_e) <= 1e-6 * sim_e, (ours["total"], sim_e)   # = the compile report's
        # graded messages charged as SANA-FE charges them: one packet per message, whatever its payload
        _, res["ours_per_message"], _ = simulate(stack, cm, replace(profile, spikes=replace(profile.spikes, flit_bits=0)),
                                              ids)
        trains = psum_trains(stack, cm.splits, spikes)
        for t, n in zip(trains, sent):          # our recount from the spikes = the simulator's, part by part
            assert (t is None) == (n is None) and (t is None or np.array_equal(t[:, :, 1:].sum(0), n))
        ours["activity"] = [float(s.mean()) for s in spikes]
        ours["psum_hops"] = float(sum((t[:, :, 1:] * ps).sum() for t, ps in zip(trains, _psum_hops(cm, profile))
                                      if t is not None)) / len(ids)
        ours["part_compartments"] = CPU * sum(int((sp.part_core[:, 1:] >= 0).sum()) for sp in cm.splits if sp)
        ours["flits"] = {"spike": profile.spikes.flits(),
                         "psum": profile.spikes.flits(mapping["split"]["psum_payload_bits"])}
        # recurrent fan-out of the last token's spikes: SANA-FE processes it within the run, we do not
        ours["last_token_rec_synops"] = int(sum(int((lw.R.to_dense()[:, s[-1]] != 0).sum())
                                                for lw, s in zip(stack.layers, spikes)))
        ours["energy"] = asdict(profile.energy)
        res["ours"] = ours
        templates = {"stock": lambda: stock_template(profile.core.compartments),
                     "profile": lambda: profile_template(profile)}
        for name in archs:
            wd = td / name
            wd.mkdir(exist_ok=True)
            print(f"SANA-FE {name} architecture, {len(ids)} tokens ...", file=sys.stderr)
            res[name] = sanafe_replay(templates[name](), stack, cm, profile, spikes, trains, wd)
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["sanafe_version"] = version("sanafe")
    res["load"] = "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
