"""`egru-compile inspect DIR --core N | --links`: one core's figures and units, the busiest mesh links."""
from __future__ import annotations

import numpy as np

from .assumptions import footnote, mark
from .report import CORE_FIELDS, check_version



def _value(v) -> str:
    """A field as a reader wants it: thousands separators, floats to 0.1 (small ones to 4 significant digits)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"

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
    check_version(m)
    rows = [c for c in m["cores"] if c["core"] == core]
    dec = [c for c in (m.get("decoder") or {}).get("cores", []) if c["core"] == core]
    if not rows and not dec:
        n = len(m["cores"]) + len((m.get("decoder") or {}).get("cores", []))
        raise EgruError(f"no core {core} in this mapping (cores 0..{n - 1})")
    c = rows[0] if rows else dec[0]
    fl = (m.get("assumptions") or {}).get("figures")
    flag = {"memory_bytes": "memory_bytes", "memory_limit_bytes": "limits", "energy_pj": "energy_pj",
            "hops_out": "hops"}
    text = "".join(f"{k:<20} {_value(c[k])}{mark(fl, flag.get(k, ''))}\n"
                   for k in CORE_FIELDS + ["synop_events_total", "role", "outputs"] if k in c)
    sim = (m.get("simulated") or {}).get("cores")
    if sim and core < len(sim):
        text += "simulated (calibration tokens, per token): " + ", ".join(
            f"{k} {sim[core][k]:,.1f}{mark(fl, flag.get(k, ''))}" for k in (
                "synops", "decoder_synops", "spikes_out", "messages_out", "messages_in", "hops_out",
                "energy_pj")) + "\n"
    if program is None:
        return text + "".join(x + "\n" for x in footnote(fl, m["profile"]["name"]))
    stack, pl, dec_core_of = program
    L = len(stack.layers)
    for l in range(L):
        u = np.nonzero(pl.core_of[l] == core)[0]
        if len(u):
            text += f"units         layer {l}: {len(u)} [{_ranges(u)}]\n"
    if dec_core_of is not None and np.any(dec_core_of == core):
        u = np.nonzero(dec_core_of == core)[0]
        text += f"units         decoder outputs: {len(u)} [{_ranges(u)}]\n"
    pc = getattr(pl, "projection_core_of", None)
    if pc is not None and np.any(pc == core):
        u = np.nonzero(pc == core)[0]
        text += f"units         projection outputs: {len(u)} [{_ranges(u)}]\n"
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
    # decoder-side cores: (synapses [outputs, inputs], output -> core, input -> core)
    stages = [] if dec_core_of is None else [(stack.decoder_weight != 0, dec_core_of, pl.core_of[-1])]
    if dec_core_of is not None and pc is not None:          # graded projection cores before the decoder
        stages = [(stack.projection.to_dense() != 0, pc, pl.core_of[-1]), (stages[0][0], dec_core_of, pc)]
    for g, tgt, src in stages:
        here = g[tgt == core].any(0)
        for s_core in src[here]:
            srcs[int(s_core)] = srcs.get(int(s_core), 0) + 1
        mine = src == core
        if mine.any():
            dests.update(int(x) for x in np.unique(tgt[g[:, mine].any(1)]))
    text += "input axons   " + (", ".join(("embedding" if s < 0 else f"core {s}") + f": {k}"
                                          for s, k in sorted(srcs.items())) or "-") + "\n"
    text += "destinations  " + (", ".join(f"core {d}" for d in sorted(dests)) or "- (host)") + "\n"
    return text + "".join(x + "\n" for x in footnote(fl, m["profile"]["name"]))


def links_detail(m: dict, top: int = 20) -> str:
    """`inspect DIR --links`: the busiest mesh links in the compile's simulation of the calibration tokens."""
    s = m.get("simulated")
    if not s:
        return "links: no simulation in this mapping (compile with --calib-data to simulate the calibration text)\n"
    ls = s["links"]
    if not ls:
        return (f"links: none used ({s['router']} router, {s['tokens']} calibration tokens): every message stays "
                "on its sender's tile\n")
    lines = [f"busiest links ({len(ls)} used; {s['router']} router; messages per token over {s['tokens']} "
             "calibration tokens; tile coordinates (x, y), chips side by side along x):"]
    for r in ls[:top]:
        lines.append(f"  ({r['from'][0]},{r['from'][1]}) -> ({r['to'][0]},{r['to'][1]})  {r['kind']:<4} "
                     f"{r['messages']:,.2f}")
    return "\n".join(lines) + "\n"
