"""Validate the chip energy/latency model against SANA-FE (issue 16, item 4).

The PTB-size EGRU of `bench_chip.py` (embedding 750, hidden 1350/1350/750, the PTB vocabulary, random weights,
RNN matrices pruned to 85 %, thresholds bisected to ~20 % activity) is compiled for loihi-like with the CLI,
calibrated on the first N tokens of ptb.valid — the same N tokens this script replays — so the compile report's
per-token numbers describe exactly the replayed spikes. The spike trains come from the chip simulator of the
compiled program (`ChipSimulator`, the placed int8 program `eval` runs).

Replay through SANA-FE (PyPI `sanafe` 2.2.x, GPL-3.0: used only here, never imported by egru_compile):

* every EGRU unit is 3 SANA-FE neurons (its z, r, g compartments: ``compartments_per_unit = 3``), on the core
  and mesh slot our placement gave it (SANA-FE tile id = x * height + y); the g neuron replays the unit's spikes
  (``model: input``; one input hardware unit per neuron), every W/R synapse is one zero-weight connection from
  the presynaptic unit's g neuron to the gate neuron it feeds (SANA-FE counts a synaptic event per connection
  per spike, as our synop convention counts a MAC per non-zero weight per event);
* the embedding (750 dims, dense: every dim is an event every token) is 750 replay neurons on a spare core
  standing for the host; their soma is free and their packets' network energy (measured from SANA-FE's message
  trace of one step, identical every step) is reported apart, because our model charges no host->chip traffic;
* `--steps-per-token 1` (default): all layers' spikes of a token are processed in one SANA-FE step (each neuron
  accessed once per token, as our model charges compartments once per token): the energy run.
  `--steps-per-token 3`: layer l's spikes are replayed in step 3t+l, the layer-sequential schedule our latency
  model assumes (one phase and one barrier per layer): the latency run (its neuron energy counts every
  neuron three times per token and is not used).

Architectures: (a) SANA-FE's shipped ``loihi.yaml`` with one documented addition — a bank of 1,024 replay soma
units per core charged like its ``loihi_lif`` soma (access 51.2 + update 21.6 pJ per neuron per step, 69.3 pJ
per spike), since its own ``loihi_inputs`` units are free; (b) the same mesh carrying our profile's per-event
figures (``--profile``), the architecture our formula describes.

    python -m benchmarks.bench_energy --tokens 24 --archs stock --steps-per-token 1,3     # SANA-FE's Loihi
    python -m benchmarks.bench_energy --tokens 24 --archs profile --steps-per-token 1,3   # our figures
    python -m benchmarks.bench_energy --tables-only      # rewrite results/energy.md from results/energy.json

Runs on the same model, tokens and profile merge into results/energy.json; ``--workdir DIR`` keeps the
compiled artifact between runs.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

from benchmarks.common import build_model, calibrate  # noqa: E402
from benchmarks.sanafe_split_arch import profile_template, soma_bank  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from egru_compile.cli import main as cli  # noqa: E402
from egru_compile.data import Vocabulary  # noqa: E402
from egru_compile.frontend import save_checkpoint  # noqa: E402
from egru_compile.targets.chip import load_program, load_profile  # noqa: E402
from egru_compile.targets.chip.network import build_network, net_reach  # noqa: E402
from egru_compile.targets.chip.placement import evaluate, hop_matrices, slot_coords  # noqa: E402
from egru_compile.targets.chip.profile import EnergyModel  # noqa: E402
from egru_compile.targets.chip.simulate import ChipSimulator  # noqa: E402

CPU = 3          # SANA-FE neurons per EGRU unit (z, r, g compartments)
REPLAY = "replay"


# ------------------------------------------------------------------------------------------ our side
def our_breakdown(nets, spikes, pl, profile, T: int) -> dict:
    """Our profile's formula split into synapse / neuron / network pJ per token, from the replayed spikes."""
    e = profile.energy
    _, pj, _ = hop_matrices(profile, pl.slot_of_core)
    reach = net_reach(nets, pl.core_of, pl.n_cores)
    syn = neuron = net = 0.0
    for l, n in enumerate(nets):
        fires = spikes[l].sum(0)                                  # tokens each unit fired
        rate = fires / T
        neuron += CPU * (rate * e.neuron_active_pj + (1 - rate) * e.neuron_inactive_pj).sum()
        t = np.zeros((pl.n_cores, pl.n_cores))
        np.add.at(t, pl.core_of[l], reach[l] * rate[:, None])
        net += (t * pj).sum()
        syn += e.synop_pj * float(n.mac_events.sum()) / T
    return {"synapse": syn, "neuron": neuron, "network": net}


#: the per-event figures loihi-like carried before this comparison (Davies et al. 2018, Table 1)
DAVIES_2018 = EnergyModel(synop_pj=23.6, synop_ns=3.5, neuron_active_pj=81.0, neuron_active_ns=8.4,
                          neuron_inactive_pj=47.5, neuron_inactive_ns=6.1, spike_tile_pj=1.7, spike_tile_ns=2.1,
                          hop_ew_pj=3.0, hop_ew_ns=4.1, hop_ns_pj=4.0, hop_ns_ns=6.5, barrier_ns=299.0)


def ours_for(nets, spikes, pl, profile, T: int) -> dict:
    """Our model's per-token energy split and latency (the compile report's formula, `placement.evaluate`)."""
    out = our_breakdown(nets, spikes, pl, profile, T)
    costs = evaluate(nets, pl, profile, calibrated=True)
    total = float(costs.energy_pj.sum())
    assert abs(sum(out.values()) - total) <= 1e-6 * total, (out, total)
    out["total"] = total
    phases = costs.busy_ns.max(axis=1)
    out["layer_phase_ns"] = phases.tolist()
    out["latency_ns"] = float(phases.sum() + len(phases) * profile.energy.barrier_ns)
    return out


def attach_replay_activity(nets, spikes, T: int) -> None:
    """Per-unit event counts of the replayed tokens (the same convention as `measure_unit_activity`)."""
    from egru_compile.targets.chip.network import attach_activity
    fires_out = [s.sum(0).astype(np.int64) for s in spikes]
    fires_rec = [f - s[-1].astype(np.int64) for f, s in zip(fires_out, spikes)]
    fires_in = [np.full(nets[0].n_in, T, np.int64)] + fires_out[:-1]
    attach_activity(nets, fires_in, fires_rec, fires_out, T)


# ------------------------------------------------------------------------------------------ architectures
_STOCK_INPUTS = """            - name: loihi_inputs[0..1023]
              attributes:
                model: input"""


def _inputs(n_inputs: int) -> str:
    return _STOCK_INPUTS.replace("[0..1023]", f"[0..{n_inputs - 1}]")


def _replay_soma(n_replay, access_pj, access_ns, update_pj, update_ns, spike_pj, spike_ns) -> str:
    return soma_bank(REPLAY, n_replay, access_pj, access_ns, update_pj, update_ns, spike_pj, spike_ns)


def stock_arch(n_replay: int, n_inputs: int) -> str:
    """SANA-FE's loihi.yaml plus `n_replay` replay somas per core charged like its loihi_lif (51.2 + 21.6 pJ per
    neuron and step, all as access because an input-model neuron is only 'updated' when it fires; 69.3 pJ /
    30 ns per spike). Its free input-unit bank is trimmed from 1,024 to `n_inputs` per core (units a core does
    not use cost nothing but memory: 2 x 1,024 units on 128 cores took 6.9 GB)."""
    txt = (files("sanafe.examples") / "loihi.yaml").read_text()
    assert _STOCK_INPUTS in txt, "sanafe's loihi.yaml changed: update bench_energy.py"
    return txt.replace(_STOCK_INPUTS, _replay_soma(n_replay, 51.2 + 21.6, 6.0 + 3.7, 0.0, 0.0, 69.3, 30.0) +
                       _inputs(n_inputs))


def profile_arch(profile, n_replay: int, n_inputs: int) -> str:
    """The mesh and per-event figures of our chip profile as a SANA-FE architecture: a compartment costs the
    inactive update every step; a unit that fires pays the active-minus-inactive difference for its 3
    compartments (charged as the g neuron's update); one message per destination core; hops per direction."""
    txt, home, _ = profile_template(profile)
    soma = _replay_soma(n_replay, *home) + _inputs(n_inputs) + """
                energy_access_neuron: 0.0
                latency_access_neuron: 0.0
                energy_update_neuron: 0.0
                latency_update_neuron: 0.0
                energy_spike_out: 0.0
                latency_spike_out: 0.0
"""
    return txt.replace("{SOMA}", soma).replace("{DEND}", """            - name: loihi_dendrites
              attributes:
                model: accumulator
                energy_update: 0.0
                latency_update: 0.0
""")


def arch_hop_costs(yaml_text: str) -> dict:
    """Per-event network costs read back from an architecture file (for the host-traffic split)."""
    def num(key):
        return float(re.search(rf"{key}:\s*([0-9.e+-]+)", yaml_text).group(1))
    return {"msg": num("energy_message_out"), "ew": num("energy_east_hop"), "ns": num("energy_north_hop")}


# ------------------------------------------------------------------------------------------ replay
def sanafe_replay(arch_text: str, stack, pl, profile, spikes, steps_per_token: int, workdir: Path) -> dict:
    import sanafe
    arch_file = workdir / "arch.yaml"
    arch_file.write_text(arch_text)
    arch = sanafe.load_arch(str(arch_file))
    T = spikes[0].shape[0]
    L = len(stack.layers)
    S = T * steps_per_token
    t0 = time.perf_counter()
    net = sanafe.Network()
    chip_of, x, y = slot_coords(profile, pl.slot_of_core)
    if np.any(chip_of):
        raise SystemExit("this comparison needs a one-chip placement (SANA-FE models one mesh)")
    g = profile.chip
    local = pl.slot_of_core % g.cores

    def core_obj(slot):
        tile = slot // g.cores_per_tile
        tx, ty = tile % g.tiles_x, tile // g.tiles_x
        return arch.tiles[tx * g.tiles_y + ty].cores[slot % g.cores_per_tile]

    next_unit: dict[int, int] = {}

    def unit_name(slot):
        k = next_unit.get(slot, 0)
        next_unit[slot] = k + 1
        if k >= 1024:
            raise SystemExit(f"slot {slot} needs more than 1,024 replay units")
        return k

    # host: the embedding, spread round-robin over the free slots (one host core would serialise 18k packets);
    # free soma, and its packets' network energy is split off below
    free = sorted(set(range(g.cores)) - set(int(s) for s in local))
    emb_n = stack.layers[0].n_in
    emb = net.create_neuron_group("emb", emb_n)
    emb_train = [False] * S
    for t in range(T):
        emb_train[t * steps_per_token] = True
    for j in range(emb_n):
        slot = free[j % len(free)]
        emb[j].set_attributes(soma_hw_name=f"loihi_inputs[{j // len(free)}]",
                              default_synapse_hw_name="loihi_sparse_synapse", model_attributes={"spikes": emb_train})
        emb[j].map_to_core(core_obj(slot))
    groups = []
    for l, lw in enumerate(stack.layers):
        h = lw.hidden
        grp = net.create_neuron_group(f"l{l}", CPU * h)
        slot_of_unit = local[pl.core_of[l]]
        quiet = [False] * S
        for gate in range(CPU):
            for i in range(h):
                n = grp[gate * h + i]
                slot = int(slot_of_unit[i])
                if gate == CPU - 1:
                    train = [False] * S
                    for t in np.flatnonzero(spikes[l][:, i]):
                        train[t * steps_per_token + (l if steps_per_token > 1 else 0)] = True
                else:
                    train = quiet
                n.set_attributes(soma_hw_name=f"{REPLAY}[{unit_name(slot)}]",
                                 default_synapse_hw_name="loihi_sparse_synapse",
                                 model_attributes={"spikes": train})
                n.map_to_core(core_obj(slot))
        groups.append(grp)
    # connections: W rows (gate * h + unit) are exactly the target neuron indices; sources are g neurons
    n_conn = 0
    for l, lw in enumerate(stack.layers):
        h = lw.hidden
        for M, src, src_h in ((lw.W, emb if l == 0 else groups[l - 1], None if l == 0 else stack.layers[l - 1].hidden),
                              (lw.R, groups[l], h)):
            csr = M if M.fmt == "csr" else M.convert("csr")
            rows = np.repeat(np.arange(M.shape[0]), np.diff(csr.indptr))
            cols = csr.indices.astype(np.int64)
            keep = csr.data != 0
            rows, cols = rows[keep], cols[keep]
            src_idx = cols if src_h is None else (CPU - 1) * src_h + cols
            pairs = list(zip(src_idx.tolist(), rows.tolist()))
            src.connect_neurons_sparse(groups[l], {"weight": [0.0] * len(pairs)}, pairs)
            n_conn += len(pairs)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    chip = sanafe.SpikingChip(arch)
    chip.load(net)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace = workdir / "messages.csv"
    first = chip.sim(1, processing_threads=1, perf_trace=True, message_trace=str(trace))
    rest = chip.sim(S - 1, processing_threads=1, perf_trace=True) if S > 1 else None
    sim_s = time.perf_counter() - t0
    # host packets of step 1 (the embedding fires identically every token)
    costs = arch_hop_costs(arch_text)
    host_pk = host_hops = 0
    host_pj = 0.0
    with open(trace) as f:
        for r in csv.DictReader(f):
            if r["src_neuron"].startswith("emb."):
                (st, _), (dt, _) = (map(int, r[k].split(".")) for k in ("src_hw", "dest_hw"))
                dx = abs(st // g.tiles_y - dt // g.tiles_y)
                dy = abs(st % g.tiles_y - dt % g.tiles_y)
                assert dx + dy == int(r["hops"])
                host_pk += 1
                host_hops += dx + dy
                host_pj += (costs["msg"] + dx * costs["ew"] + dy * costs["ns"]) * 1e12
    out = {"neurons": CPU * sum(lw.hidden for lw in stack.layers), "connections": n_conn, "steps": S,
           "build_s": build_s, "load_s": load_s, "sim_s": sim_s,
           "host_packets_per_token": host_pk, "host_hops_per_token": host_hops, "host_network_pj": host_pj}
    tot = {}
    for k in ("synapse", "dendrite", "soma", "network"):
        tot[k] = first["energy"][k] + (rest["energy"][k] if rest else 0.0)
    out["energy_pj"] = {k: v * 1e12 / T for k, v in tot.items()}
    out["energy_pj"]["network_rnn"] = out["energy_pj"]["network"] - host_pj
    out["time_ns"] = (first["sim_time"] + (rest["sim_time"] if rest else 0.0)) * 1e9 / T
    step_ns = np.array(first["perf_trace"]["sim_time"] + (rest["perf_trace"]["sim_time"] if rest else [])) * 1e9
    out["step_ns"] = step_ns.reshape(T, steps_per_token).mean(0).tolist()      # mean time of each step of a token
    out["synaptic_events"] = first["spikes"] + (rest["spikes"] if rest else 0)
    out["packets"] = first["packets_sent"] + (rest["packets_sent"] if rest else 0)
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ptb", default=str(HERE.parent / "data" / "ptb"))
    ap.add_argument("--profile", default="loihi-like")
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--activity", type=float, default=0.2)
    ap.add_argument("--steps-per-token", default="1,3")
    ap.add_argument("--archs", default="stock,profile")
    ap.add_argument("--json", default=str(HERE / "results" / "energy.json"),
                    help="raw numbers (replays of earlier runs on the same model are merged in)")
    ap.add_argument("--out", default=str(HERE / "results" / "energy.md"), help="the tables (markdown)")
    ap.add_argument("--workdir", help="keep the checkpoint and artifact here and reuse them (same tokens/profile)")
    ap.add_argument("--model", help="compile this checkpoint instead of the PTB-size random model")
    ap.add_argument("--tables-only", action="store_true", help="rewrite --out from --json without running")
    a = ap.parse_args(argv)
    if a.tables_only:
        Path(a.out).write_text(markdown(json.loads(Path(a.json).read_text())))
        return
    ptb = Path(a.ptb)
    if not (ptb / "ptb.train.txt").is_file():
        raise SystemExit(f"Penn Treebank not found at {ptb}")
    profile = load_profile(a.profile)
    vocab = Vocabulary.from_train_file(ptb / "ptb.train.txt")
    res: dict = {"tokens": a.tokens, "profile": a.profile}
    with tempfile.TemporaryDirectory(prefix="bench_energy_") as tmp:
        td = Path(a.workdir) if a.workdir else Path(tmp)
        td.mkdir(parents=True, exist_ok=True)
        ids = vocab.encode_file(ptb / "ptb.valid.txt", max_tokens=a.tokens)     # the calibration tokens
        T = len(ids)
        out = td / "art"
        stamp = json.dumps({"tokens": T, "activity": a.activity, "profile": profile.to_dict(), "model": a.model},
                           sort_keys=True)
        if not ((td / "stamp.json").is_file() and (td / "stamp.json").read_text() == stamp):
            if a.model:
                ckpt = Path(a.model)
            else:
                model = build_model(len(vocab), 750, [1350, 1350, 750], 0.85)
                calibrate(model, a.activity, np.random.default_rng(0).integers(0, len(vocab), 60))
                ckpt = td / "ptb.pt"
                save_checkpoint(ckpt, model, vocab)
            t0 = time.perf_counter()
            r = CliRunner().invoke(cli, [str(ckpt), "--profile", str(profile.source),
                                         "-o", str(out), "--force", "--calib-data", str(ptb / "ptb.valid.txt"),
                                         "--calib-tokens", str(T)])
            if r.exit_code:
                raise SystemExit(r.output)
            res["compile_s"] = time.perf_counter() - t0
            (td / "stamp.json").write_text(stamp)
        mapping = json.loads((out / "mapping.json").read_text())
        stack, pl = load_program(out / "program.npz")
        nets = build_network(stack)
        # the spike trains of the simulated program
        sim = ChipSimulator(stack, pl, backend="numpy")
        spikes = [np.zeros((T, lw.hidden), bool) for lw in stack.layers]
        synops = 0
        for t, tok in enumerate(ids):
            sim.step(int(tok))
            synops += sim.last_synops
            for l in range(len(spikes)):
                spikes[l][t] = sim.y[l] != 0
        attach_replay_activity(nets, spikes, T)
        tot = mapping["totals"]
        ours = ours_for(nets, spikes, pl, profile, T)
        # the compile report (calibrated on the same tokens) says the same
        assert abs(ours["total"] - tot["energy_pj"]) <= 1e-6 * tot["energy_pj"], (ours["total"], tot["energy_pj"])
        assert abs(ours["latency_ns"] - tot["latency_ns"]) <= 1e-6 * tot["latency_ns"]
        res["ours_davies"] = ours_for(nets, spikes, pl, replace(profile, energy=DAVIES_2018), T)
        ours["synops_per_token"] = synops / T
        ours["report_macs_per_token"] = tot["synops_estimated"]
        ours["cores"] = tot["cores_used"]
        ours["messages_per_token"] = sum(c["messages_out"] for c in mapping["cores"])
        ours["activity"] = [float(s.mean()) for s in spikes]
        # recurrent fan-out of the last token's spikes: SANA-FE processes them within the run, we do not
        ours["last_token_rec_synops"] = int(sum(int(n.conn_rec.astype(np.int64).sum(0)[s[-1]].sum())
                                                for n, s in zip(nets, spikes)))
        res["ours"] = ours
        n_replay = CPU * max(int(np.sum(np.concatenate(pl.core_of) == c)) for c in range(pl.n_cores))
        n_free = profile.chip.cores - pl.n_cores
        n_inputs = -(-stack.layers[0].n_in // n_free)
        archs = {"stock": stock_arch(n_replay, n_inputs), "profile": profile_arch(profile, n_replay, n_inputs)}
        for name in [n for n in a.archs.split(",") if n]:
            for spt in (int(s) for s in a.steps_per_token.split(",")):
                wd = td / f"{name}_{spt}"
                wd.mkdir(exist_ok=True)
                print(f"SANA-FE {name} architecture, {spt} step(s)/token, {T} tokens ...", file=sys.stderr)
                res[f"{name}_{spt}"] = sanafe_replay(archs[name], stack, pl, profile, spikes, spt, wd)
    import resource
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_json = Path(a.json)
    if out_json.is_file():           # merge replays of earlier runs on the same model, tokens and profile
        old = json.loads(out_json.read_text())
        if all(old.get(k) == res[k] for k in ("tokens", "profile", "ours")):
            res = {**old, **{k: v for k, v in res.items() if k != "compile_s"}}
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


def _gap(x, ref):
    return f"{100 * (x - ref) / ref:+.0f} %" if ref else "—"


def markdown(r: dict) -> str:
    """The comparison tables of benchmarks/results/energy.md from the merged run record."""
    o, d = r["ours"], r["ours_davies"]
    T = r["tokens"]
    lines = [f"# Energy model vs SANA-FE (PTB-size EGRU, {T} tokens)", "",
             f"Model: embedding 750, EGRU 1350/1350/750, PTB vocabulary, random weights, RNN matrices pruned to 85 %, "
             f"thresholds for ~20 % activity (measured {', '.join(f'{100 * x:.1f} %' for x in o['activity'])}); "
             f"compiled for `loihi-like` ({o['cores']} cores, one chip) calibrated on the first {T} tokens of "
             f"ptb.valid; the spike trains of those {T} tokens come from the chip simulator of the int8 program. "
             f"SANA-FE {_sanafe_version()} replays them on the same cores and mesh slots (3 neurons per unit, one "
             f"zero-weight connection per synapse). {T} tokens because building and loading the 3.6M-connection "
             "network and simulating takes SANA-FE 2–3 min per replay on this shared 2-core machine.", "",
             "Per token. *SANA-FE Loihi*: its shipped `loihi.yaml` (replayed neurons charged like its `loihi_lif`). "
             "*ours before*: loihi-like with Davies et al. 2018's per-event figures; *ours now*: loihi-like with the "
             "figures adopted from SANA-FE's Loihi file (see the profile's comments). *SANA-FE, our figures*: the "
             "same replay on an architecture file carrying loihi-like's figures (checks our formula against "
             "SANA-FE's machinery). Energy in µJ.", ""]
    st, sp = r.get("stock_1"), r.get("profile_1")

    def e(run, k):
        if run is None:
            return None
        en = run["energy_pj"]
        v = {"synapse": en["synapse"], "neuron": en["soma"] + en["dendrite"], "network": en["network_rnn"]}
        v["total"] = sum(v.values())
        return v[k]

    def f(v):
        return "—" if v is None else f"{v / 1e6:.3f}"
    head = "| SANA-FE Loihi | ours before | gap | ours now | gap | SANA-FE, our figures | ours now vs it |"
    lines += ["| energy / token " + head,
              "|---|---|---|---|---|---|---|---|"]
    for k, label in (("synapse", "synaptic ops"), ("neuron", "neuron updates + spike generation"),
                     ("network", "spike messages + hops (chip)"), ("total", "**total**")):
        ref, mine = e(st, k), e(sp, k)
        lines.append(f"| {label} | {f(ref)} | {f(d[k])} | {_gap(d[k], ref) if ref else '—'} | {f(o[k])} | "
                     f"{_gap(o[k], ref) if ref else '—'} | {f(mine)} | {_gap(o[k], mine) if mine else '—'} |")
    if st:
        lines.append(f"| host → chip embedding packets (not in our model) | {f(st['host_network_pj'])} | — | | "
                     f"— | | {f(sp['host_network_pj']) if sp else '—'} | |")
    lines += ["", "| latency / token (µs) " + head, "|---|---|---|---|---|---|---|---|"]
    L = len(o["layer_phase_ns"])                 # layer-sequential: one SANA-FE step per layer
    s3, p3 = r.get(f"stock_{L}"), r.get(f"profile_{L}")
    ref, mine = (s3 or {}).get("time_ns"), (p3 or {}).get("time_ns")
    us = lambda v: "—" if v is None else f"{v / 1e3:.1f}"  # noqa: E731
    lines.append(f"| layer-sequential ({L} steps/token; ours: Σ layer phases + barriers) | {us(ref)} | "
                 f"{us(d['latency_ns'])} | {_gap(d['latency_ns'], ref) if ref else '—'} | {us(o['latency_ns'])} | "
                 f"{_gap(o['latency_ns'], ref) if ref else '—'} | {us(mine)} | "
                 f"{_gap(o['latency_ns'], mine) if mine else '—'} |")
    for k in range(L):
        lines.append(f"| — step / phase {k} | {us(s3['step_ns'][k]) if s3 else '—'} | "
                     f"{us(d['layer_phase_ns'][k])} | | "
                     f"{us(o['layer_phase_ns'][k])} | | {us(p3['step_ns'][k]) if p3 else '—'} | |")
    if st or sp:
        lines.append(f"| pipelined (1 step/token, all layers at once) | {us(st and st['time_ns'])} | — | | — | | "
                     f"{us(sp and sp['time_ns'])} | |")
    lines += ["", "Event counts per token (the same in every SANA-FE run):", ""]
    run = st or sp
    if run:
        exact = abs(run["synaptic_events"] - o["synops_per_token"] * T - o["last_token_rec_synops"]) < 0.5
        lines += [f"- synaptic events: SANA-FE {run['synaptic_events'] / T:,.1f}, ours {o['synops_per_token']:,.1f} "
                  f"(+ {o['last_token_rec_synops'] / T:,.1f} = the recurrent fan-out of the last token's spikes, which "
                  f"SANA-FE processes within the run and we leave to the next token: "
                  f"{'exact' if exact else 'MISMATCH'})",
                  f"- packets: SANA-FE {run['packets'] / T:,.1f} = {run['host_packets_per_token']:,} host embedding "
                  "packets "
                  f"+ {run['packets'] / T - run['host_packets_per_token']:,.1f} spike messages; ours "
                  f"{o['messages_per_token']:,.1f} spike messages (one per spiking unit per destination core)",
                  f"- neurons: {run['neurons']:,} (3 per unit), connections: {run['connections']:,}"]
    runs = [f"{k}: build {v['build_s']:.0f} s, load {v['load_s']:.0f} s, simulate {v['sim_s']:.0f} s"
            for k, v in r.items() if isinstance(v, dict) and "load_s" in v]
    lines += ["", "SANA-FE cost per replay — " + "; ".join(runs) + f"; peak RSS {r['peak_rss_mib']:,.0f} MiB.", ""]
    lines += explanation(r)
    lines += ["Commands (SANA-FE installed with `pip install sanafe==2.2.9`; each ≈ 3–5 min here):", "",
              f"    python -m benchmarks.bench_energy --tokens {T} --archs stock --steps-per-token 1,3",
              f"    python -m benchmarks.bench_energy --tokens {T} --archs profile --steps-per-token 1,3", ""]
    return "\n".join(lines) + "\n"


def explanation(r: dict) -> list[str]:
    """Why each gap over 20 % arises, and what loihi-like adopted (static reasoning, the run's numbers)."""
    o, d = r["ours"], r["ours_davies"]
    st = r.get("stock_1")
    host = f"{st['host_network_pj'] / 1e6:.2f} µJ, {100 * st['host_network_pj'] / o['total']:.0f} % on top" \
        if st else "not run"
    syn_gap = _gap(o["synapse"], st["energy_pj"]["synapse"]) if st else "—"
    L = len(o["layer_phase_ns"])                 # layer-sequential: one SANA-FE step per layer
    s3, p3 = r.get(f"stock_{L}"), r.get(f"profile_{L}")
    lat_self = _gap(o["latency_ns"], p3["time_ns"]) if p3 else "not run"
    lat_stock = _gap(o["latency_ns"], s3["time_ns"]) if s3 else "not run"
    stock_vs_self = _gap(s3["time_ns"], p3["time_ns"]) if s3 and p3 else "—"
    share = f"{100 * (s3['time_ns'] - p3['time_ns']) / s3['time_ns']:.0f} %" if s3 and p3 else "an unmeasured part"
    return [
        "## Gaps over 20 % and what loihi-like adopted", "",
        "For energy SANA-FE charges exactly its per-event table on these spike trains (the *SANA-FE, our figures* "
        "column equals our formula up to the last token's recurrent fan-out), so every energy gap is a per-event "
        "cost:", "",
        "1. **Synaptic ops (before −31 %).** Davies et al. 2018 list 23.6 pJ / 3.5 ns as the *minimum* cost of a "
        "synaptic op; SANA-FE's Loihi file charges 33.6 pJ / 4.7 ns per sparse-synapse op (35.5 dense, 24.0 "
        f"convolutional) — the costs with which SANA-FE reproduces measured Loihi energy within 12 %. Our synapse "
        f"lists are sparse: loihi-like now charges 33.6 pJ / 4.7 ns. What remains ({syn_gap}) is the last token's "
        "recurrent fan-out (see the event counts), a boundary effect of a finite replay.",
        "2. **Neuron updates (before −30 %).** SANA-FE accesses and updates every neuron every step "
        "(51.2 + 21.6 pJ, 6.0 + 3.7 ns) whether it fires or not, and charges 69.3 pJ / 30 ns per spike generated; "
        "Davies' 81 / 47.5 pJ cover the compartment update only. loihi-like now charges 72.8 pJ / 9.7 ns per "
        "compartment of a silent unit and 72.8 + 69.3 / 3 = 95.9 pJ / 9.7 + 30 / 3 = 19.7 ns per compartment of a "
        "unit that fires (its 3 compartments carry its spike generation) — SANA-FE's charge, exactly, with the "
        "profile's existing fields.",
        "3. **Spike messages (before −93 %).** Davies' 1.7 pJ / 2.1 ns \"spike within a tile\" is the link alone; "
        "SANA-FE charges 111 pJ / 5.1 ns per packet sent (one per destination core, the sender's own core "
        "included), 65× more. loihi-like now charges 111 pJ / 5.1 ns per message. Hop costs agree (3.0 pJ east-west; "
        "4.0 vs 4.2 pJ north-south, < 1 % of the total: Davies' figure kept).",
        f"4. **Host → chip embedding ({host}).** SANA-FE charges the 750 embedding events entering the chip "
        "each token (18,000 packets: one per dimension and destination core) plus their hops; our model treats the "
        "embedding as host work and charges nothing. This is not a per-event cost to tune but a missing term "
        "(issue 16 item 3, decoder and embedding on the map): at SANA-FE's rates it is 111 pJ + hops per "
        "(dimension, destination core), and 16 ns of receive time on each destination core.",
        f"5. **Latency (before {_gap(d['latency_ns'], s3['time_ns']) if s3 else '—'}).** "
        "The per-event times above (synaptic op 3.5 → 4.7 ns, neuron 6.1/8.4 → 9.7/19.7 ns, message 2.1 → 5.1 "
        "ns) "
        f"close it (now {lat_stock} against SANA-FE-Loihi). What else differs: SANA-FE charges 16 ns to *receive* "
        "each packet "
        "on the destination core (our formula has no receive term — on a layer-0 core the embedding's 750 "
        "packets alone take 12 µs per token); its stock file synchronises in 0.6–1.8 µs per step depending on the "
        "tiles in use (≤ 1.8 µs per step, ≤ 5.4 µs per token over 3 steps) where loihi-like keeps Davies' 299 ns "
        "barrier; "
        "and SANA-FE's step k is layer k's spikes being sent and processed by their targets (recurrent and next "
        "layer), while our phase l is the work of layer l's cores, so the per-phase rows are not comparable one to "
        "one — only their sum is. The pipelined schedule (one SANA-FE step per token, all layers at once: a new "
        "token every step, 3 steps of latency) is not what our latency model describes.",
        f"6. **Latency, our formula vs SANA-FE with our own figures ({lat_self}).** With identical per-event times "
        "SANA-FE is faster than our formula because its schedule overlaps more: a layer's recurrent synaptic ops for "
        "the next token run in the step where that layer fires, beside the next layer's input ops on other cores, "
        "whereas our phase l serialises layer l's input and recurrent ops on its cores; and SANA-FE keeps hop "
        "latency on the network while our formula adds each message's delivery time to the sender's busy time. "
        f"Against SANA-FE-Loihi ({lat_stock}) this conservatism is offset by what our formula lacks (the 16 ns "
        f"receive per packet and the longer sync: SANA-FE-Loihi takes {stock_vs_self} longer than SANA-FE with our "
        "figures) — the agreement within 20 % is partly two opposite differences, and a per-phase comparison "
        "would not hold.", "",
        "Not adopted: the receive cost and the tile-count sync table need new profile fields and a change to the "
        "formula in `placement.evaluate` (a `message_in_ns` per received message added to the receiving core's "
        "phase time; a sync time per step that grows with the tiles in use); together "
        f"{share} of SANA-FE-Loihi's latency on this model, they are left to the chip-simulation work of issue 16 "
        "(adding them without also modelling the overlap of item 6 would move our latency further above SANA-FE's).",
        ""]


def _sanafe_version() -> str:
    from importlib.metadata import version
    try:
        return version("sanafe")
    except Exception:
        return "(not installed)"

if __name__ == "__main__":
    main()
