"""Totals of the whole chip configuration: the RNN cores plus, with ``--decoder chip``, the decoder cores and the
last layer's spikes sent to them (the `placement.evaluate` cost model, applied to the decoder cores exactly as
the simulator charges them: one synop per non-zero decoder weight whose input unit fired, one active update per
output and token, one message per spiking last-layer unit and decoder core it reaches).

mapping.json ``totals`` is this whole configuration; with the decoder on chip ``rnn_totals`` holds the RNN cores
alone (what the sequential baseline is compared with).
"""
from __future__ import annotations

import numpy as np

from .costs import CostModel

#: total fields added up over RNN and decoder cores
WHOLE_SUM = ("units", "synapses", "memory_bytes", "synops_static", "synops_estimated", "messages_in", "messages_out",
             "hops_out", "energy_pj")


def decoder_costs(weight: np.ndarray, dec, pl, profile, last_fires: np.ndarray | None, tokens: int) -> dict:
    """Per-token estimate of what the decoder on chip adds: per decoder core synops, energy and phase time;
    the messages, hops, energy and route time of the last layer's spikes to the decoder cores (charged to the
    sending RNN cores, in the last layer's phase as the simulator does)."""
    fan = weight != 0                                                   # [V, E]
    E = fan.shape[1]
    rate = last_fires / tokens if last_fires is not None and tokens else np.ones(E)
    n_rnn, k = dec.n_rnn, len(dec.rows)
    local = dec.core_of - n_rnn                                         # [V] decoder core 0..k-1
    reach = np.zeros((E, k), bool)                                      # does unit e reach decoder core j
    for j in range(k):
        reach[:, j] = fan[local == j].any(0)
    synops = (fan.astype(np.float64) @ rate)                            # per output: expected synops/token
    core_synops = np.bincount(local, weights=synops, minlength=k)
    outputs = np.bincount(local, minlength=k).astype(np.float64)
    core_pj, core_ns = CostModel(profile).compute(core_synops, outputs, 0.0)
    src_core = np.asarray(pl.core_of[-1])                              # RNN core of each last-layer unit
    hops, pj, ns = CostModel(profile).between(dec.slot_of_core[src_core], dec.slot_of_core[n_rnn:])
    w = reach * rate[:, None]                                           # messages/token unit e -> decoder core j
    send_ns = np.bincount(src_core, weights=(w * ns).sum(1), minlength=n_rnn)
    return {"cores": k, "outputs": outputs, "synops": core_synops, "energy_pj": core_pj, "busy_ns": core_ns,
            "messages": float(w.sum()), "messages_in": w.sum(0), "hops": float((w * hops).sum()),
            "route_pj": float((w * pj).sum()), "send_ns": send_ns}


def whole_totals(rnn_tot: dict, dec_rows: list[dict], extra: dict, busy_ns: np.ndarray, profile, chips: int,
                 calibrated: bool) -> dict:
    """RNN totals + decoder cores (rows updated in place with their estimated energy and messages in)."""
    for r, s, pj, mi in zip(dec_rows, extra["synops"], extra["energy_pj"], extra["messages_in"]):
        r.setdefault("units", r["outputs"])
        r["synops_static"] = r["synapses"]
        r["synops_estimated"] = float(s) if calibrated else None
        r["messages_in"], r["messages_out"], r["hops_out"] = float(mi), 0.0, 0.0
        r["energy_pj"] = round(float(pj), 2)
    t = dict(rnn_tot)
    for f in WHOLE_SUM:
        if t.get(f) is None:
            continue
        add = [r.get(f) for r in dec_rows]
        if any(a is None for a in add):
            t[f] = None
            continue
        t[f] = t[f] + sum(add)
    t["messages_out"] = (t["messages_out"] or 0.0) + extra["messages"]
    t["hops_out"] = (t["hops_out"] or 0.0) + extra["hops"]
    t["energy_pj"] = (t["energy_pj"] or 0.0) + extra["route_pj"]
    t.pop("synop_events_total", None)
    phases = busy_ns.max(axis=1)
    last = busy_ns[-1].copy()
    last[:len(extra["send_ns"])] += extra["send_ns"]
    phases = np.r_[phases[:-1], last.max(), extra["busy_ns"].max() if len(extra["busy_ns"]) else 0.0]
    t["latency_ns"] = float(phases.sum() + len(phases) * profile.energy.barrier_ns)
    t["layer_phase_ns"] = [float(p) for p in phases]
    t["cores_used"] = rnn_tot["cores_used"] + extra["cores"]
    dec_max = max((r["synops_estimated"] if calibrated else r["synops_static"]) for r in dec_rows) if dec_rows else 0
    t["max_core_synops"] = max(rnn_tot["max_core_synops"], dec_max)
    t["chips"] = chips
    t["energy_uj"] = t["energy_pj"] / 1e6
    t["scope"] = f"whole configuration: {rnn_tot['cores_used']} RNN + {extra['cores']} decoder cores"
    return t
