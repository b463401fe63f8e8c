"""`mapping.html`: the placed cores on the chip mesh as one self-contained page (inline SVG, CSS and JS; no
network, no server — it opens from the artifact folder).

Each core is one ``<rect data-core="N">`` (N: the core number of mapping.json), coloured by synops, energy or
synaptic-memory use per token (selectable; scale from 0). Hovering a core shows its figures, a click pins them:
layers, units, synapses, limits used (compartments, synaptic memory, input and output axons), messages in and
out, hops and energy (estimated; simulated beside when the compile simulated the calibration text). Mesh links
carry their messages per token (simulated) as line widths; chips are outlined in red. Decoder cores (dashed
magenta outline) and the partial-sum cores of a fan-in split (cyan outline) are marked as in mapping.png
(`mapping_png.core_roles`; the rect's ``data-role`` says "rnn", "decoder" or "split part", the figures name a
split core's layer and source range). The mouse wheel zooms around the pointer, dragging pans (or the
buttons), so thousands of cores stay usable. The cell layout is the one of mapping.png
(`mapping_png.core_cells`).
"""
from __future__ import annotations

import html
import json

from .mapping_png import MAX_DRAWN_LINES, ROLE_MARKS, cell_of, core_cells, core_roles, core_synops, mesh_layout

#: links drawn in the page (the busiest); the PNG draws fewer
MAX_HTML_LINKS = max(MAX_DRAWN_LINES, 4000)

_CSS = """
body{font:13px/1.35 system-ui,sans-serif;margin:0;display:flex;height:100vh;color:#222}
#main{flex:1;display:flex;flex-direction:column;min-width:0}
#bar{padding:6px 10px;border-bottom:1px solid #ccc;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
#mesh{flex:1;width:100%;background:#fafafa;cursor:grab}
#side{width:330px;border-left:1px solid #ccc;padding:8px 10px;overflow:auto}
rect.core{stroke:#555;stroke-width:.03}
rect.core.dec{stroke:#f0f;stroke-width:.09;stroke-dasharray:.22 .1}
rect.core.part{stroke:#0ff;stroke-width:.07}
rect.core.sel{stroke:#06f;stroke-width:.15;stroke-dasharray:none}
.mk{padding:0 4px;border:2px solid}.mk.dec{border:2px dashed #f0f}.mk.part{border-color:#0ff}
text.cnum{font-size:.32px;text-anchor:middle;fill:#fff;paint-order:stroke;stroke:#000;stroke-width:.04px;pointer-events:none}
rect.chip{fill:none;stroke:red;stroke-width:.12;pointer-events:none}
text.chiplabel{font-size:.8px;fill:red;pointer-events:none}
line.link{stroke:#ff8c00;stroke-opacity:.8;pointer-events:none}
table{border-collapse:collapse}td{padding:1px 6px 1px 0;vertical-align:top}td.v{text-align:right}
#legend{display:flex;align-items:center;gap:4px}#grad{width:160px;height:12px;border:1px solid #999}
.a{color:#b00}
"""

_JS = r"""
(function(){
const D = JSON.parse(document.getElementById('mapping-data').textContent);
const NS = 'http://www.w3.org/2000/svg', svg = document.getElementById('mesh');
const VIR = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
function colour(t){ t = Math.max(0, Math.min(1, t)); const f = t * (VIR.length - 1), i = Math.min(VIR.length - 2, Math.floor(f)),
  u = f - i, a = VIR[i], b = VIR[i + 1]; return 'rgb(' + a.map((v, k) => Math.round(v + (b[k] - v) * u)).join(',') + ')'; }
const H = D.height, W = D.width;
const gl = document.createElementNS(NS, 'g'); svg.appendChild(gl);
const rects = {};
for (const c of D.cores) {
  const r = document.createElementNS(NS, 'rect');
  r.setAttribute('x', c.col + 0.04); r.setAttribute('y', H - 1 - c.row + 0.04);
  r.setAttribute('width', 0.92); r.setAttribute('height', 0.92);
  r.setAttribute('class', 'core' + ({'decoder': ' dec', 'projection': ' dec', 'split part': ' part'}[c.role] || ''));
  r.setAttribute('data-core', c.core); r.setAttribute('data-role', c.role);
  const t = document.createElementNS(NS, 'title'); t.textContent = 'core ' + c.core; r.appendChild(t);
  gl.appendChild(r); rects[c.core] = r;
}
if (D.cores.length <= 1024) for (const c of D.cores) {       // core numbers while they are readable
  const t = document.createElementNS(NS, 'text'); t.setAttribute('class', 'cnum');
  t.setAttribute('x', c.col + 0.5); t.setAttribute('y', H - 1 - c.row + 0.62); t.textContent = c.core;
  gl.appendChild(t);
}
let lmax = 0; for (const l of D.links) lmax = Math.max(lmax, l.messages);
for (const l of D.links) {
  const e = document.createElementNS(NS, 'line');
  e.setAttribute('x1', l.x0 + 0.5); e.setAttribute('y1', H - 1 - l.y0 + 0.5);
  e.setAttribute('x2', l.x1 + 0.5); e.setAttribute('y2', H - 1 - l.y1 + 0.5);
  e.setAttribute('stroke-width', 0.04 + 0.3 * l.messages / (lmax || 1)); e.setAttribute('class', 'link');
  gl.appendChild(e);
}
for (const ch of D.chips) {
  const r = document.createElementNS(NS, 'rect');
  r.setAttribute('x', ch.col); r.setAttribute('y', H - ch.row - ch.h);
  r.setAttribute('width', ch.w); r.setAttribute('height', ch.h); r.setAttribute('class', 'chip');
  gl.appendChild(r);
  if (D.chips.length > 1) { const t = document.createElementNS(NS, 'text'); t.setAttribute('class', 'chiplabel');
    t.setAttribute('x', ch.col + 0.1); t.setAttribute('y', H - ch.row - ch.h - 0.1); t.textContent = 'chip ' + ch.chip;
    gl.appendChild(t); }
}
D.byCore = {}; for (const c of D.cores) D.byCore[c.core] = c;
const sel = document.getElementById('metric');
function recolour(){
  const k = sel.value; let mx = 0;
  for (const c of D.cores) mx = Math.max(mx, c[k] || 0);
  for (const c of D.cores) rects[c.core].setAttribute('fill', colour((c[k] || 0) / (mx || 1)));
  document.getElementById('lmin').textContent = '0';
  document.getElementById('lmax').textContent = fmt(mx) + ' ' + D.units[k];
}
const grad = document.getElementById('grad');
grad.style.background = 'linear-gradient(to right,' + [0, .25, .5, .75, 1].map(colour).join(',') + ')';
sel.addEventListener('change', recolour); recolour();
function fmt(v){ if (v === null || v === undefined) return '-'; if (typeof v !== 'number') return String(v);
  return Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : (Math.round(v * 1000) / 1000).toString(); }
const info = document.getElementById('info'); let pinned = null;
function show(n){
  const c = D.byCore[n]; const A = D.flags;
  const mark = q => (A[q] ? ' <span class="a">[A]</span>' : '');
  const row = (k, v, q) => '<tr><td>' + k + '</td><td class="v" data-field="' + k + '">' + fmt(v) + (q ? mark(q) : '') + '</td></tr>';
  let h = '<h3 id="core-title">core ' + c.core + ' (' + c.role + ')</h3><table>';
  h += row('chip', c.chip) + row('slot', c.slot) + row('tile x', c.x) + row('tile y', c.y) + row('layers', c.layers) + row('units', c.units);
  if (c.split) h += row('fan-in split', c.split);
  h += row('synapses', c.synapses) + row('memory_bytes', c.memory_bytes, 'memory_bytes');
  h += row('memory use %', c.memory_pct, 'limits') + row('compartments use %', c.compartments_pct, 'limits');
  h += row('input_axons', c.input_axons) + row('input axons use %', c.input_axons_pct, 'limits');
  h += row('output_axons', c.output_axons) + row('output axons use %', c.output_axons_pct, 'limits');
  h += row('synops/token', c.synops) + row('messages_in', c.messages_in) + row('messages_out', c.messages_out);
  h += row('hops_out', c.hops_out, 'hops') + row('energy_pj', c.energy_pj, 'energy_pj');
  if (c.sim) for (const k in c.sim) h += row('simulated ' + k, c.sim[k], k === 'energy_pj' ? 'energy_pj' : null);
  info.innerHTML = h + '</table>';
}
function pick(ev){ const n = ev.target.getAttribute && ev.target.getAttribute('data-core'); return n === null ? null : +n; }
svg.addEventListener('mouseover', ev => { const n = pick(ev); if (n !== null && pinned === null) show(n); });
svg.addEventListener('click', ev => { const n = pick(ev); if (n === null || moved) return;
  if (pinned !== null) rects[pinned].classList.remove('sel'); pinned = n; rects[n].classList.add('sel'); show(n); });
// zoom and pan on the viewBox
let vb = [-0.5, -0.5, W + 1, H + 1], drag = null, moved = false;
function setvb(){ svg.setAttribute('viewBox', vb.join(' ')); }
function zoom(f, cx, cy){ vb = [cx - (cx - vb[0]) * f, cy - (cy - vb[1]) * f, vb[2] * f, vb[3] * f]; setvb(); }
function toSvg(ev){ const r = svg.getBoundingClientRect(), s = Math.max(vb[2] / r.width, vb[3] / r.height);
  return [vb[0] + (ev.clientX - r.left) * s - (r.width * s - vb[2]) / 2, vb[1] + (ev.clientY - r.top) * s - (r.height * s - vb[3]) / 2]; }
svg.addEventListener('wheel', ev => { ev.preventDefault(); const p = toSvg(ev); zoom(ev.deltaY > 0 ? 1.25 : 0.8, p[0], p[1]); }, {passive: false});
svg.addEventListener('mousedown', ev => { drag = [ev.clientX, ev.clientY]; moved = false; });
window.addEventListener('mousemove', ev => { if (!drag) return; const r = svg.getBoundingClientRect();
  const s = Math.max(vb[2] / r.width, vb[3] / r.height), dx = ev.clientX - drag[0], dy = ev.clientY - drag[1];
  if (Math.abs(dx) + Math.abs(dy) > 3) moved = true; vb[0] -= dx * s; vb[1] -= dy * s; drag = [ev.clientX, ev.clientY]; setvb(); });
window.addEventListener('mouseup', () => { drag = null; setTimeout(() => { moved = false; }, 0); });
document.getElementById('zin').onclick = () => zoom(0.66, vb[0] + vb[2] / 2, vb[1] + vb[3] / 2);
document.getElementById('zout').onclick = () => zoom(1.5, vb[0] + vb[2] / 2, vb[1] + vb[3] / 2);
document.getElementById('zreset').onclick = () => { vb = [-0.5, -0.5, W + 1, H + 1]; setvb(); };
setvb();
window.mappingView = {show: show, data: D};
})();
"""


def page_data(m: dict, profile) -> dict:
    """What the page draws: per core its cell and figures, links in cell coordinates, chip outlines."""
    g, lim = profile.chip, profile.core
    lay = mesh_layout(profile, m["chips"])
    s = lay["side"]
    sim = m.get("simulated")
    roles = core_roles(m)
    cores = []
    for r, col, row, tx, ty in core_cells(m, profile):
        dec = "outputs" in r
        sc = sim["cores"][r["core"]] if sim else None
        role = roles.get(r["core"], {})
        kind = role.get("role", r.get("role", "decoder") if dec else "rnn")      # rnn, decoder, projection, split part
        c = {"core": r["core"], "col": col, "row": row, "role": kind,
             "chip": r.get("chip", r["slot"] // g.cores), "slot": r["slot"] % g.cores, "layers": kind if dec else r.get("layers"),
             "units": r.get("units", r.get("outputs")), "synapses": r["synapses"],
             "memory_bytes": r["memory_bytes"], "input_axons": r["input_axons"],
             "output_axons": r.get("output_axons"), "synops": core_synops(m, r),
             "messages_in": r.get("messages_in"), "messages_out": r.get("messages_out"),
             "hops_out": r.get("hops_out"), "energy_pj": sc["energy_pj"] if sc else r.get("energy_pj"),
             "memory_pct": 100.0 * r["memory_bytes"] / r["memory_limit_bytes"],
             "input_axons_pct": 100.0 * r["input_axons"] / lim.input_axons,
             "output_axons_pct": None if r.get("output_axons") is None else 100.0 * r["output_axons"] / lim.output_axons}
        units = c["units"] or 0
        c["compartments_pct"] = 100.0 * units * (1 if dec else lim.compartments_per_unit) / lim.compartments
        c["x"], c["y"] = tx, ty
        if role.get("split"):
            sp = role["split"]
            c["split"] = (f"layer {sp['layer']}, source range {sp['range']} of {sp['ranges']} (sources "
                          f"{sp['sources'][0]}-{sp['sources'][1] - 1}"
                          + ("; home: adds the partial sums)" if sp["range"] == 0 else "; sends partial sums)"))
        if sc:
            c["sim"] = {k: round(sc[k], 3) for k in ("synops", "decoder_synops", "spikes_out", "messages_out", "messages_in",
                                           "hops_out", "energy_pj")}
        cores.append({k: round(v, 3) if isinstance(v, float) else v for k, v in c.items()})
    links = []
    for l in sorted((sim or {}).get("links", []), key=lambda l: -l["messages"])[:MAX_HTML_LINKS]:
        ends = []
        for x, y in (l["from"], l["to"]):
            ch = x // g.tiles_x
            col, row = cell_of(profile, lay, ch, x - ch * g.tiles_x, y, 0)
            ends.append((col + (s - 1) / 2, row + (s - 1) / 2))
        (x0, y0), (x1, y1) = ends
        if abs(y1 - y0) <= s and abs(x1 - x0) <= 2 * s:      # not across wrapped chip rows
            links.append({"x0": x0, "y0": y0, "x1": x1, "y1": y1, "messages": l["messages"], "kind": l["kind"]})
    chips = []
    for c in range(m["chips"]):
        col, row = cell_of(profile, lay, c, 0, 0, 0)
        chips.append({"chip": c, "col": col, "row": row, "w": lay["chip_w"], "h": lay["chip_h"]})
    W = lay["per_row"] * (lay["chip_w"] + lay["gap"]) - lay["gap"]
    H = lay["rows"] * (lay["chip_h"] + lay["gap"]) - lay["gap"]
    src = "simulated" if sim else "estimated"
    return {"width": W, "height": H, "cores": cores, "links": links,
            "chips": chips, "flags": (m.get("assumptions") or {}).get("figures") or {},
            "units": {"synops": f"synops/token ({src})", "energy_pj": f"pJ/token ({src})",
                      "memory_pct": "% of synaptic memory"}}


def render(m: dict, profile) -> str:
    d = page_data(m, profile)
    t = m["totals"]
    fl = d["flags"]
    a = lambda q: ' <span class="a">[A]</span>' if q in fl else ""  # noqa: E731
    data = json.dumps(d, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")
    head = (f"{html.escape(profile.name)}: {len(d['cores'])} cores on {m['chips']} chip(s); "
            f"{t['energy_pj'] / 1e6:.4f} uJ/token{a('energy_pj')}, {t['latency_ns'] / 1e3:.2f} us/token"
            f"{a('latency_ns')} (estimated, {html.escape(t.get('scope') or 'whole configuration')})"
            + ("" if m["calibrated"] else " &mdash; UNCALIBRATED: every-unit-fires upper bound (--calib-data)"))
    kinds = [(k, sum(c["role"] == k for c in d["cores"])) for k in ROLE_MARKS]
    marks = "".join(f'<span class="mk {"dec" if k == "decoder" else "part"}">{html.escape(ROLE_MARKS[k][2])}: '
                    f"{n:,}</span>" for k, n in kinds if n)
    note = ('<p class="a">[A]: rests on profile values marked ASSUMPTION: ' + html.escape(", ".join(
        sorted({k for v in fl.values() for k in v}))) + "</p>") if fl else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>egru-compile mapping: {html.escape(profile.name)}</title>
<script>window.__errors = []; window.addEventListener('error', e => window.__errors.push(String(e.message)));</script>
<style>{_CSS}</style></head>
<body><div id="main"><div id="bar"><b>{head}</b>
<label>colour <select id="metric"><option value="synops">synops</option><option value="energy_pj">energy</option>
<option value="memory_pct">memory use</option></select></label>
<span id="legend"><span id="lmin"></span><span id="grad"></span><span id="lmax"></span></span>
<button id="zin">+</button><button id="zout">&minus;</button><button id="zreset">reset</button>
<span>wheel: zoom, drag: pan; red: chip boundary; orange: link load (messages/token)</span>{marks}</div>
<svg id="mesh" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet"></svg></div>
<div id="side"><div id="info"><p>Hover a core for its figures; click to pin.</p></div>{note}</div>
<script type="application/json" id="mapping-data">{data}</script>
<script>{_JS}</script></body></html>
"""


def write_mapping_html(m: dict, profile, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(m, profile))
