"""Totals of the whole chip configuration: the RNN cores plus, with ``--decoder chip``, the decoder cores (and,
for EvNN's projection decoder on a graded-spike profile, the projection cores before them) and the messages
that feed them (the `placement.evaluate` cost model, applied to these cores exactly as the simulator charges
them: one synop per non-zero weight whose input sent a message, one update per output and token — active for
a decoder output, active for a projection output that sent its graded message —, one message per sending
input and destination core it reaches).

Each stage (`stage_costs`) is a set of one-compartment outputs fed by inputs that sit on other cores: the
projection stage's inputs are the last layer's units (on RNN cores), the decoder stage's inputs are the
last layer's units or, with projection cores, the projection outputs. Input rates come from calibration
(count-macs' unit activity for RNN units; the simulator's count of sent projection outputs on the same
calibration tokens, since count-macs measures RNN units only); uncalibrated, every input sends every token.

mapping.json ``totals`` is this whole configuration; with the decoder on chip ``rnn_totals`` holds the RNN cores
alone (what the sequential baseline is compared with).
"""
from __future__ import annotations

import numpy as np

from .costs import CostModel

#: total fields added up over RNN and decoder cores
WHOLE_SUM = ("units", "synapses", "memory_bytes", "synops_static", "synops_estimated", "messages_in", "messages_out",
             "hops_out", "energy_pj")


def stage_costs(fan: np.ndarray, local: np.ndarray, k: int, src: np.ndarray, n_src: int, src_slots: np.ndarray,
                dst_slots: np.ndarray, rate_in: np.ndarray, rate_out: np.ndarray | None, profile) -> dict:
    """Per-token estimate of one stage: `fan` [outputs, inputs] synapses, `local` [outputs] its core 0..k-1,
    `src` [inputs] the sending core (0..n_src-1) of each input, `src_slots` [inputs] its slot, `dst_slots` [k];
    `rate_in` messages per token of each input, `rate_out` (None: every output active) active outputs."""
    cost = CostModel(profile)
    reach = np.zeros((fan.shape[1], k), bool)                           # does input i reach stage core j
    for j in range(k):
        reach[:, j] = fan[local == j].any(0)
    core_synops = np.bincount(local, weights=fan.astype(np.float64) @ rate_in, minlength=k)
    outputs = np.bincount(local, minlength=k).astype(np.float64)
    active = outputs if rate_out is None else np.bincount(local, weights=rate_out, minlength=k)
    core_pj, core_ns = cost.compute(core_synops, active, outputs - active)
    hops, pj, ns = cost.between(src_slots, dst_slots)
    w = reach * rate_in[:, None]                                        # messages/token input i -> core j
    per_src = lambda v: np.bincount(src, weights=v, minlength=n_src)  # noqa: E731
    return {"cores": k, "outputs": outputs, "synops": core_synops, "energy_pj": core_pj, "busy_ns": core_ns,
            "messages": float(w.sum()), "messages_in": w.sum(0), "hops": float((w * hops).sum()),
            "route_pj": float((w * pj).sum()), "send_ns": per_src((w * ns).sum(1)),
            "sent_messages": per_src(w.sum(1)), "sent_hops": per_src((w * hops).sum(1)),
            "sent_pj": per_src((w * pj).sum(1))}


def decoder_costs(weight: np.ndarray, dec, pl, profile, last_fires: np.ndarray | None, tokens: int,
                  projection: np.ndarray | None = None, proj_fires: np.ndarray | None = None) -> list[dict]:
    """The stages on chip after the RNN cores: [decoder] or [projection, decoder] (`projection` [E, h_last]
    dense, `proj_fires` [E] sent messages of each projection output on the calibration tokens)."""
    cal = last_fires is not None and tokens
    rate = last_fires / tokens if cal else np.ones(weight.shape[1] if projection is None else projection.shape[1])
    n_rnn, kp = dec.n_rnn, dec.n_proj
    src, src_slots = np.asarray(pl.core_of[-1]), dec.slot_of_core[np.asarray(pl.core_of[-1])]
    stages = []
    if dec.proj_core_of is not None:
        p_local = dec.proj_core_of - n_rnn
        p_rate = proj_fires / tokens if cal and proj_fires is not None else np.ones(projection.shape[0])
        stages.append(stage_costs(projection != 0, p_local, kp, src, n_rnn, src_slots,
                                  dec.slot_of_core[n_rnn:n_rnn + kp], rate, p_rate, profile))
        src, src_slots, rate = p_local, dec.slot_of_core[dec.proj_core_of], p_rate
    kd = len(dec.rows) - kp
    stages.append(stage_costs(weight != 0, dec.core_of - n_rnn - kp, kd, src, kp or n_rnn, src_slots,
                              dec.slot_of_core[n_rnn + kp:], rate, None, profile))
    return stages


def whole_totals(rnn_tot: dict, dec_rows: list[dict], stages: list[dict], busy_ns: np.ndarray, profile,
                 chips: int, calibrated: bool) -> dict:
    """RNN totals + the stages' cores (rows updated in place with their estimated synops, energy and
    messages). A stage's messages are charged to its senders: the first stage's to the RNN cores (totals
    only, in the last layer's phase), the decoder stage's after projection cores to those cores' rows."""
    i = 0
    for s, nxt in zip(stages, stages[1:] + [None]):
        rows = dec_rows[i:i + s["cores"]]
        i += s["cores"]
        for j, r in enumerate(rows):
            r.setdefault("units", r["outputs"])
            r["synops_static"] = r["synapses"]
            r["synops_estimated"] = float(s["synops"][j]) if calibrated else None
            r["messages_in"] = float(s["messages_in"][j])
            out = (0.0, 0.0, 0.0) if nxt is None else (nxt["sent_messages"][j], nxt["sent_hops"][j], nxt["sent_pj"][j])
            r["messages_out"], r["hops_out"] = float(out[0]), float(out[1])
            r["energy_pj"] = round(float(s["energy_pj"][j] + out[2]), 2)
        if nxt is not None:
            s["busy_ns"] = s["busy_ns"] + nxt["send_ns"]
    t = dict(rnn_tot)
    for f in WHOLE_SUM:
        if t.get(f) is None:
            continue
        add = [r.get(f) for r in dec_rows]
        if any(a is None for a in add):
            t[f] = None
            continue
        t[f] = t[f] + sum(add)
    first = stages[0]
    t["messages_out"] = (t["messages_out"] or 0.0) + first["messages"]
    t["hops_out"] = (t["hops_out"] or 0.0) + first["hops"]
    t["energy_pj"] = (t["energy_pj"] or 0.0) + first["route_pj"]
    t.pop("synop_events_total", None)
    phases = busy_ns.max(axis=1)
    last = busy_ns[-1].copy()
    last[:len(first["send_ns"])] += first["send_ns"]
    phases = np.r_[phases[:-1], last.max(), [s["busy_ns"].max() if len(s["busy_ns"]) else 0.0 for s in stages]]
    phases = phases + profile.energy.barrier_ns                      # each with its barrier, as the simulator's
    t["latency_ns"] = float(phases.sum())
    t["layer_phase_ns"] = [float(p) for p in phases]
    t["latency_phase_model_ns"] = None          # the phase model covers RNN phases only (rnn_totals has it)
    n_extra = sum(s["cores"] for s in stages)
    t["cores_used"] = rnn_tot["cores_used"] + n_extra
    dec_max = max((r["synops_estimated"] if calibrated else r["synops_static"]) for r in dec_rows) if dec_rows else 0
    t["max_core_synops"] = max(rnn_tot["max_core_synops"], dec_max)
    t["chips"] = chips
    t["energy_uj"] = t["energy_pj"] / 1e6
    what = " + ".join(f"{s['cores']} {n} cores" for s, n in zip(stages, (["projection"] if len(stages) > 1 else [])
                                                                     + ["decoder"]))
    t["scope"] = f"whole configuration: {rnn_tot['cores_used']} RNN + {what}"
    return t
