"""The tables of benchmarks/results/energy_split.md from a `bench_energy_split` run record (no SANA-FE needed)."""
from __future__ import annotations

GOAL = 0.20                      # issue 25 item 4: within 20 % of SANA-FE's energy

ROWS = (("synapse", "synaptic ops (spike events)"),
        ("psum_adds", "partial-sum adds at the home core (3 per partial sum)"),
        ("neuron", "home units: compartment updates + spike generation"),
        ("parts", "remote parts: 3 accumulator compartments + partial-sum send"),
        ("network_spikes", "spike messages + hops"),
        ("network_psums", "partial-sum messages + hops"),
        ("total", "**total (chip)**"))


def sanafe_split(run: dict) -> dict:
    """SANA-FE's energy per token split like ours: synapse energy less the partial-sum adds (3 synaptic
    events per partial-sum packet), soma by neuron kind, network by message kind (its message trace)."""
    en, net, soma = run["energy_pj"], run["network_pj"], run["soma_pj"]
    adds = 3 * run["packets"]["p"] * run["costs_pj"]["synop"]
    v = {"synapse": en["synapse"] - adds, "psum_adds": adds, "neuron": soma["home"], "parts": soma["part"],
         "network_spikes": net["l"], "network_psums": net["p"]}
    v["total"] = sum(v.values())
    v["host"] = net["emb"]
    return v


def _gap(x, ref):
    return f"{100 * (x - ref) / ref:+.1f} %" if ref else "—"


def _uj(v):
    return "—" if v is None else f"{v / 1e6:.3f}"


def markdown(r: dict) -> str:
    o, om = r["ours"], r["ours_per_message"]
    T = r["tokens"]
    st = sanafe_split(r["stock"]) if "stock" in r else None
    sp = sanafe_split(r["profile"]) if "profile" in r else None
    run = r.get("stock") or r.get("profile")
    sp_layers = "; ".join(f"layer {x['layer']}: {len(x['source_ranges'])} source ranges on "
                          f"{'+'.join(str(c) for c in x['cores_per_range'])} cores, {x['remote_parts']:,} remote "
                          "parts" for x in r["split"]["layers"])
    flits = o["flits"]
    lines = [f"# Energy of a fan-in split mapping vs SANA-FE ({T} tokens)", "",
             f"Model: embedding {r['emb']}, EGRU {'/'.join(map(str, r['hidden']))}, PTB vocabulary, random weights, "
             f"RNN matrices pruned to 85 %, thresholds for ~{100 * r['activity_target']:.0f} % activity (measured "
             f"{', '.join(f'{100 * x:.1f} %' for x in o['activity'])}). Profile `loihi2-axons{r['input_axons']}`: "
             f"`loihi2-like` with `input_axons = {r['input_axons']}` (instead of 8,192; every other figure, costs "
             "included, unchanged), so every layer's unit fan-in exceeds a core's input axons and `split.py` splits "
             f"it: {sp_layers}; {r['cores']} cores on one chip. Compiled with the CLI, calibrated on the first {T} "
             f"tokens of ptb.valid; the spike trains of those tokens come from the chip simulator of the int8 program. "
             f"SANA-FE {r.get('sanafe_version', '2.2.9')} replays them on the same cores and mesh slots: 3 neurons per "
             "unit at home, 3 accumulator neurons per remote part whose g accumulator sends the part's partial sum "
             "(the tokens in which the part received an event) to the home's 3 gate neurons, one zero-weight "
             "connection per synapse (on the part holding it)."
             + (f" Both architecture files allow the profile's {run['max_neurons_supported']:,} neurons per core "
                f"(SANA-FE's Loihi file: 1,024; a core here holds up to {run['max_neurons_per_core']:,}) and spread a "
                "core's neurons over accumulator dendrite units of at most 1,024 (SANA-FE's built-in "
                "`loihi_max_compartments`), at its Loihi file's dendrite energy, 0: capacity only, no cost."
                if run else ""), "",
             "Per token, µJ. *SANA-FE Loihi*: its shipped `loihi.yaml` (every replayed neuron charged like its "
             "`loihi_lif`). *ours*: our event simulator on the split mapping, as the profile charges it "
             f"(`flit_bits = 32`: a 32-bit graded spike is {flits['spike']} flits, a 96-bit partial sum "
             f"{flits['psum']}). *ours, per message*: the same with graded messages charged as SANA-FE charges them "
             "(one packet per message whatever its payload: `flit_bits = 0`). *SANA-FE, our figures*: the same "
             "replay on an architecture file carrying the profile's per-event figures, charged as our formula "
             "charges (one packet per message): checks our accounting against SANA-FE's "
             "machinery.", "",
             "| energy / token | SANA-FE Loihi | ours | gap | ours, per message | gap | SANA-FE, our figures | "
             "ours per message vs it |", "|---|---|---|---|---|---|---|---|"]
    for k, label in ROWS:
        ref, mine = (st or {}).get(k), (sp or {}).get(k)
        lines.append(f"| {label} | {_uj(ref)} | {_uj(o[k])} | {_gap(o[k], ref) if ref else '—'} | {_uj(om[k])} | "
                     f"{_gap(om[k], ref) if ref else '—'} | {_uj(mine)} | {_gap(om[k], mine) if mine else '—'} |")
    lines.append(f"| host → chip embedding packets (not in our model) | {_uj(st and st['host'])} | — | | — | | "
                 f"{_uj(sp and sp['host'])} | |")
    if st:
        ok = lambda x: "met" if abs(x - st["total"]) <= GOAL * st["total"] else "NOT met"  # noqa: E731
        flit = o["total"] - om["total"]
        lines += ["", f"Goal (issue 25 item 4, within {100 * GOAL:.0f} % of SANA-FE's energy): with graded messages "
                  f"charged as SANA-FE charges them {_gap(om['total'], st['total'])} ({ok(om['total'])}); as the "
                  f"profile charges them {_gap(o['total'], st['total'])} ({ok(o['total'])}): "
                  f"{100 * flit / st['total']:+.1f} % of SANA-FE's total are the payload flits (item 1).", ""]
    if run:
        exp_syn = (o["synops"] + o["psum_messages"] * 3) * T + o["last_token_rec_synops"]
        exact = abs(run["synaptic_events"] * T - exp_syn) < 0.5
        pk_l, pk_p = run["packets"]["l"], run["packets"]["p"]
        same = lambda a, b: "exact" if abs(a - b) < 1e-6 else "MISMATCH"  # noqa: E731
        lines += ["", "Event counts per token (the same in every SANA-FE run):", "",
                  f"- synaptic events: SANA-FE {run['synaptic_events']:,.1f}; ours {o['synops']:,.1f} synops + "
                  f"{3 * o['psum_messages']:,.1f} partial-sum adds + {o['last_token_rec_synops'] / T:,.1f} (the "
                  "recurrent fan-out of the last token's spikes, which SANA-FE processes within the run and we leave "
                  f"to the next token): {'exact' if exact else 'MISMATCH'}",
                  f"- spike packets: SANA-FE {pk_l:,.1f}, ours {o['messages'] - o['psum_messages']:,.1f} (one per "
                  f"spiking unit and destination core: {same(pk_l, o['messages'] - o['psum_messages'])}); "
                  f"partial-sum packets: SANA-FE {pk_p:,.1f}, ours {o['psum_messages']:,.1f} "
                  f"({same(pk_p, o['psum_messages'])}); host embedding packets "
                  f"(SANA-FE only) {run['packets']['emb']:,.1f}",
                  f"- hops: spike packets SANA-FE {run['hops']['l']:,.1f}, ours {o['hops'] - o['psum_hops']:,.1f}; "
                  f"partial-sum packets SANA-FE {run['hops']['p']:,.1f}, ours {o['psum_hops']:,.1f}",
                  f"- SANA-FE neurons: {run['neurons']:,} ({run['part_neurons']:,} of them partial-sum "
                  f"accumulators), connections: {run['connections']:,}"]
    runs = [f"{k}: build {r[k]['build_s']:.0f} s, load {r[k]['load_s']:.0f} s, simulate {r[k]['sim_s']:.0f} s"
            for k in ("stock", "profile") if k in r]
    lines += ["", f"Cost: compile {r.get('compile_s', 0):.0f} s; SANA-FE " + "; ".join(runs) +
              f"; peak RSS {r['peak_rss_mib']:,.0f} MiB" + (f"; load during the run: {r['load']}" if r.get("load")
                                                              else "") + ".", ""]
    lines += explanation(r, o, om, st, sp)
    lines += ["Command (SANA-FE installed with `pip install sanafe==2.2.9`, GPL-3.0, benchmark only):", "",
              "    python -m benchmarks.bench_energy_split" + "".join(f" {x}" for x in r.get("argv", [])), ""]
    return "\n".join(lines) + "\n"


def explanation(r, o, om, st, sp) -> list[str]:
    if not st:
        return []
    T = r["tokens"]
    c = r["stock"]["costs_pj"]
    flit_extra = o["total"] - om["total"]
    parts = st["parts"]
    n_part = r["stock"]["part_neurons"]
    ps = r["stock"]["part_soma_pj"]
    net = st["network_spikes"] + st["network_psums"]
    machinery = _gap(om["total"], sp["total"]) if sp else "not run"
    return [
        "## What differs, and why", "",
        f"SANA-FE with our figures equals our per-message accounting ({machinery} in total; per component the "
        "synaptic ops differ only by the last token's recurrent fan-out), so every gap against SANA-FE's Loihi is "
        "a charging convention:", "",
        f"1. **Graded messages ({_gap(o['network_spikes'] + o['network_psums'], net)}"
        " on messages + hops).** A SANA-FE message has no payload (`struct Message` in its `src/message.hpp` has no "
        "value or size field): the sending core's `axon_out` charges `energy_message_out` once per packet "
        f"({c['energy_message_out']:.1f} pJ in its Loihi file), every tile on the route charges its hop energy once "
        f"per packet ({c['energy_east_hop']:.1f} pJ east-west, {c['energy_north_hop']:.1f} pJ north-south), "
        "`energy_message_in` is charged per packet at the receiver (0 in its Loihi file). So SANA-FE charges a "
        "32-bit graded spike and a 96-bit partial sum exactly what it charges a binary spike. `loihi2-like` "
        f"charges a message per flit (`flit_bits = 32`, an ASSUMPTION: a graded spike {o['flits']['spike']} flits, "
        f"a partial sum {o['flits']['psum']}), {flit_extra / 1e6:.3f} µJ per token more than one packet per "
        f"message ({100 * flit_extra / st['total']:.1f} % of SANA-FE's total). Charged per message (*ours, per "
        f"message*), our messages and hops match SANA-FE's ({_gap(om['network_spikes'], st['network_spikes'])} "
        f"spikes, {_gap(om['network_psums'], st['network_psums'])} partial sums: the north-south hop, 4.0 vs 4.2 "
        "pJ). Which is right for Loihi 2 is not public; SANA-FE cannot tell, having no payload model.",
        f"2. **Remote parts' accumulators ({parts / 1e6:.3f} µJ in SANA-FE, {o['parts'] / 1e6:.3f} in ours: "
        f"{_gap(o['parts'], parts)}).** SANA-FE accesses and updates every neuron "
        f"every step ({ps['access']:.1f} pJ as its loihi_lif charges: access + update) and charges "
        f"{ps['spike'] + ps['update']:.1f} pJ per spike sent: the {n_part:,} accumulator compartments of the remote "
        f"parts cost {n_part:,} × {ps['access']:.1f} pJ per token plus {ps['spike'] + ps['update']:.1f} pJ per "
        "partial sum sent. Our formula (`split.estimate_split`, the simulator) charges a remote part's 3 "
        "accumulators like a unit's compartments: `neuron_inactive` every token, `neuron_active` in a token the "
        "part sends its partial sum (before 2026-12-06 it left them out: -17.5 % of SANA-FE's total here).",
        "3. **Host → chip embedding.** SANA-FE charges the embedding's packets from the host-standing neurons "
        "(one per dimension and destination core, every token) plus hops; our model treats the embedding as host "
        "work (as `bench_energy.py`). Not in either total above.",
        f"4. **Synaptic ops.** Same per-event cost (33.6 pJ sparse); the gap is the last token's recurrent "
        f"fan-out ({o['last_token_rec_synops'] / T:,.1f} events per token averaged over {T} tokens), a boundary "
        "effect of a finite replay. The partial-sum adds (3 synaptic events per partial-sum packet at the home "
        "core) agree exactly.", ""]
