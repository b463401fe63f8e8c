"""Mapping reports: `mapping.json` (schema below), the text report and `mapping.png`.

mapping.json::

    {
      "schema": "egru-compile/mapping", "version": 1,
      "profile": {...the chip profile...},
      "chips": N,
      "calibrated": bool, "calib_tokens": T,
      "weights": {"bits": 8 | 32, "quantize": {...ppl before/after on calibration tokens...}},
      "cores": [{"core", "chip", "x", "y", "slot", "layers", "units", "synapses", "memory_bytes",
                 "memory_limit_bytes", "input_axons", "output_axons", "macs_static", "macs_measured",
                 "spikes_in", "spikes_out", "spike_hops_out", "energy_pj"}],          # all per token
      "totals": {same fields summed, "latency_ns", "cores_used"},
      "baseline": {"placement": "sequential", "totals": {...}, "cores": [...]},
      "traffic": {"spike_hops_per_token": x, "baseline_spike_hops_per_token": y, "ratio": y / x},
      "count_macs": {"dynamic": ..., "static": ...},            # the count-macs analysis on the same graph
      "dense_reference": {"chips", "cores", "memory_bytes", "synapses"},  # the same layers unpruned
      "placement_objective": "traffic" | "latency"
    }

Deterministic: compiling the same input twice writes byte-identical mapping.json (no timings in it).

`macs_measured` is null without calibration data; energy then assumes every unit fires every step.
"""
from __future__ import annotations

import json

import numpy as np

from .placement import CoreCosts, Placement, slot_coords

CORE_FIELDS = ["core", "chip", "x", "y", "slot", "layers", "units", "synapses", "memory_bytes", "memory_limit_bytes",
               "input_axons", "output_axons", "macs_static", "macs_measured", "spikes_in", "spikes_out",
               "spike_hops_out", "energy_pj"]
SUM_FIELDS = ["units", "synapses", "memory_bytes", "macs_static", "macs_measured", "spikes_in", "spikes_out",
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
            "macs_measured": (costs.mac_events[c] / tokens) if costs.mac_events is not None and tokens else None,
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
        t["macs_measured"] = t["mac_events_total"] / tokens
    phases = costs.busy_ns.max(axis=1)
    t["latency_ns"] = float(phases.sum() + len(phases) * profile.energy.barrier_ns)
    t["layer_phase_ns"] = [float(p) for p in phases]
    t["cores_used"] = len(rows)
    t["max_core_macs"] = max((r["macs_measured"] if r["macs_measured"] is not None else r["macs_static"])
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
    if m["weights"]["bits"] == 8:
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
    key = "macs_measured" if m["calibrated"] else "macs_static"
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
        lines.append(f"count-macs dynamic MACs/token: {m['count_macs']['dynamic']:,.3f} (= sum of per-core macs_measured)")
    if m.get("dense_reference"):
        d = m["dense_reference"]
        lines.append(f"the same model unpruned would need {d['chips']} chip(s) "
                     f"({d['memory_bytes'] / 2**20:.1f} MiB synaptic memory)")
    return "\n".join(lines) + "\n"


def core_detail(m: dict, core: int) -> str:
    rows = [c for c in m["cores"] if c["core"] == core]
    if not rows:
        from ...errors import EgruError
        raise EgruError(f"no core {core} in this mapping (cores 0..{len(m['cores']) - 1})")
    c = rows[0]
    return "".join(f"{k:<20} {c[k]}\n" for k in CORE_FIELDS + ["mac_events_total"] if k in c)


def plot_mapping(m: dict, costs: CoreCosts, pl: Placement, profile, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    g = profile.chip
    chips = m["chips"]
    key = "macs_measured" if m["calibrated"] else "macs_static"
    grid = np.full((g.tiles_y * 2, chips * g.tiles_x * 2), np.nan)
    pos = {}
    for c in m["cores"]:
        k = c["slot"] % g.cores_per_tile
        gx = (c["chip"] * g.tiles_x + c["x"]) * 2 + k % 2
        gy = c["y"] * 2 + k // 2
        grid[gy, gx] = c[key]
        pos[c["core"]] = (gx, gy)
    fig, ax = plt.subplots(figsize=(max(7.5, chips * 6), 4.8))
    im = ax.imshow(grid, cmap="viridis", origin="lower")
    fig.colorbar(im, ax=ax, label=f"{key} per token")
    tr = costs.traffic + costs.traffic.T
    np.fill_diagonal(tr, 0)
    if tr.max() > 0:
        thr = np.quantile(tr[tr > 0], 0.9)
        for a, b in zip(*np.nonzero(np.triu(tr) >= thr)):
            (x0, y0), (x1, y1) = pos[a], pos[b]
            ax.plot([x0, x1], [y0, y1], color="white", alpha=min(0.8, 0.15 + tr[a, b] / tr.max()), lw=0.7)
    for k in range(1, chips):
        ax.axvline(k * g.tiles_x * 2 - 0.5, color="red", lw=1.5)
    ax.set_xticks(np.arange(-0.5, chips * g.tiles_x * 2, 2), minor=False)
    ax.set_yticks(np.arange(-0.5, g.tiles_y * 2, 2))
    ax.grid(color="grey", lw=0.5)
    ax.set_xticklabels([])
    ax.set_yticklabels([])
    ax.set_title(f"{profile.name}, {chips} chip(s): MACs per core (2x2 cores per tile)\n"
                 f"lines: top-10% inter-core spike traffic; {m['traffic']['spike_hops_per_token']:,.0f} "
                 f"spike-hops/token", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
