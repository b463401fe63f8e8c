"""SANA-FE architecture files for `bench_energy_split` (SANA-FE itself is not imported here): its shipped
``loihi.yaml`` or our profile's per-event figures, expanded to one entry per tile and core so that each core
declares exactly the replay soma units (and accumulator dendrite units, at most `DEND_MAX` neurons each) that
the replay maps onto it."""
from __future__ import annotations

import re
from importlib.resources import files

CPU = 3                                  # SANA-FE neurons per unit and per remote part (z, r, g)
DEND_MAX = 1024                          # neurons per SANA-FE accumulator dendrite unit (its loihi_max_compartments)

def soma_bank(name: str, n: int, access_pj, access_ns, update_pj, update_ns, spike_pj, spike_ns) -> str:
    """`n` replay soma units (SANA-FE's input model, each replaying one neuron's spikes) with these costs."""
    return f"""            - name: {name}[0..{max(n, 1) - 1}]
              attributes:
                model: input
                energy_access_neuron: {access_pj}e-12
                latency_access_neuron: {access_ns}e-9
                energy_update_neuron: {update_pj}e-12
                latency_update_neuron: {update_ns}e-9
                energy_spike_out: {spike_pj}e-12
                latency_spike_out: {spike_ns}e-9
"""


def stock_template(compartments: int) -> tuple[str, tuple, tuple]:
    """SANA-FE's loihi.yaml with its soma list replaced by {SOMA}; (home, part) soma costs = its loihi_lif
    (access + update as access: an input-model neuron is only 'updated' when it fires)."""
    txt = (files("sanafe.examples") / "loihi.yaml").read_text()
    soma = re.search(r"          soma:\n(.*?)          dendrite:\n", txt, re.S)
    assert soma and "max_neurons_supported: 1024" in txt, "sanafe's loihi.yaml changed: update this script"
    dend = re.search(r"          dendrite:\n(.*?)          synapse:\n", txt, re.S)
    assert dend and set(re.findall(r"energy_update: (\S+)", dend.group(1))) == {"0.0"}, "loihi.yaml changed"
    txt = txt.replace(soma.group(1), "{SOMA}").replace(dend.group(1), "{DEND}").replace(
        "max_neurons_supported: 1024", f"max_neurons_supported: {compartments}")
    lif = (51.2 + 21.6, 6.0 + 3.7, 0.0, 0.0, 69.3, 30.0)
    return txt, lif, lif


def profile_template(profile) -> tuple[str, tuple, tuple]:
    """Our profile's mesh and per-event figures as a SANA-FE architecture, charged as our formula charges:
    a home compartment costs the inactive update every token, a unit that fires pays the active-minus-inactive
    difference for its 3 compartments; a remote part's 3 accumulators likewise (inactive every token, active in a
    token it sends its partial sum); one message = one packet (no flits).
    (text with {SOMA} and {DEND} to fill, home soma costs, part soma costs; `bench_energy` uses it too)"""
    g, e = profile.chip, profile.energy
    home = (e.neuron_inactive_pj, e.neuron_inactive_ns, CPU * (e.neuron_active_pj - e.neuron_inactive_pj),
            CPU * (e.neuron_active_ns - e.neuron_inactive_ns), 0.0, 0.0)
    syn = "".join(f"""            - name: {name}
              attributes:
                model: current_based
                energy_process_spike: {e.synop_pj}e-12
                latency_process_spike: {e.synop_ns}e-9
""" for name in ("loihi_dense_synapse", "loihi_sparse_synapse"))
    hops = "".join(f"        energy_{d}_hop: {pj}e-12\n        latency_{d}_hop: {ns}e-9\n" for d, pj, ns in
                   (("north", e.hop_ns_pj, e.hop_ns_ns), ("south", e.hop_ns_pj, e.hop_ns_ns),
                    ("east", e.hop_ew_pj, e.hop_ew_ns), ("west", e.hop_ew_pj, e.hop_ew_ns)))
    txt = f"""architecture:
  name: {profile.name}
  attributes:
    topology: mesh
    width: {g.tiles_x}
    height: {g.tiles_y}
    link_buffer_size: 16
    sync_model: fixed
    latency_sync: {e.barrier_ns}e-9
  tile:
    - name: tile[0..{g.tiles_x * g.tiles_y - 1}]
      attributes:
{hops}      core:
        - name: core[0..{g.cores_per_tile - 1}]
          attributes:
            buffer_position: soma
            buffer_inside_unit: false
            max_neurons_supported: {profile.core.compartments}
          axon_in:
            - name: axon_in
              attributes:
                energy_message_in: 0.0
                latency_message_in: 0.0
          soma:
{{SOMA}}          dendrite:
{{DEND}}          synapse:
{syn}          axon_out:
            - name: axon_out
              attributes:
                energy_message_out: {e.spike_tile_pj}e-12
                latency_message_out: {e.spike_tile_ns}e-9
"""
    return txt, home, home


def per_core_arch(template: tuple, n_tiles: int, cores_per_tile: int, counts: dict) -> str:
    """The template's one tile / one core entry expanded into one entry per tile and core (tile ids in file
    order), each core's {SOMA} the replay banks it needs: counts[(tile, core)] = (home, part, host)."""
    txt, home_c, part_c = template
    head, rest = txt.split("  tile:\n", 1)
    tile_line, rest = rest.split("\n", 1)
    tile_attrs, core_part = rest.split("      core:\n", 1)
    core_line, core_body = core_part.split("\n", 1)
    tname = re.search(r"name: (\w+)\[", tile_line).group(1)
    cname = re.search(r"name: (\w+)\[", core_line).group(1)
    out = [head, "  tile:\n"]
    for k in range(n_tiles):
        out += [f"    - name: {tname}[{k}..{k}]\n", tile_attrs, "      core:\n"]
        for c in range(cores_per_tile):
            nh, np_, nx = counts.get((k, c), (0, 0, 0))
            soma = soma_bank("home", nh, *home_c) + soma_bank("part", np_, *part_c) + soma_bank("host", nx, *(0.0,) * 6)
            dend = f"""            - name: dend[0..{max(1, -(-(nh + np_ + nx) // DEND_MAX)) - 1}]
              attributes:
                model: accumulator
                energy_update: 0.0
                latency_update: 0.0
"""
            out += [f"        - name: {cname}[{c}..{c}]\n", core_body.replace("{SOMA}", soma).replace("{DEND}", dend)]
    return "".join(out)
