"""`mapping.png`: the placed cores on the chip mesh, coloured by synops per token (scale from 0).

Every core is one cell (the cores of a tile as a small square block), numbered with its mapping.json core
number while the cells are large enough to read (up to `MAX_NUMBERED` cores; beyond, each chip is labelled).
Chips are outlined in red and, when there are many, wrapped into rows of chips so that 8,000 cores stay
legible; axes give tile coordinates within a chip. Mesh links are drawn as lines whose width grows with their
messages per token (simulated; else the estimate's busiest core pairs). Cores that are not plain RNN cores are
marked, with a legend: decoder cores (``--decoder chip``) hatched in magenta, the partial-sum cores of a fan-in
split (a remote source range of a split layer, `split.py`) hatched in cyan (`core_roles`).
"""
from __future__ import annotations

import math

import numpy as np

from .placement import slot_coords

#: most lines drawn (the busiest links / core pairs), so 8,000 cores stay drawable
MAX_DRAWN_LINES = 400
#: cells get their core number up to this many cores
MAX_NUMBERED = 256
#: role -> (mark colour, hatch, legend text) of the cores `core_roles` marks (colours outside viridis and the
#: red chip outline / orange links, so the marks read at any scale)
ROLE_MARKS = {
    "decoder": ("#ff00ff", "//", "decoder core (--decoder chip)"),
    "projection": ("#ff00ff", "xx", "projection core (EvNN's P·y + p, --decoder chip on graded spikes)"),
    "split part": ("#00ffff", "\\\\", "fan-in split part (a remote source range: sends partial sums to the "
                   "units' home cores)"),
}


def mesh_layout(profile, chips: int) -> dict:
    """Display geometry shared by the PNG and the HTML view: cells per tile side, chips per display row."""
    g = profile.chip
    side = max(1, math.ceil(math.sqrt(g.cores_per_tile)))
    cw, ch = g.tiles_x * side, g.tiles_y * side                  # one chip in cells
    per_row = chips if chips <= 4 else max(1, round(math.sqrt(chips * ch / cw * 1.6)))
    return {"side": side, "chip_w": cw, "chip_h": ch, "per_row": per_row, "gap": 1,
            "rows": math.ceil(chips / per_row)}


def cell_of(profile, lay: dict, chip: int, tile_x: int, tile_y: int, k: int) -> tuple[int, int]:
    """(column, row) of the display cell of the k-th core of tile (tile_x, tile_y) (within-chip coords)."""
    s = lay["side"]
    col0 = (chip % lay["per_row"]) * (lay["chip_w"] + lay["gap"])
    row0 = (chip // lay["per_row"]) * (lay["chip_h"] + lay["gap"])
    return col0 + tile_x * s + k % s, row0 + tile_y * s + k // s


def core_cells(m: dict, profile) -> list[tuple[dict, int, int, int, int]]:
    """(row of mapping.json, column, row, tile x, tile y) for every core (RNN cores, then decoder cores);
    tile coordinates within the core's chip."""
    g = profile.chip
    lay = mesh_layout(profile, m["chips"])
    rows = list(m["cores"]) + list((m.get("decoder") or {}).get("cores", []))
    gslot = np.array([r["chip"] * g.cores + r["slot"] if "chip" in r else r["slot"] for r in rows], np.int64)
    chip, gx, gy = slot_coords(profile, gslot)
    out = []
    for r, s, c, x, y in zip(rows, gslot, chip, gx, gy):
        tx = int(x - c * g.tiles_x)
        col, row = cell_of(profile, lay, int(c), tx, int(y), int(s % g.cores_per_tile))
        out.append((r, col, row, tx, int(y)))
    return out


def core_roles(m: dict) -> dict[int, dict]:
    """core number -> {"role": "rnn" | "decoder" | "projection" | "split part"} and, for the cores of a fan-in split layer,
    "split": {"layer", "range", "ranges", "sources": [first, end)} (range 0 = the units' home cores, whose
    role stays "rnn"; a core of a remote range is a "split part"), from mapping.json's ``decoder`` and ``split``."""
    roles = {r["core"]: {"role": "rnn"} for r in m["cores"]}
    for r in (m.get("decoder") or {}).get("cores", []):
        roles[r["core"]] = {"role": r.get("role", "decoder")}          # "decoder" or (EvNN's) "projection"
    for sl in (m.get("split") or {}).get("layers", []):
        ranges = sl.get("cores_of_range") or []
        for p, cores in reversed(list(enumerate(ranges))):        # a core in several ranges: its lowest range
            for k in cores:
                roles[k] = {"role": "split part" if p else roles.get(k, {}).get("role", "rnn"),
                            "split": {"layer": sl["layer"], "range": p, "ranges": len(ranges),
                                      "sources": list(sl["source_ranges"][p])}}
    return roles


def core_synops(m: dict, r: dict) -> float:
    """Synops per token of a core: simulated when the compile simulated the calibration text, else estimated
    (uncalibrated: every synapse once)."""
    sim = m.get("simulated")
    if sim:
        sc = sim["cores"][r["core"]]
        return float(sc["synops"])                 # the core's whole (decoder_synops is part of it)
    v = r.get("synops_estimated")
    return float(v if v is not None else r.get("synops_static", r.get("synapses", 0)))


def plot_mapping(m: dict, costs, profile, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle
    g = profile.chip
    chips = m["chips"]
    lay = mesh_layout(profile, chips)
    s, cw, chh, gap = lay["side"], lay["chip_w"], lay["chip_h"], lay["gap"]
    W = lay["per_row"] * (cw + gap) - gap
    H = lay["rows"] * (chh + gap) - gap
    grid = np.full((H, W), np.nan)
    cells = core_cells(m, profile)
    pos = {}
    for r, col, row, _, _ in cells:
        grid[row, col] = core_synops(m, r)
        pos[r["core"]] = (col, row)
    n = len(cells)
    width = min(24.0, max(7.0, 1.5 + W * 0.28))
    height = min(24.0, max(3.8, 1.6 + H * 0.28 * width / max(1.5 + W * 0.28, 1e-9)))
    fig, ax = plt.subplots(figsize=(width, height))
    vmax = max(float(np.nanmax(grid)) if n else 0.0, 1e-9)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")
    im = ax.imshow(grid, cmap=cmap, origin="lower", vmin=0.0, vmax=vmax, interpolation="nearest")
    sim = m.get("simulated")
    calibrated = bool(m.get("calibrated"))
    fig.colorbar(im, ax=ax, label="synops per token " + ("(simulated)" if sim else "(estimated)" if calibrated
                                                         else "(UNCALIBRATED bound)"),
                 fraction=0.04, pad=0.02, shrink=0.8)
    # chip outlines (red) and names
    for c in range(chips):
        col0, row0 = cell_of(profile, lay, c, 0, 0, 0)
        ax.add_patch(Rectangle((col0 - 0.5, row0 - 0.5), cw, chh, fill=False, edgecolor="red", lw=2, zorder=4))
        if chips > 1:
            ax.text(col0 - 0.4, row0 + chh - 0.6, f"chip {c}", color="red", fontsize=8 if chips < 64 else 7,
                    va="top", ha="left", zorder=8, bbox=dict(facecolor="white", alpha=0.85, pad=0.6, lw=0))
    # tile grid inside each chip
    if chips <= 64:
        for c in range(chips):
            col0, row0 = cell_of(profile, lay, c, 0, 0, 0)
            for tx in range(1, g.tiles_x):
                ax.plot([col0 + tx * s - 0.5] * 2, [row0 - 0.5, row0 + chh - 0.5], color="grey", lw=0.4, zorder=3)
            for ty in range(1, g.tiles_y):
                ax.plot([col0 - 0.5, col0 + cw - 0.5], [row0 + ty * s - 0.5] * 2, color="grey", lw=0.4, zorder=3)
    if n <= MAX_NUMBERED:
        fs = 9 if n <= 16 else (7 if n <= 64 else 5)
        for r, col, row, _, _ in cells:
            v = grid[row, col]
            dark = v < 0.6 * vmax       # a thin outline keeps the number legible where a link line crosses it
            ax.text(col, row, str(r["core"]), ha="center", va="center", fontsize=fs, zorder=6,
                    color="white" if dark else "black",
                    path_effects=[patheffects.withStroke(linewidth=2, foreground="black" if dark else "white")])
    marked = _mark_roles(ax, m, pos, n)
    what = _draw_links(ax, m, costs, profile, lay, pos, LineCollection)
    # axes: tile coordinates within a chip (chip 0's row of chips)
    step = 1 if g.tiles_x * lay["per_row"] <= 32 else max(1, g.tiles_x // 2)
    xt = [cell_of(profile, lay, c, tx, 0, 0)[0] + (s - 1) / 2 for c in range(min(chips, lay["per_row"]))
          for tx in range(0, g.tiles_x, step)]
    ax.set_xticks(xt)
    ax.set_xticklabels([str(tx) for c in range(min(chips, lay["per_row"])) for tx in range(0, g.tiles_x, step)],
                       fontsize=7)
    yt = [cell_of(profile, lay, 0, 0, ty, 0)[1] + (s - 1) / 2 for ty in range(g.tiles_y)]
    ax.set_yticks(yt)
    ax.set_yticklabels([str(ty) for ty in range(g.tiles_y)], fontsize=7)
    ax.set_xlabel(f"tile x within a chip ({g.cores_per_tile} cores per tile, {s}x{s} cells"
                  + (f"; chips wrapped {lay['per_row']} per row" if lay["rows"] > 1 else "") + ")")
    ax.set_ylabel("tile y" + (" (chip rows: chip 0 at bottom left)" if lay["rows"] > 1 else ""))
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(-0.5, H - 0.5)
    t = m["totals"]
    ax.set_title(f"{profile.name}: {n} cores on {chips} chip(s) (red: chip boundary)"
                 + ("; cell text = core number" if n <= MAX_NUMBERED else "") + f"\n{what}\n"
                 f"{t.get('messages_out') or 0:,.0f} messages/token, {t.get('hops_out') or 0:,.0f} hops/token "
                 + ("(estimated, whole configuration)" if calibrated else
                    "(whole configuration)\nUNCALIBRATED upper bound (every unit fires every token); "
                    "--calib-data gives real activity"),
                 fontsize=8 if width < 12 else 13)
    if marked:
        ax.legend(handles=marked, loc="upper center", bbox_to_anchor=(0.5, -0.16 if width < 12 else -0.11),
                  ncol=1 if width < 12 else len(marked), fontsize=8 if width < 12 else 11, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight" if marked else None)
    plt.close(fig)


def _mark_roles(ax, m: dict, pos: dict, n: int) -> list:
    """Hatch and outline the decoder and split-part cores (`ROLE_MARKS`); returns the legend handles."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle
    by_role: dict[str, list] = {}
    for core, info in core_roles(m).items():
        if info["role"] in ROLE_MARKS and core in pos:
            by_role.setdefault(info["role"], []).append(pos[core])
    handles = []
    lw = 1.6 if n <= 64 else (0.9 if n <= 1024 else 0.5)
    for role, cells in by_role.items():
        colour, hatch, label = ROLE_MARKS[role]
        if n > 1024:
            hatch = hatch[: len(hatch) // 2]                         # sparser hatch on small cells
        rects = [Rectangle((c - 0.42, r - 0.42), 0.84, 0.84) for c, r in cells]
        ax.add_collection(PatchCollection(rects, facecolor="none", edgecolor=colour, hatch=hatch, linewidth=lw,
                                          zorder=5))
        handles.append(Patch(facecolor="#bbbbbb", edgecolor=colour, hatch=hatch, linewidth=1.5,
                             label=f"{label}: {len(cells):,}"))
    return handles


def _draw_links(ax, m, costs, profile, lay, pos, LineCollection) -> str:
    g = profile.chip
    s = lay["side"]
    sim = m.get("simulated")
    if sim and not sim["links"]:
        return "no mesh link carries messages (simulated)"
    if sim:
        links = sorted(sim["links"], key=lambda l: -l["messages"])[:MAX_DRAWN_LINES]
        top = max(l["messages"] for l in links)
        segs, widths = [], []
        for l in links:
            ends = []
            for x, y in (l["from"], l["to"]):
                c = x // g.tiles_x
                col, row = cell_of(profile, lay, c, x - c * g.tiles_x, y, 0)
                ends.append((col + (s - 1) / 2, row + (s - 1) / 2))
            (x0, y0), (x1, y1) = ends
            if abs(y1 - y0) > s or abs(x1 - x0) > 2 * s:       # chip-to-chip link across wrapped rows
                continue
            off = 0.12 * (1 if (x1 - x0) + (y1 - y0) > 0 else -1)      # the two directions side by side
            segs.append([(x0 + off * (y1 != y0), y0 + off * (x1 != x0)), (x1 + off * (y1 != y0), y1 + off * (x1 != x0))])
            widths.append(0.5 + 3.5 * l["messages"] / top)
        ax.add_collection(LineCollection(segs, colors="#ff8c00", linewidths=widths, alpha=0.85, capstyle="butt",
                                         zorder=7))
        return f"orange lines: mesh links, width by messages/token (busiest {top:,.1f}, simulated)"
    if costs is None or costs.traffic is None:
        return "no link loads"
    tr = costs.traffic + costs.traffic.T
    np.fill_diagonal(tr, 0)
    if tr.max() <= 0:
        return "no message leaves a core"
    a_idx, b_idx = np.nonzero(np.triu(tr))
    vals = tr[a_idx, b_idx]
    keep = np.argsort(-vals, kind="stable")[:MAX_DRAWN_LINES]
    segs, widths = [], []
    for a, b, v in zip(a_idx[keep], b_idx[keep], vals[keep]):
        if a in pos and b in pos:
            segs.append([pos[a], pos[b]])
            widths.append(0.4 + 2.0 * v / tr.max())
    ax.add_collection(LineCollection(segs, colors="white", linewidths=widths, alpha=0.7, zorder=5))
    k = min(len(vals), MAX_DRAWN_LINES)
    return f"white lines: the {k} busiest core pair{'s' if k != 1 else ''}, width by messages/token (estimated)"
