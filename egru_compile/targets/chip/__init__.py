"""Neuromorphic targets `loihi-like` and `spinnaker2-like`: core placement, per-core synapse blocks, a spiking
simulator and mapping reports (MACs, spikes, traffic and energy per core).

Output directory::

    manifest.json    target, profile, I/O, source checksum
    mapping.json     placement and per-core costs (schema in report.py)
    report.txt       the text report printed at compile time
    mapping.png      mesh heat-map of MACs per core with inter-core traffic
    program.npz      per-core weights as the chip holds them + placement (what `eval` simulates)
    vocab.txt        vocabulary (when the source has one)
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...errors import EgruError
from ..output import write_vocab
from ..stack import extract_stack
from .network import LayerNet, attach_activity, build_network
from .placement import (Placement, PlacementError, evaluate, place, required_chips_error, sequential_placement,
                        violations)
from .profile import ChipProfile, ProfileError, load_profile
from .report import core_rows, plot_mapping, text_report, totals, write_json

__all__ = ["compile_loihi_like", "compile_loihi2_like", "compile_spinnaker2_like", "compile_chip", "load_profile", "ChipProfile",
           "ProfileError", "PlacementError", "measure_unit_activity"]


def measure_unit_activity(graph, tokens: np.ndarray, nets: list[LayerNet]) -> None:
    """Attach per-unit event counts on `tokens` to `nets`. Reuses the counts `count-macs` recorded on the same
    graph and tokens (``graph.meta["unit_activity"]``), so per-core MACs add up exactly to its dynamic total;
    runs that analysis when the pipeline did not."""
    from ...passes import count_macs_for_tokens
    ua = graph.meta.get("unit_activity")
    if ua is None or not np.array_equal(ua["tokens"], tokens):
        ua = {}
        count_macs_for_tokens(graph, tokens, ua)
    T = len(tokens)
    fires_out = [np.asarray(ua["fires"][l], np.int64) for l in range(len(nets))]
    # the recurrent input at step t is y(t-1) (zero at t = 0): every firing but the last step's
    fires_rec = [f - ua["last"][l] for l, f in enumerate(fires_out)]
    fires_in = [np.full(nets[0].n_in, T, np.int64)] + fires_out[:-1]
    attach_activity(nets, fires_in, fires_rec, fires_out, T)


def _dense_reference(nets: list[LayerNet], profile: ChipProfile, max_chips: int) -> dict:
    """How many chips the same layers would need unpruned (sequential fill under the same limits)."""
    dense = []
    for n in nets:
        dense.append(LayerNet(n.index, n.n_in, n.hidden, n.events_in,
                              np.full(n.hidden, 3 * n.n_in, np.int64), np.full(n.hidden, 3 * n.hidden, np.int64),
                              np.full((n.hidden, n.n_in), 3, np.int8), np.full((n.hidden, n.hidden), 3, np.int8)))
    pl = sequential_placement(dense, profile, max_chips=10 ** 6)
    costs = evaluate(dense, pl, profile, calibrated=False)
    return {"chips": pl.chips, "cores": pl.n_cores, "memory_bytes": int(costs.memory_bytes.sum()),
            "synapses": int(costs.synapses.sum())}


def compile_chip(graph, source, out_dir, options: dict, default_profile: str) -> dict:
    out_dir = Path(out_dir)
    profile = load_profile(options.get("profile") or default_profile)
    max_chips = int(options.get("max_chips") or 16)
    if max_chips < 1:
        raise EgruError("--max-chips must be at least 1")
    stack = extract_stack(graph)
    float_weights = bool(options.get("float_weights"))
    quantized = any(l.W.scale is not None or l.R.scale is not None for l in stack.layers)
    if not float_weights and not quantized:
        raise EgruError(f"{profile.name} holds {profile.memory.weight_bits}-bit weights: run quantize-int8 "
                        "(the default pipeline does for chip targets) or pass --float-weights")
    nets = build_network(stack)
    calib = options.get("calib_token_ids")
    calibrated = calib is not None and len(calib) > 0
    if calibrated:
        measure_unit_activity(graph, np.asarray(calib, np.int64), nets)
    t0 = time.perf_counter()
    seq, ours = place(nets, profile, max_chips, calibrated, options.get("placement_objective") or "traffic")
    seq_costs = evaluate(nets, seq, profile, calibrated)
    costs = evaluate(nets, ours, profile, calibrated)
    place_s = time.perf_counter() - t0
    bad = violations(costs, profile)
    if bad or ours.chips > max_chips:
        if ours.chips > max_chips:
            required_chips_error(nets, profile, max_chips, ours, costs)
        name, core, used, limit = max(bad, key=lambda v: v[2] / v[3])
        raise PlacementError(f"placement violates {name} on core {core}: {used:,.0f} > {limit:,.0f} "
                             f"({used / limit:.2f}x the limit)")
    T = len(calib) if calibrated else 0
    rows = core_rows(ours, costs, profile, T)
    base_rows = core_rows(seq, seq_costs, profile, T)
    tot, btot = totals(rows, costs, profile, T), totals(base_rows, seq_costs, profile, T)
    cm = graph.meta.get("macs") or {}
    mapping = {
        "schema": "egru-compile/mapping", "version": 1,
        "profile": profile.to_dict(), "chips": ours.chips, "max_chips": max_chips,
        "calibrated": calibrated, "calib_tokens": T,
        "weights": {"bits": 32 if float_weights else profile.memory.weight_bits,
                    "quantize": graph.meta.get("quantize")},
        "cores": rows, "totals": tot,
        "baseline": {"placement": "sequential", "chips": seq.chips, "totals": btot, "cores": base_rows},
        "traffic": {"spike_hops_per_token": tot["spike_hops_out"],
                    "baseline_spike_hops_per_token": btot["spike_hops_out"],
                    "ratio": (btot["spike_hops_out"] / tot["spike_hops_out"]) if tot["spike_hops_out"] else None},
        "count_macs": {"dynamic": (cm.get("macs_per_token") or {}).get("dynamic"),
                       "static": (cm.get("macs_per_token") or {}).get("static")},
        "dense_reference": _dense_reference(nets, profile, max_chips),
        "placement_objective": options.get("placement_objective") or "traffic",
    }
    write_json(out_dir / "mapping.json", mapping)
    report = text_report(mapping) + f"placement took {place_s:.2f} s (ours and baseline)\n"
    (out_dir / "report.txt").write_text(report)
    plot_mapping(mapping, costs, ours, profile, out_dir / "mapping.png")
    _save_program(out_dir / "program.npz", stack, ours, float_weights)
    vocab_file = write_vocab(out_dir, source)
    manifest = {"target": default_profile, "format": "egru-compile/chip-program", "version": 1,
                "profile": profile.name, "program": "program.npz", "mapping": "mapping.json",
                "vocab": vocab_file, "source_sha256": getattr(source, "sha256", None),
                "hidden_sizes": stack.hidden_sizes, "vocab_size": stack.vocab_size,
                "options": {k: options.get(k) for k in ("profile", "max_chips", "float_weights", "calib_data",
                                                         "placement_objective",
                                                         "calib_tokens", "passes")}}
    write_json(out_dir / "manifest.json", manifest)
    return {"summary": report.rstrip("\n"), "mapping": mapping}


def _save_program(path, stack, pl: Placement, float_weights: bool) -> None:
    """Everything the simulator needs, as the chip holds it (int8 values + per-row scales unless float)."""
    arrays = {"embedding": stack.embedding, "decoder_weight": stack.decoder_weight,
              "decoder_bias": stack.decoder_bias, "slot_of_core": pl.slot_of_core,
              "n_layers": np.array(len(stack.layers))}
    for l, lw in enumerate(stack.layers):
        arrays[f"l{l}_core_of"] = pl.core_of[l]
        for name, m in (("W", lw.W), ("R", lw.R)):
            arrays[f"l{l}_{name}_shape"] = np.array(m.shape)
            arrays[f"l{l}_{name}_fmt"] = np.array(m.fmt)
            arrays[f"l{l}_{name}_indptr"] = m.indptr
            arrays[f"l{l}_{name}_indices"] = m.indices
            arrays[f"l{l}_{name}_data"] = m.data
            if m.scale is not None:
                arrays[f"l{l}_{name}_scale"] = m.scale
        for name in ("b", "br", "thr"):
            arrays[f"l{l}_{name}"] = getattr(lw, name)
        arrays[f"l{l}_events_in"] = np.array(lw.events_in)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_program(path):
    """(EGRUStack, Placement) from program.npz."""
    from ...ir import SparseMatrix
    from ..stack import EGRUStack, LayerWeights
    z = np.load(path, allow_pickle=False)
    layers = []
    core_of = []
    for l in range(int(z["n_layers"])):
        mats = {}
        for name in ("W", "R"):
            mats[name] = SparseMatrix(tuple(int(s) for s in z[f"l{l}_{name}_shape"]), str(z[f"l{l}_{name}_fmt"]),
                                      z[f"l{l}_{name}_indptr"], z[f"l{l}_{name}_indices"], z[f"l{l}_{name}_data"],
                                      z[f"l{l}_{name}_scale"] if f"l{l}_{name}_scale" in z else None)
        h = int(z[f"l{l}_thr"].shape[0])
        layers.append(LayerWeights(l, mats["W"].shape[1], h, mats["W"], z[f"l{l}_b"], mats["R"], z[f"l{l}_br"],
                                   z[f"l{l}_thr"], bool(z[f"l{l}_events_in"])))
        core_of.append(z[f"l{l}_core_of"])
    stack = EGRUStack(z["embedding"], layers, z["decoder_weight"], z["decoder_bias"])
    n = len(z["slot_of_core"])
    pl = Placement("balanced", core_of, z["slot_of_core"], n, 1)
    return stack, pl


def compile_loihi_like(graph, source, out_dir, options):
    return compile_chip(graph, source, out_dir, options, "loihi-like")


def compile_loihi2_like(graph, source, out_dir, options):
    return compile_chip(graph, source, out_dir, options, "loihi2-like")


def compile_spinnaker2_like(graph, source, out_dir, options):
    return compile_chip(graph, source, out_dir, options, "spinnaker2-like")
