"""Which reported figures rest on a chip-profile ASSUMPTION (a profile value with no public source).

A profile TOML marks such a value with ``ASSUMPTION`` in the comment on its line, or with a comment line
inside a section (``# ASSUMPTION ...``) that then covers every key below it in that section. `profile_assumptions`
reads those marks; `figure_flags` says which reported quantities depend on a marked key, so that the report,
mapping.json, `inspect` and `eval` print such figures with the mark ``[A]``.
"""
from __future__ import annotations

import re
from pathlib import Path

MARK = " [A]"

#: reported quantity -> the profile keys it is computed from (chip_hop_* only count when several chips are used)
DEPENDS = {
    "energy_pj": ("energy.synop_pj", "energy.neuron_active_pj", "energy.neuron_inactive_pj", "energy.spike_tile_pj",
                  "energy.hop_ew_pj", "energy.hop_ns_pj", "chip.chip_hop_pj", "spikes.payload_bits", "spikes.flit_bits"),
    "latency_ns": ("energy.synop_ns", "energy.neuron_active_ns", "energy.neuron_inactive_ns", "energy.spike_tile_ns",
                   "energy.hop_ew_ns", "energy.hop_ns_ns", "energy.barrier_ns", "chip.chip_hop_ns",
                   "spikes.payload_bits", "spikes.flit_bits"),
    "memory_bytes": ("memory.weight_bits", "memory.index_bits", "memory.axon_pointer_bits",
                     "memory.state_bits_per_unit", "core.synapse_memory_bytes"),
    "limits": ("core.compartments", "core.input_axons", "core.output_axons", "core.synapse_memory_bytes",
               "core.compartments_per_unit", "chip.cores"),
    "hops": ("chip.tiles_x", "chip.tiles_y", "chip.cores_per_tile"),
}


def profile_assumptions(name_or_path: str | None) -> dict[str, str]:
    """{"section.key": comment} of every value the profile file marks ASSUMPTION ({} if the file is gone)."""
    from .profile import PROFILE_DIR
    if not name_or_path:
        return {}
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.toml"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    return parse_assumptions(text)


def parse_assumptions(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    section, blanket = None, None
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^\[([A-Za-z0-9_.-]+)\]", s)
        if m:
            section, blanket = m.group(1), None
            continue
        if s.startswith("#"):
            if section and "ASSUMPTION" in s:
                blanket = s.lstrip("# ")
            continue
        m = re.match(r"^([A-Za-z0-9_-]+)\s*=\s*[^#]*(#\s*(.*))?$", s)
        if not m or section is None:
            continue
        key = f"{section}.{m.group(1)}"
        comment = m.group(3) or ""
        if "ASSUMPTION" in comment:
            out[key] = comment.strip()
        elif blanket:
            out[key] = blanket
    return out


def figure_flags(assumed: dict[str, str], chips: int) -> dict[str, list[str]]:
    """{quantity: [assumed profile keys it rests on]} for the quantities that rest on at least one."""
    flags = {}
    for q, keys in DEPENDS.items():
        used = [k for k in keys if k in assumed and (chips > 1 or not k.startswith("chip.chip_hop"))]
        if used:
            flags[q] = used
    return flags


def mark(flags: dict | None, quantity: str) -> str:
    return MARK if flags and quantity in flags else ""


def footnote(flags: dict | None, profile_name: str, shown: tuple[str, ...] | None = None) -> list[str]:
    """The line explaining [A] (none when nothing printed rests on an assumption); `shown`: the figures the
    caller prints (None: all), so the line names only the keys behind a printed [A]."""
    if not flags:
        return []
    keys = sorted({k for f, v in flags.items() if shown is None or f in shown for k in v})
    if not keys:
        return []
    return [f"[A] rests on {profile_name} profile values marked ASSUMPTION (no public source; placeholders to compare "
            f"placements, not measurements): " + ", ".join(keys)]
