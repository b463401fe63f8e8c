"""Mapping reports: `mapping.json` (schema below), the text report (`mapping_png` / `mapping_html` draw it).

mapping.json::

    {
      "schema": "egru-compile/mapping", "version": 2,    # 2: synops/messages/hops names, whole totals
      "profile": {...the chip profile...},
      "chips": N,
      "calibrated": bool, "calib_tokens": T,
      "weights": {"bits": 8 | 32, "quantize": {...ppl before/after on calibration tokens...}},
      "cores": [{"core", "chip", "x", "y", "slot", "layers", "units", "synapses", "memory_bytes",
                 "memory_limit_bytes", "input_axons", "output_axons", "synops_static", "synops_estimated",
                 "messages_in", "messages_out", "hops_out", "energy_pj"}],          # all per token
      "totals": {same fields summed, "latency_ns" (serial-route estimate), "layer_phase_ns",
                 "latency_phase_model_ns" (the simulator's phase model; RNN-only configurations), "cores_used",
                 "scope"},                                                     # the whole configuration
      "rnn_totals": {...} (decoder on chip: the RNN cores alone),
      "router": "unicast" | "multicast",
      "decoder": {"placement": "host" | "chip", "why", "host": {...},
                  "cores": [...{"role": "projection" | "decoder", "outputs", ...}...] (chip),
                  "projection": {activation, payload, payload_bits, scales, "simulated": {messages_sent,
                                 saturated, calib_ppl_float, calib_ppl_chip}} (chip, projection model)},
      "simulated": {...`simulated_report` of the simulator run on the calibration tokens...} | null,
      "baseline": {"placement": "sequential", "totals": {...}, "cores": [...]},      # RNN cores
      "traffic": {"hops_per_token": x, "baseline_hops_per_token": y, "ratio": y / x | null},
      "comparison": {"hops": {...}, "latency_ns": {...}, "energy_pj": {...}, "better_objective": ...,
                     "chosen": candidate kept by the objective, "trade": what it wins / keeps (or null)},
      "assumptions": {"keys": {"section.key": comment}, "figures": {quantity: [keys]}},
      "count_macs": {"dynamic": ..., "static": ...},            # the count-macs analysis on the same graph
      "dense_reference": {"chips", "cores", "memory_bytes", "synapses"},  # the same layers unpruned
      "placement_objective": "traffic" | "latency"
    }

Names (one per quantity, the same in the report, JSON, `inspect` and `eval`): a *spike* is one unit firing; a
*message* is one spike delivered to one destination core (a unit reaching 3 cores sends 3); a *hop* is one
message crossing one mesh link; a *synop* is one synaptic operation on a core (one non-zero weight times an
incoming spike: a MAC of `count-macs`). ``synops_static`` counts every synapse once (every unit fires).

Deterministic: compiling the same input twice writes byte-identical mapping.json (no timings in it).

The per-core and total figures under "cores"/"totals" are compile-time *estimates*: calibration activity x
the unit->core map (algebra; `synops_estimated` is null without calibration data, energy then assumes every unit
fires every step). "simulated" holds what the event simulator counted on the same calibration tokens (the
format `egru-compile eval --json` prints under "chip", see `simulated_report`): they agree for the linear
counters (synops, messages, hops, energy; unicast, any number of chips: a chip crossing is one hop in both), the latency differs
(the estimate takes the busiest core of the average token, the simulator the busiest core of every token).
"""
from __future__ import annotations

import json

import numpy as np

from .assumptions import footnote, mark
from .costs import CostModel
from .placement import CoreCosts, Placement, slot_coords
from .report_sections import _bound_lines, _projection_words, decoder_lines

CORE_FIELDS = ["core", "chip", "x", "y", "slot", "layers", "units", "synapses", "memory_bytes", "memory_limit_bytes",
               "input_axons", "output_axons", "synops_static", "synops_estimated", "messages_in", "messages_out",
               "hops_out", "energy_pj"]
SUM_FIELDS = ["units", "synapses", "memory_bytes", "synops_static", "synops_estimated", "messages_in",
              "messages_out", "hops_out", "energy_pj"]
#: mapping.json schema version (2: one name per quantity, totals of the whole configuration, assumptions)
MAPPING_VERSION = 2
#: the objective whose cost each comparison line is about
OBJECTIVE_OF = {"hops": "traffic", "latency_ns": "latency"}


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
            "synops_static": int(costs.macs_static[c]),
            "synops_estimated": (costs.mac_events[c] / tokens) if costs.mac_events is not None and tokens else None,
            "synop_events_total": int(costs.mac_events[c]) if costs.mac_events is not None else None,
            "messages_in": _r(costs.spikes_in[c]), "messages_out": _r(costs.spikes_out[c]),
            "hops_out": _r(costs.hops_out[c]), "energy_pj": _r(costs.energy_pj[c], 2)})
    return rows


def totals(rows: list[dict], costs: CoreCosts, profile, tokens: int) -> dict:
    t = {}
    for f in SUM_FIELDS:
        vals = [r[f] for r in rows]
        t[f] = None if any(v is None for v in vals) else (
            int(sum(vals)) if all(isinstance(v, int) for v in vals) else float(sum(vals)))
    if rows and rows[0].get("synop_events_total") is not None:
        # integer total, divided once: equals count-macs' dynamic MACs/token exactly
        t["synop_events_total"] = int(sum(r["synop_events_total"] for r in rows))
        t["synops_estimated"] = t["synop_events_total"] / tokens
    cm = CostModel(profile)
    phases = [cm.phase_ns(p) for p in costs.busy_ns.max(axis=1)]   # each with its barrier, as the simulator's
    t["latency_ns"] = float(sum(phases))
    t["layer_phase_ns"] = [float(p) for p in phases]
    # the simulator's latency model on the same estimate (`CoreCosts.phase_ns`): one delivery per injected
    # message on the sender, the longest route once per phase; latency_ns above stays the serial-route figure
    # the placement choices compare
    t["latency_phase_model_ns"] = float(np.sum(costs.phase_ns)) if costs.phase_ns is not None else None
    t["cores_used"] = len(rows)
    t["max_core_synops"] = max((r["synops_estimated"] if r["synops_estimated"] is not None else r["synops_static"])
                               for r in rows)
    t["energy_uj"] = t["energy_pj"] / 1e6 if t["energy_pj"] is not None else None
    return t


def compare_baseline(ours: dict, base: dict, objective: str, choice: dict | None = None) -> dict:
    """Chosen placement vs the sequential baseline (RNN cores of both) on hops, latency and energy; names the
    objective that targets a quantity on which the chosen placement loses. `choice` (the ``info`` of
    `placement.place`): which candidate was kept (``chosen``) and the trade it made (``trade``)."""
    out = {"chosen": (choice or {}).get("chosen"), "trade": (choice or {}).get("trade"),
           "layout": (choice or {}).get("layout_line"), "memory_bound": (choice or {}).get("memory_bound")}
    for q in ("hops_out", "latency_ns", "energy_pj"):
        a, b = ours.get(q) or 0.0, base.get(q) or 0.0
        key = "hops" if q == "hops_out" else q
        out[key] = {"chosen": a, "baseline": b, "worse": bool(a > b * (1 + 5e-3) + 1e-9)}
    losing = [OBJECTIVE_OF[q] for q in ("hops", "latency_ns") if out[q]["worse"] and OBJECTIVE_OF[q] != objective]
    out["better_objective"] = losing[0] if losing else None
    return out


def _comparison_lines(m: dict, fl) -> list[str]:
    c = m.get("comparison")
    if not c:
        return []
    who = "RNN cores: " if m.get("rnn_totals") else ""
    def ratio(a, b):
        if abs(a - b) <= 5e-3 * max(a, b, 1e-9):
            return "the same"
        if a < b:
            return f"{b / a:.2f}x less" if a > 0 else "none vs some"
        return f"{a / b:.2f}x more" if b > 0 else "some vs none"
    h, lt, en = c["hops"], c["latency_ns"], c["energy_pj"]
    base = (m.get("baseline") or {}).get("placement", "sequential")
    if base != "sequential":                  # no unsplit placement exists: nothing to compare with
        return [f"baseline: {base}"]
    lines = [f"vs sequential baseline ({who}{m['placement_objective']} objective): "
             f"hops/token {h['chosen']:,.1f} vs {h['baseline']:,.1f} ({ratio(h['chosen'], h['baseline'])}); "
             f"latency {lt['chosen'] / 1e3:.2f} vs {lt['baseline'] / 1e3:.2f} us{mark(fl, 'latency_ns')} "
             f"({ratio(lt['chosen'], lt['baseline'])}); energy {en['chosen'] / 1e6:.4f} vs "
             f"{en['baseline'] / 1e6:.4f} uJ{mark(fl, 'energy_pj')}"]
    if c.get("trade"):
        lines.append(f"placement choice ({m['placement_objective']} objective, never worse than the baseline on "
                     f"messages, hops and latency) - {c['trade']}")
    worse = [n for n, k in (("traffic", "hops"), ("latency", "latency_ns")) if c[k]["worse"]]
    if worse:
        lines.append(f"WARNING: the {m['placement_objective']} placement is worse than the sequential baseline on "
                     + " and ".join(worse) + (f"; --placement-objective {c['better_objective']} targets it"
                                              if c.get("better_objective") else ""))
    return lines


def check_version(m: dict) -> None:
    """Refuse, in one line, a mapping.json written before the names and totals of version 2."""
    if m.get("version", 1) < MAPPING_VERSION:
        from ...errors import EgruError
        raise EgruError(f"mapping.json version {m.get('version', 1)} was written by an older egru-compile "
                        f"(this one reads version {MAPPING_VERSION}): compile the model again")


def text_report(m: dict) -> str:
    check_version(m)
    p = m["profile"]
    t = m["totals"]
    fl = (m.get("assumptions") or {}).get("figures")
    n_all = t["cores_used"]
    if m["calibrated"]:
        lines = [f"{p['name']}: {m['chips']} chip(s), {n_all} cores used ({m['calib_tokens']} calibration tokens)"]
    else:
        lines = [f"{p['name']}: UNCALIBRATED - energy, latency and traffic below are the every-unit-fires upper "
                 f"bound (every unit spikes every token); pass --calib-data TEXT for real activity. "
                 f"{m['chips']} chip(s), {n_all} cores used"]
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
    cores = list(m["cores"]) + list((m.get("decoder") or {}).get("cores", []))
    mem = [c["memory_bytes"] / c["memory_limit_bytes"] for c in cores]
    lines.append(f"synaptic memory: {sum(c['memory_bytes'] for c in cores) / 2**20:.2f} MiB{mark(fl, 'memory_bytes')}"
                 f" on {len(cores)} cores, utilisation mean {100 * np.mean(mem):.1f} % max {100 * np.max(mem):.1f} %")
    lines += _bound_lines(m)
    key = "synops_estimated" if m["calibrated"] else "synops_static"
    syn = np.array([c[key] for c in cores], float)
    lines.append(f"synops/token: total {syn.sum():,.0f} ({key}"
                 + (", decoder cores included" if m.get("rnn_totals") else "") + f"); per core mean "
                 f"{syn.mean():,.0f} max {syn.max():,.0f} (balance max/mean {syn.max() / max(syn.mean(), 1e-9):.2f})")
    busiest = np.argsort(-syn, kind="stable")[:3]
    lines.append("busiest cores: " + ", ".join(f"#{cores[i]['core']} {syn[i]:,.0f} synops" for i in busiest))
    scope = t.get("scope") or "whole configuration"
    lines.append(f"energy/token {t['energy_pj'] / 1e6:.3f} uJ{mark(fl, 'energy_pj')}, latency/token "
                 f"{t['latency_ns'] / 1e3:.2f} us{mark(fl, 'latency_ns')} (estimated, {scope})")
    pm = t.get("latency_phase_model_ns")
    if pm and abs(t["latency_ns"] / pm - 1) > 0.1:
        lines.append(f"  (that latency charges each message's whole route serially on its sender, as the placement "
                     f"choices compare it; the simulator's phase model - one delivery per message on the sender, the "
                     f"longest route once per phase - estimates {pm / 1e3:.2f} us{mark(fl, 'latency_ns')})")
    s = m.get("simulated")
    if s:
        st = s["totals"]
        lines.append(f"simulated on the calibration tokens: energy/token {st['energy_pj'] / 1e6:.3f} uJ"
                     f"{mark(fl, 'energy_pj')}, latency/token {st['latency_ns'] / 1e3:.2f} us{mark(fl, 'latency_ns')}"
                     f" ({st['cores_used']} cores, {st['messages_out']:,.1f} "
                     + ("packets/token: multicast, one per spike" if s.get("router") == "multicast" else
                        "messages/token") + ")")
    r = m.get("rnn_totals")
    if r:
        lines.append(f"RNN cores only (subtotal): {r['cores_used']} cores, energy/token {r['energy_pj'] / 1e6:.3f} uJ"
                     f"{mark(fl, 'energy_pj')}, latency/token {r['latency_ns'] / 1e3:.2f} us{mark(fl, 'latency_ns')}")
    tr = m["traffic"]
    lines.append(f"traffic: {t['messages_out']:,.1f} messages/token, {t['hops_out']:,.1f} hops/token"
                 f"{mark(fl, 'hops')}")
    lines += _comparison_lines(m, fl)
    if not t["hops_out"]:
        lines.append("  (no message leaves a core: no inter-core hops)" if not t["messages_out"] else
                     "  (0 hops: every message goes to a core on the sender's own tile, which crosses no mesh link)")
    if m.get("count_macs") and m["count_macs"].get("dynamic") is not None:
        lines.append(f"count-macs dynamic MACs/token: {m['count_macs']['dynamic']:,.3f} "
                     "(= sum of the RNN cores' synops_estimated)")
    if m.get("dense_reference"):
        d = m["dense_reference"]
        lines.append(f"the same model unpruned would need {d['chips']} chip(s) "
                     f"({d['memory_bytes'] / 2**20:.1f} MiB synaptic memory{mark(fl, 'memory_bytes')})")
    lines += decoder_lines(m)
    lines += estimated_vs_simulated(m)
    lines += footnote(fl, p["name"])
    return "\n".join(lines) + "\n"


def estimated_vs_simulated(m: dict) -> list[str]:
    """Rows 'quantity  estimated  simulated' (per token) when the compile simulated the calibration tokens."""
    s = m.get("simulated")
    if not s:
        return []
    t, st = m["totals"], s["totals"]
    e = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    fl = (m.get("assumptions") or {}).get("figures")
    rows = [("synops", t.get("synops_estimated"), st["synops"], ",.1f"),
            ("spikes", None, st["spikes_out"], ",.1f"),
            *([("messages", t.get("messages_out"), st["messages_out"], ",.1f")] if s["router"] != "multicast" else
              [("messages (deliveries)", t.get("messages_out"), st["messages_in"], ",.1f"),
               ("packets (multicast)", None, st["messages_out"], ",.1f")]),
            ("hops" + mark(fl, "hops"), t.get("hops_out"), st["hops_out"], ",.1f"),
            ("energy (uJ)" + mark(fl, "energy_pj"), t["energy_pj"] / 1e6 if t.get("energy_pj") is not None
             else None, st["energy_pj"] / 1e6, ".4f"),
            ("latency (us)" + mark(fl, "latency_ns"), t["latency_ns"] / 1e3, st["latency_ns"] / 1e3, ".2f")]
    if t.get("latency_phase_model_ns"):
        rows.append(("  phase model (us)", t["latency_phase_model_ns"] / 1e3, st["latency_ns"] / 1e3, ".2f"))
    out = [f"per token on the {s['tokens']} calibration tokens ({s['router']} router, decoder {s['decoder']}; "
           f"{t.get('scope') or 'whole configuration'}):", f"  {'':<20} {'estimated':>14} {'simulated':>14}"]
    out += [f"  {name:<20} {e(a, f):>14} {e(b, f):>14}" for name, a, b, f in rows]
    if s["router"] == "multicast":
        out.append("  (multicast router: one packet per spike, replicated along a tree to its destination cores "
                   "(one message each); hops count each tree link once in the simulation, once per message in "
                   "the estimate)")
    out.append("  (latency: the estimate charges every message's whole route serially on its sending core and "
               "takes the busiest core of the average token; the simulation charges one injection per message, "
               "the longest route once per phase (routers pipeline) and the busiest core of every token)")
    return out


def simulated_report(sim, decoder: str, assumptions: dict | None = None) -> dict:
    """The simulator's counters as per-token averages (the "chip" object of `eval --json`); `assumptions`:
    mapping.json's, copied so that eval marks the figures resting on profile ASSUMPTIONs."""
    T = max(sim.steps, 1)
    c = sim.counters
    pt = lambda v: float(v) / T  # noqa: E731
    dec = sim.dec
    n_rnn = sim.core_map.n_cores
    first_dec = sim.n_cores if dec.dec_core_of is None else int(dec.dec_core_of.min())
    role = lambda k: "rnn" if k < n_rnn else ("projection" if k < first_dec else "decoder")  # noqa: E731
    # "synops" is always the whole of what it covers (a core's, the configuration's); decoder_synops (projection
    # included) and rnn_synops are its parts, named as such
    cores = [{"core": k, "role": role(k), "synops": pt(c["synops"][k] + c["dec_synops"][k]),
              "decoder_synops": pt(c["dec_synops"][k]), "updates": pt(c["updates"][k]),
              "spikes_out": pt(c["spikes_out"][k]), "messages_out": pt(c["messages_out"][k]),
              "messages_in": pt(c["messages_in"][k]), "hops_out": pt(c["hops_out"][k]),
              "energy_pj": pt(c["energy_pj"][k])} for k in range(sim.n_cores)]
    lm = sim.link_messages()
    mesh = sim.mesh
    links = [{"link": int(i), "from": list(mesh.links[i][0]), "to": list(mesh.links[i][1]),
              "kind": mesh.link_kind[i], "messages": pt(lm[i])}
             for i in sorted(np.nonzero(lm)[0], key=lambda i: (-lm[i], i))]
    totals = {"synops": pt(c["synops"].sum() + c["dec_synops"].sum()), "rnn_synops": pt(c["synops"].sum()),
              "decoder_synops": pt(c["dec_synops"].sum()),
              "projection_synops": pt(c["dec_synops"][n_rnn:first_dec].sum()),
              "updates": pt(c["updates"].sum()), "spikes_out": pt(c["spikes_out"].sum()),
              # fan-in split layers: graded partial-sum messages (part of "messages") and the adds they cost at
              # the home cores (charged at the synop energy, not counted in synops: no synapse is read)
              "psum_messages": pt(c["psum_messages"].sum()), "psum_adds": pt(c["psum_adds"].sum()),
              # the names of mapping.json's estimate (messages_out, hops_out, cores_used, layer_phase_ns)
              "messages_out": pt(c["messages_out"].sum()), "messages_in": pt(c["messages_in"].sum()),
              "hops_out": pt(c["hops_out"].sum()), "energy_pj": pt(c["energy_pj"].sum()),
              "latency_ns": sim.latency_ns / T, "layer_phase_ns": [float(p) / T for p in sim.phase_ns],
              "cores_used": sim.n_cores, "chips": mesh.width // sim.profile.chip.tiles_x,
              "busiest_link_messages": float(lm.max()) / T if len(lm) else 0.0}
    out = {"tokens": sim.steps, "profile": sim.profile.name, "router": "multicast" if sim.multicast else "unicast",
           "decoder": decoder, "cores": cores, "links": links, "totals": totals}
    if assumptions is not None:
        out["assumptions"] = assumptions
    from .decoder import WHY_CHIP, WHY_CHIP_PROJECTION, WHY_HOST
    out["decoder_why"] = WHY_HOST if decoder == "host" else (WHY_CHIP if dec.proj_core_of is None else WHY_CHIP_PROJECTION)
    if dec.proj_core_of is not None:    # projection cores: graded messages of the projection outputs
        out["projection"] = {"activation": sim.stack.projection_activation or "identity",
                             "outputs": int(len(dec.proj_core_of)), "messages_sent": pt(dec.fires.sum()),
                             "saturated": int(dec.saturated), "payload_bits": sim.profile.spikes.payload_bits}
    if decoder == "host":
        out["host"] = {"embedding_macs": 0, "embedding_values": int(sim.stack.embedding.shape[1]),
                       "decoder_macs": pt(sim.decoder_macs),
                       "decoder_macs_dense": int(np.count_nonzero(sim.stack.decoder_weight))}
        if sim.stack.projection is not None:       # EvNN's projection, on the host before the decoder
            out["host"]["projection_macs"] = pt(sim.projection_macs)
            out["host"]["projection_macs_static"] = int(sim.stack.projection.nnz)
            out["host"]["projection_activation"] = sim.stack.projection_activation
    return out


def chip_summary(chip: dict) -> str:
    """The few lines plain `eval` prints for a chip artifact."""
    t = chip["totals"]
    fl = (chip.get("assumptions") or {}).get("figures")
    lines = [f"chip          {chip['profile']}, {t['cores_used']} cores on {t['chips']} chip(s), {chip['router']} router, "
             f"decoder on {chip['decoder']} (figures: whole configuration, per token)",
             # 1 synop = 1 MAC of count-macs: the RNN cores' synops are what onnx / tvm / checkpoints call MACs/token
             f"synops/token  {t['synops']:,.1f} (" +
             (f"{t['rnn_synops']:,.1f} RNN cores + {t['decoder_synops']:,.1f} decoder cores; 1 synop = 1 MAC: the "
              "RNN cores' figure is" if t["decoder_synops"] else "RNN cores; 1 synop = 1 MAC:") +
             " the MACs/token of count-macs and of eval on onnx/tvm)",
             f"spikes/token  {t['spikes_out']:,.1f}",
             (f"messages      {t['messages_out']:,.1f}/token" if chip["router"] != "multicast" else
              f"packets       {t['messages_out']:,.1f}/token (multicast: one per spike, copied by the routers to "
              f"{t['messages_in']:,.1f} messages/token at their destination cores)") +
             f", {t['hops_out']:,.1f} hops/token{mark(fl, 'hops')}, busiest link {t['busiest_link_messages']:,.1f} "
             + ("messages" if chip["router"] != "multicast" else "packets") + "/token",
             f"energy/token  {t['energy_pj'] / 1e6:.4f} uJ{mark(fl, 'energy_pj')} (chip)",
             f"latency/token {t['latency_ns'] / 1e3:.2f} us{mark(fl, 'latency_ns')} (phases " +
             " ".join(f"{p / 1e3:.2f}" for p in t["layer_phase_ns"]) + " us)"]
    if t.get("psum_messages"):
        lines.append(f"partial sums  {t['psum_messages']:,.1f} graded messages/token (fan-in split layers; part of "
                     f"the messages above), {t['psum_adds']:,.1f} adds/token at the home cores (charged at the "
                     f"synop energy, not in synops)")
    if chip.get("decoder_why"):
        lines.append(f"decoder       on {chip['decoder']} ({chip['decoder_why']})")
    if chip.get("projection"):
        p = chip["projection"]
        lines.append(f"projection    on chip: {t['projection_synops']:,.1f} synops/token (in the decoder cores' "
                     f"figure), {p['messages_sent']:,.1f} of {p['outputs']} outputs sent per token as graded "
                     f"{p['payload_bits']}-bit messages, {p['saturated']} saturated")
    if chip.get("host"):
        h = chip["host"]
        lines.append(f"host          decoder {h['decoder_macs']:,.0f} MACs/token event-gated "
                     f"({h['decoder_macs_dense']:,} dense), embedding lookup of {h['embedding_values']} values")
        if "projection_macs" in h:
            lines.append(f"host          projection {h['projection_macs']:,.0f} MACs/token event-gated "
                         f"({h['projection_macs_static']:,} non-zeros), {_projection_words(h)}")
    lines += footnote(fl, chip["profile"], shown=("hops", "energy_pj", "latency_ns"))   # the figures marked above
    return "\n".join(lines) + "\n"


def write_json(path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
