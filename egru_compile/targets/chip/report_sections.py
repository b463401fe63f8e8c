"""Sections of the chip report (`report.text_report`, `report.chip_summary`): the synaptic-memory bound and the
layout search's end, the decoder's placement (host or cores) and EvNN's projection (host, or graded-event cores)."""
from __future__ import annotations


def _bound_lines(m: dict) -> list[str]:
    """The synaptic-memory bound (`capacity.memory_bound`) and the layout search's end (`layout.layout_summary`)."""
    c = m.get("comparison") or {}
    out = []
    if c.get("memory_bound"):
        b, n = c["memory_bound"], len(m["cores"])
        out.append(f"synaptic-memory bound: {b['cores']:,} cores (the RNN's synapses and unit state, "
                   f"{b['bytes'] / 2**20:.2f} MiB, at {b['core_bytes'] / 1024:g} KiB per core; axon pointers "
                   f"excluded); this mapping: {n:,} RNN cores = {n / b['cores']:.2f}x the bound")
    if c.get("layout"):
        out.append(c["layout"])
    return out


def decoder_lines(m: dict) -> list[str]:
    d = m.get("decoder") or {}
    if d.get("placement") == "chip":
        cs = d["cores"]
        out = [f"decoder: on chip ({d['why']}): {len(cs)} cores, "
               f"{sum(c['synapses'] for c in cs):,} synapses, {sum(c['memory_bytes'] for c in cs) / 2**20:.2f} MiB; "
               f"{m['chips']} chip(s) in all"]
        return out + (projection_lines(d["projection"]) if d.get("projection") else [])
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


def projection_lines(p: dict) -> list[str]:
    """The projection cores' lines (graded events): cores, activation, payload, and when simulated the graded
    messages sent and the calibration perplexity of the quantised payload vs the float32 projection output."""
    act = "relu(P · y + p), EvNN 2023" if p["activation"] == "relu" else "P · y + p, EvNN >= 0.2.0"
    out = [f"projection: on chip ({act}): {p['cores']} cores, {p['outputs']} outputs, {p['synapses']:,} synapses; "
           f"each output sends a graded message ({p['payload']}; {p['flits_per_message']} flits)"]
    s = p.get("simulated")
    if s:
        line = (f"projection on the calibration tokens: {s['messages_sent']:,.1f} of {p['outputs']} outputs sent "
                f"per token, {s['saturated']} saturated payloads")
        if s.get("calib_ppl_float") is not None:
            ch = 100 * s["ppl_rel_change"]
            line += (f"; calibration PPL {s['calib_ppl_float']:.4f} (float32 payload, as the host) -> "
                     f"{s['calib_ppl_chip']:.4f} ({p['payload_bits']}-bit payload), change "
                     + (f"{ch:+.1e} %" if abs(ch) < 1e-4 else f"{ch:+.4f} %"))
        out.append(line)
    return out


def _projection_words(h: dict) -> str:
    """How the host's decoder reads the projection's output (activation absent: an artifact from before it
    was recorded, which applied relu)."""
    if h.get("projection_activation", "relu") == "relu":
        return "activation relu (EvNN 2023): the decoder skips its zeros"
    return "activation identity (EvNN >= 0.2.0): graded, signed output, the decoder reads it dense"
