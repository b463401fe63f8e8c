"""Mapping reports: `mapping.json` (schema below), the text report and `mapping.png`.

mapping.json::

    {
      "schema": "egru-compile/mapping", "version": 1,
      "profile": {...the chip profile...},
      "chips": N,
      "calibrated": bool, "calib_tokens": T,
      "weights": {"bits": 8 | 32, "quantize": {...ppl before/after on calibration tokens...}},
      "cores": [{"core", "chip", "x", "y", "slot", "layers", "units", "synapses", "memory_bytes",
                 "memory_limit_bytes", "input_axons", "output_axons", "macs_static", "macs_estimated",
                 "spikes_in", "spikes_out", "spike_hops_out", "energy_pj"}],          # all per token
      "totals": {same fields summed, "latency_ns", "cores_used"},
      "router": "unicast" | "multicast",
      "decoder": {"placement": "host" | "chip", "why", "cores": [...decoder cores...] (chip), "host": {...}},
      "simulated": {...`simulated_report` of the simulator run on the calibration tokens...} | null,
      "baseline": {"placement": "sequential", "totals": {...}, "cores": [...]},
      "traffic": {"spike_hops_per_token": x, "baseline_spike_hops_per_token": y, "ratio": y / x},
      "count_macs": {"dynamic": ..., "static": ...},            # the count-macs analysis on the same graph
      "dense_reference": {"chips", "cores", "memory_bytes", "synapses"},  # the same layers unpruned
      "placement_objective": "traffic" | "latency"
    }

Deterministic: compiling the same input twice writes byte-identical mapping.json (no timings in it).

The per-core and total figures under "cores"/"totals" are compile-time *estimates*: calibration activity x
the unit->core map (algebra; `macs_estimated` is null without calibration data, energy then assumes every unit
fires every step). "simulated" holds what the event simulator counted on the same calibration tokens (the
format `egru-compile eval --json` prints under "chip", see `simulated_report`): they agree for the linear
counters (synops, spikes, messages, hops, energy; unicast, decoder on host, one chip), the latency differs
(the estimate takes the busiest core of the average token, the simulator the busiest core of every token).
"""
from __future__ import annotations

import json

import numpy as np

from .placement import CoreCosts, Placement, slot_coords

CORE_FIELDS = ["core", "chip", "x", "y", "slot", "layers", "units", "synapses", "memory_bytes", "memory_limit_bytes",
               "input_axons", "output_axons", "macs_static", "macs_estimated", "spikes_in", "spikes_out",
               "spike_hops_out", "energy_pj"]
SUM_FIELDS = ["units", "synapses", "memory_bytes", "macs_static", "macs_estimated", "spikes_in", "spikes_out",
              "spike_hops_out", "energy_pj"]


def _r(x, nd=4):
    return None if x is None else float(round(float(x), nd))


def core_rows(pl: Placement, costs: CoreCosts, profile, tokens: int) -> list[dict]:
    chip, x, y = slot_coords(profile, pl.slot_of_core)
    layers = [sorted({l for l, co in enumerate(pl.core_of) if np.any(co == c)}) for c in range(pl.n_cores)]
    rows = []
    for c in range(pl.n_cores):
        rows.append({
            "core": c, "chip": int(chip[c]), "x": int(x[c] - chip[c] * profile.chip.tiles_x), "y": int(y[c]),
            "slot": int(pl.slot_of_core[c] % profile.chip.cores), "layers": layers[c],
            "units": int(costs.units[c]), "synapses": int(costs.synapses[c]),
            "memory_bytes": int(costs.memory_bytes[c]), "memory_limit_bytes": profile.core.synapse_memory_bytes,
            "input_axons": int(costs.input_axons[c]), "output_axons": int(costs.output_axons[c]),
            "macs_static": int(costs.macs_static[c]),
            "macs_estimated": (costs.mac_events[c] / tokens) if costs.mac_events is not None and tokens else None,
            "mac_events_total": int(costs.mac_events[c]) if costs.mac_events is not None else None,
            "spikes_in": _r(costs.spikes_in[c]), "spikes_out": _r(costs.spikes_out[c]),
            "spike_hops_out": _r(costs.hops_out[c]), "energy_pj": _r(costs.energy_pj[c], 2)})
    return rows


def totals(rows: list[dict], costs: CoreCosts, profile, tokens: int) -> dict:
    t = {}
    for f in SUM_FIELDS:
        vals = [r[f] for r in rows]
        t[f] = None if any(v is None for v in vals) else (
            int(sum(vals)) if all(isinstance(v, int) for v in vals) else float(sum(vals)))
    if rows and rows[0].get("mac_events_total") is not None:
        # integer total, divided once: equals count-macs' dynamic MACs/token exactly
        t["mac_events_total"] = int(sum(r["mac_events_total"] for r in rows))
        t["macs_estimated"] = t["mac_events_total"] / tokens
    phases = costs.busy_ns.max(axis=1)
    t["latency_ns"] = float(phases.sum() + len(phases) * profile.energy.barrier_ns)
    t["layer_phase_ns"] = [float(p) for p in phases]
    t["cores_used"] = len(rows)
    t["max_core_macs"] = max((r["macs_estimated"] if r["macs_estimated"] is not None else r["macs_static"])
                             for r in rows)
    t["energy_uj"] = t["energy_pj"] / 1e6 if t["energy_pj"] is not None else None
    return t


def text_report(m: dict) -> str:
    p = m["profile"]
    t, b = m["totals"], m["baseline"]["totals"]
    lines = [f"{p['name']}: {m['chips']} chip(s), {t['cores_used']} cores used "
             f"({m['calib_tokens']} calibration tokens)" if m["calibrated"] else
             f"{p['name']}: {m['chips']} chip(s), {t['cores_used']} cores used (static: no calibration data)"]
    q = m["weights"].get("quantize") or {}
    if m["weights"].get("summary"):                 # dtype, synaptic memory, PPL change (weights.weights_info)
        lines.append(m["weights"]["summary"])
    elif m["weights"]["bits"] == 8:
        if q.get("ppl_before") is not None:
            lines.append(f"weights int8 per-row: calibration PPL {q['ppl_before']:.3f} (float) -> {q['ppl_after']:.3f} "
                         f"(int8), change {100 * q['ppl_rel_change']:+.3f} %")
        else:
            lines.append("weights int8 per-row (no calibration data: PPL change not measured)")
    else:
        lines.append("weights float32 (--float-weights)")
    mem = [c["memory_bytes"] / c["memory_limit_bytes"] for c in m["cores"]]
    lines.append(f"synaptic memory: {sum(c['memory_bytes'] for c in m['cores']) / 2**20:.2f} MiB, "
                 f"utilisation mean {100 * np.mean(mem):.1f} % max {100 * np.max(mem):.1f} %")
    key = "macs_estimated" if m["calibrated"] else "macs_static"
    macs = np.array([c[key] for c in m["cores"]], float)
    lines.append(f"MACs/token: total {macs.sum():,.0f} ({key}); per core mean {macs.mean():,.0f} max {macs.max():,.0f} "
                 f"(balance max/mean {macs.max() / max(macs.mean(), 1e-9):.2f})")
    busiest = np.argsort(-macs)[:3]
    lines.append("busiest cores: " + ", ".join(f"#{m['cores'][i]['core']} (chip {m['cores'][i]['chip']}, "
                                               f"tile {m['cores'][i]['x']},{m['cores'][i]['y']}) {macs[i]:,.0f} MACs"
                                               for i in busiest))
    lines.append(f"energy/token {t['energy_pj'] / 1e6:.3f} uJ, latency/token {t['latency_ns'] / 1e3:.2f} us")
    tr = m["traffic"]
    if tr["ratio"] is None:
        ratio = "no inter-core hops"
    elif abs(tr["ratio"] - 1) < 5e-3:
        ratio = "the same as the baseline"
    elif tr["ratio"] >= 1:
        ratio = f"{tr['ratio']:.2f}x less"
    else:
        ratio = f"{1 / tr['ratio']:.2f}x more"
    lines.append(f"spike traffic: {tr['spike_hops_per_token']:,.1f} spike-hops/token vs sequential baseline "
                 f"{tr['baseline_spike_hops_per_token']:,.1f} ({ratio})")
    lines.append(f"baseline (sequential): {b['cores_used']} cores, max core MACs {b['max_core_macs']:,.0f}, "
                 f"energy {b['energy_pj'] / 1e6:.3f} uJ, latency {b['latency_ns'] / 1e3:.2f} us")
    if m.get("count_macs") and m["count_macs"].get("dynamic") is not None:
        lines.append(f"count-macs dynamic MACs/token: {m['count_macs']['dynamic']:,.3f} "
                     "(= sum of per-core macs_estimated)")
    if m.get("dense_reference"):
        d = m["dense_reference"]
        lines.append(f"the same model unpruned would need {d['chips']} chip(s) "
                     f"({d['memory_bytes'] / 2**20:.1f} MiB synaptic memory)")
    lines += decoder_lines(m)
    lines += estimated_vs_simulated(m)
    return "\n".join(lines) + "\n"


def decoder_lines(m: dict) -> list[str]:
    d = m.get("decoder") or {}
    if d.get("placement") == "chip":
        cs = d["cores"]
        return [f"decoder: on chip ({d['why']}): {len(cs)} cores, "
                f"{sum(c['synapses'] for c in cs):,} synapses, {sum(c['memory_bytes'] for c in cs) / 2**20:.2f} MiB; "
                f"{m['chips']} chip(s) in all"]
    if d.get("placement") == "host":
        h = d["host"]
        ev = h.get("decoder_macs_event_gated")
        return [f"decoder: on the host ({d['why']}); host MACs/token: embedding 0 (row lookup of "
                f"{h['embedding_values']} values), decoder {h['decoder_macs_dense']:,} dense"
                + (f" / {ev:,.0f} event-gated" if ev is not None else "")
                + (f"; projection {h['projection_macs_static']:,} non-zeros" + (
                    f" / {h['projection_macs_event_gated']:,.0f} event-gated"
                    if h.get("projection_macs_event_gated") is not None else "") + f", {_projection_words(h)}"
                   if "projection_macs_static" in h else "")]
    return []


def estimated_vs_simulated(m: dict) -> list[str]:
    """Rows 'quantity  estimated  simulated' (per token) when the compile simulated the calibration tokens."""
    s = m.get("simulated")
    if not s:
        return []
    t, st = m["totals"], s["totals"]
    e = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    rows = [("synops (RNN cores)", t.get("macs_estimated"), st["synops"], ",.1f"),
            ("spikes out", None, st["spikes_out"], ",.1f"),
            ("messages", t.get("spikes_out"), st["messages"], ",.1f"),
            ("hops", t.get("spike_hops_out"), st["hops"], ",.1f"),
            ("energy (uJ)", t["energy_pj"] / 1e6 if t.get("energy_pj") is not None else None,
             st["energy_pj"] / 1e6, ".4f"),
            ("latency (us)", t["latency_ns"] / 1e3, st["latency_ns"] / 1e3, ".2f")]
    if st.get("decoder_synops"):
        rows.insert(1, ("decoder synops", None, st["decoder_synops"], ",.1f"))
    out = [f"per token on the {s['tokens']} calibration tokens ({s['router']} router, decoder {s['decoder']}; "
           "estimate: RNN cores only):", f"  {'':<20} {'estimated':>14} {'simulated':>14}"]
    out += [f"  {name:<20} {e(a, f):>14} {e(b, f):>14}" for name, a, b, f in rows]
    if m["chips"] > 1:
        out.append("  (hops: the estimate counts a chip crossing as a tile hop plus a chip hop, the simulation "
                   "as one link; energy charges both the same)")
    out.append("  (latency: the estimate charges every message's whole route serially on its sending core and "
               "takes the busiest core of the average token; the simulation charges one injection per message, "
               "the longest route once per phase (routers pipeline) and the busiest core of every token)")
    return out


def simulated_report(sim, decoder: str) -> dict:
    """The simulator's counters as per-token averages (the "chip" object of `eval --json`)."""
    T = max(sim.steps, 1)
    c = sim.counters
    pt = lambda v: float(v) / T  # noqa: E731
    n_rnn = sim.n_cores if sim.dec_core_of is None else int(sim.dec_core_of.min())
    cores = [{"core": k, "role": "rnn" if k < n_rnn else "decoder", "synops": pt(c["synops"][k]),
              "decoder_synops": pt(c["dec_synops"][k]), "updates": pt(c["updates"][k]),
              "spikes_out": pt(c["spikes_out"][k]), "messages_out": pt(c["messages_out"][k]),
              "messages_in": pt(c["messages_in"][k]), "hops_out": pt(c["hops_out"][k]),
              "energy_pj": pt(c["energy_pj"][k])} for k in range(sim.n_cores)]
    lm = sim.link_messages()
    mesh = sim.mesh
    links = [{"link": int(i), "from": list(mesh.links[i][0]), "to": list(mesh.links[i][1]),
              "kind": mesh.link_kind[i], "messages": pt(lm[i])}
             for i in sorted(np.nonzero(lm)[0], key=lambda i: (-lm[i], i))]
    totals = {"synops": pt(c["synops"].sum()), "decoder_synops": pt(c["dec_synops"].sum()),
              "updates": pt(c["updates"].sum()), "spikes_out": pt(c["spikes_out"].sum()),
              "messages": pt(c["messages_out"].sum()), "messages_in": pt(c["messages_in"].sum()),
              "hops": pt(c["hops_out"].sum()), "energy_pj": pt(c["energy_pj"].sum()),
              "latency_ns": sim.latency_ns / T, "phase_ns": [float(p) / T for p in sim.phase_ns],
              "cores": sim.n_cores, "chips": mesh.width // sim.profile.chip.tiles_x,
              "busiest_link_messages": float(lm.max()) / T if len(lm) else 0.0}
    out = {"tokens": sim.steps, "profile": sim.profile.name, "router": "multicast" if sim.multicast else "unicast",
           "decoder": decoder, "cores": cores, "links": links, "totals": totals}
    from .decoder import WHY_CHIP, WHY_HOST
    out["decoder_why"] = WHY_HOST if decoder == "host" else WHY_CHIP
    if decoder == "host":
        out["host"] = {"embedding_macs": 0, "embedding_values": int(sim.stack.embedding.shape[1]),
                       "decoder_macs": pt(sim.decoder_macs),
                       "decoder_macs_dense": int(np.count_nonzero(sim.stack.decoder_weight))}
        if sim.stack.projection is not None:       # EvNN's projection, on the host before the decoder
            out["host"]["projection_macs"] = pt(sim.projection_macs)
            out["host"]["projection_macs_static"] = int(sim.stack.projection.nnz)
            out["host"]["projection_activation"] = sim.stack.projection_activation
    return out


def _projection_words(h: dict) -> str:
    """How the host's decoder reads the projection's output (activation absent: an artifact from before it
    was recorded, which applied relu)."""
    if h.get("projection_activation", "relu") == "relu":
        return "activation relu (EvNN 2023): the decoder skips its zeros"
    return "activation identity (EvNN >= 0.2.0): graded, signed output, the decoder reads it dense"


def chip_summary(chip: dict) -> str:
    """The few lines plain `eval` prints for a chip artifact."""
    t = chip["totals"]
    lines = [f"chip          {chip['profile']}, {t['cores']} cores on {t['chips']} chip(s), {chip['router']} router, "
             f"decoder on {chip['decoder']}",
             f"synops/token  {t['synops']:,.1f} (RNN cores)" +
             (f" + {t['decoder_synops']:,.1f} (decoder cores)" if t["decoder_synops"] else ""),
             f"messages      {t['messages']:,.1f}/token, {t['hops']:,.1f} hops/token, busiest link "
             f"{t['busiest_link_messages']:,.1f} messages/token",
             f"energy/token  {t['energy_pj'] / 1e6:.4f} uJ (chip)",
             f"latency/token {t['latency_ns'] / 1e3:.2f} us (phases " +
             " ".join(f"{p / 1e3:.2f}" for p in t["phase_ns"]) + " us)"]
    if chip.get("decoder_why"):
        lines.append(f"decoder       on {chip['decoder']} ({chip['decoder_why']})")
    if chip.get("host"):
        h = chip["host"]
        lines.append(f"host          decoder {h['decoder_macs']:,.0f} MACs/token event-gated "
                     f"({h['decoder_macs_dense']:,} dense), embedding lookup of {h['embedding_values']} values")
        if "projection_macs" in h:
            lines.append(f"host          projection {h['projection_macs']:,.0f} MACs/token event-gated "
                         f"({h['projection_macs_static']:,} non-zeros), {_projection_words(h)}")
    return "\n".join(lines) + "\n"


def _ranges(idx: np.ndarray) -> str:
    """'0-4,7,9-12' for sorted indices."""
    if not len(idx):
        return "-"
    br = np.nonzero(np.diff(idx) != 1)[0]
    starts, ends = np.r_[idx[0], idx[br + 1]], np.r_[idx[br], idx[-1]]
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(starts, ends))


def core_detail(m: dict, core: int, program=None) -> str:
    """`inspect DIR --core N`: the core's mapping row, its units (layer, index ranges), input axons by
    source core and its destination cores (from program.npz when given: (stack, placement, dec_core_of))."""
    from ...errors import EgruError
    rows = [c for c in m["cores"] if c["core"] == core]
    dec = [c for c in (m.get("decoder") or {}).get("cores", []) if c["core"] == core]
    if not rows and not dec:
        n = len(m["cores"]) + len((m.get("decoder") or {}).get("cores", []))
        raise EgruError(f"no core {core} in this mapping (cores 0..{n - 1})")
    c = rows[0] if rows else dec[0]
    text = "".join(f"{k:<20} {c[k]}\n" for k in CORE_FIELDS + ["mac_events_total", "outputs", "synops_estimated"]
                   if k in c)
    sim = (m.get("simulated") or {}).get("cores")
    if sim and core < len(sim):
        text += "simulated (calibration tokens, per token): " + ", ".join(
            f"{k} {sim[core][k]:,.1f}" for k in ("synops", "decoder_synops", "spikes_out", "messages_out",
                                                  "messages_in", "hops_out", "energy_pj")) + "\n"
    if program is None:
        return text
    stack, pl, dec_core_of = program
    L = len(stack.layers)
    for l in range(L):
        u = np.nonzero(pl.core_of[l] == core)[0]
        if len(u):
            text += f"units         layer {l}: {len(u)} [{_ranges(u)}]\n"
    if dec_core_of is not None and np.any(dec_core_of == core):
        u = np.nonzero(dec_core_of == core)[0]
        text += f"units         decoder outputs: {len(u)} [{_ranges(u)}]\n"
    # input axons: presynaptic units with a synapse here, grouped by the core that sends them
    srcs: dict[int, int] = {}
    dests: set[int] = set()
    for l, lw in enumerate(stack.layers):
        for M, src_layer, tgt in ((lw.W, l - 1, pl.core_of[l]), (lw.R, l, pl.core_of[l])):
            d = M.to_dense() != 0
            h = lw.hidden
            g = d[:h] | d[h:2 * h] | d[2 * h:]
            here = g[tgt == core].any(0)
            if src_layer >= 0:
                for s_core in pl.core_of[src_layer][here]:
                    srcs[int(s_core)] = srcs.get(int(s_core), 0) + 1
            elif here.any():
                srcs[-1] = srcs.get(-1, 0) + int(here.sum())
            mine = pl.core_of[src_layer] == core if src_layer >= 0 else None
            if mine is not None and mine.any():
                dests.update(int(x) for x in np.unique(tgt[g[:, mine].any(1)]))
    if dec_core_of is not None:
        g = stack.decoder_weight != 0
        here = g[dec_core_of == core].any(0)
        for s_core in pl.core_of[-1][here]:
            srcs[int(s_core)] = srcs.get(int(s_core), 0) + 1
        mine = pl.core_of[-1] == core
        if mine.any():
            dests.update(int(x) for x in np.unique(dec_core_of[g[:, mine].any(1)]))
    text += "input axons   " + (", ".join(("embedding" if s < 0 else f"core {s}") + f": {k}"
                                          for s, k in sorted(srcs.items())) or "-") + "\n"
    text += "destinations  " + (", ".join(f"core {d}" for d in sorted(dests)) or "- (host)") + "\n"
    return text


def links_detail(m: dict, top: int = 20) -> str:
    """`inspect DIR --links`: the busiest mesh links in the compile's simulation of the calibration tokens."""
    s = m.get("simulated")
    if not s:
        return "links: no simulation in this mapping (compile with --calib-data to simulate the calibration text)\n"
    ls = s["links"]
    lines = [f"busiest links ({len(ls)} used; {s['router']} router; messages per token over {s['tokens']} "
             "calibration tokens; tile coordinates (x, y), chips side by side along x):"]
    for r in ls[:top]:
        lines.append(f"  ({r['from'][0]},{r['from'][1]}) -> ({r['to'][0]},{r['to'][1]})  {r['kind']:<4} "
                     f"{r['messages']:,.2f}")
    return "\n".join(lines) + "\n"


#: most lines drawn in mapping.png (the busiest links / core pairs), so 500 or 8,000 cores stay drawable
MAX_DRAWN_LINES = 400


def plot_mapping(m: dict, costs: CoreCosts, pl: Placement, profile, path) -> None:
    """Mesh picture: cores (2x2 per tile) coloured by synaptic ops per token (simulated when the compile
    simulated the calibration text, else estimated), mesh links drawn between tile centres with width and
    colour by messages per token (simulated; else the estimate's core-to-core traffic), red lines at chip
    boundaries. Figure size grows with the number of chips; labels stay off the cells so 500 cores stay legible."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm
    g = profile.chip
    chips = m["chips"]
    sim = m.get("simulated")
    grid = np.full((g.tiles_y * 2, chips * g.tiles_x * 2), np.nan)
    rows = list(m["cores"]) + list((m.get("decoder") or {}).get("cores", []))
    chip_of, gx_of, gy_of = slot_coords(profile, np.array([r["slot"] if "chip" not in r else
                                                           r["chip"] * g.cores + r["slot"] for r in rows]))
    pos = {}
    for r, s_chip, tx, ty in zip(rows, chip_of, gx_of, gy_of):
        slot = r["slot"] if "chip" not in r else r["chip"] * g.cores + r["slot"]
        k = slot % g.cores_per_tile
        gx, gy = tx * 2 + k % 2, ty * 2 + k // 2
        if sim:
            sc = sim["cores"][r["core"]]
            val = sc["synops"] + sc["decoder_synops"]
        else:
            val = r.get("macs_estimated") if r.get("macs_estimated") is not None else r.get(
                "macs_static", r.get("synapses", 0))
        grid[gy, gx] = val if val is not None else 0
        pos[r["core"]] = (gx, gy)
    fig, ax = plt.subplots(figsize=(min(40, max(7.5, 3 + chips * 4.5)), 4.8))
    im = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    fig.colorbar(im, ax=ax, label="synops per token " + ("(simulated)" if sim else "(estimated)"),
                 fraction=0.03, pad=0.01)
    from matplotlib.collections import LineCollection
    if sim and sim["links"]:
        links = sorted(sim["links"], key=lambda l: -l["messages"])[:MAX_DRAWN_LINES]
        load = np.array([l["messages"] for l in links])
        top = load.max()
        cmap = matplotlib.colormaps["autumn_r"]
        segs = []
        for l in links:
            (x0, y0), (x1, y1) = l["from"], l["to"]
            off = 0.12 * (1 if (x1 - x0) + (y1 - y0) > 0 else -1)      # the two directions side by side
            segs.append([(x0 * 2 + 0.5 + off * (y1 != y0), y0 * 2 + 0.5 + off * (x1 != x0)),
                         (x1 * 2 + 0.5 + off * (y1 != y0), y1 * 2 + 0.5 + off * (x1 != x0))])
        ax.add_collection(LineCollection(segs, colors=cmap(load / top), linewidths=0.5 + 3.5 * load / top,
                                         alpha=0.9, capstyle="butt"))
        sm = cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, top))
        fig.colorbar(sm, ax=ax, label="link messages per token", fraction=0.03, pad=0.01)
        what = f"links: messages per token (busiest {top:,.0f})"
    else:
        tr = costs.traffic + costs.traffic.T
        np.fill_diagonal(tr, 0)
        if tr.max() > 0:
            a_idx, b_idx = np.nonzero(np.triu(tr))
            vals = tr[a_idx, b_idx]
            keep = np.argsort(-vals, kind="stable")[:MAX_DRAWN_LINES]      # the busiest pairs only
            segs, alphas = [], []
            for a, b, v in zip(a_idx[keep], b_idx[keep], vals[keep]):
                if a in pos and b in pos:
                    segs.append([pos[a], pos[b]])
                    alphas.append(min(0.8, 0.15 + v / tr.max()))
            colors = np.ones((len(segs), 4))
            colors[:, 3] = alphas
            ax.add_collection(LineCollection(segs, colors=colors, linewidths=0.7))
        what = f"lines: the {MAX_DRAWN_LINES} busiest inter-core spike pairs (estimated)"
    for k in range(1, chips):
        ax.axvline(k * g.tiles_x * 2 - 0.5, color="red", lw=2)
    ax.set_xticks(np.arange(-0.5, chips * g.tiles_x * 2, 2), minor=False)
    ax.set_yticks(np.arange(-0.5, g.tiles_y * 2, 2))
    ax.grid(color="grey", lw=0.5)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_title(f"{profile.name}, {chips} chip(s) (red: chip boundary), {len(rows)} cores, 2x2 cores per tile\n"
                 f"{what}; {m['traffic']['spike_hops_per_token']:,.0f} spike-hops/token estimated", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
