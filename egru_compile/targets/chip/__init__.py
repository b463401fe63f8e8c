"""Neuromorphic targets `loihi-like` and `spinnaker2-like`: core placement, per-core synapse blocks, a spiking
simulator and mapping reports (MACs, spikes, traffic and energy per core).

Output directory::

    manifest.json    target, profile, I/O, source checksum
    mapping.json     placement, per-core estimated costs and the simulation of the calibration text
                     (schema in report.py)
    report.txt       the text report printed at compile time (estimated beside simulated)
    mapping.png      mesh heat-map of synops per core with link loads and chip boundaries
    program.npz      per-core weights as the chip holds them + placement (what `eval` simulates)

``options["decoder"]``: "host" (default) or "chip" (see `decoder`).
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
from .decoder import DECODER_CHOICES, WHY_CHIP, WHY_HOST, host_macs, place_decoder
from .report import core_rows, plot_mapping, simulated_report, text_report, totals, write_json
from .routing import router_multicast
from .weights import resolve_weight_dtype, round_graph_f16, to_f16_storage, weights_info

__all__ = ["compile_chip", "load_profile", "ChipProfile", "ProfileError", "PlacementError", "measure_unit_activity"]


def measure_unit_activity(graph, tokens: np.ndarray, nets: list[LayerNet]) -> None:
    """Attach per-unit event counts on `tokens` to `nets`. Reuses the counts `count-macs` recorded on the same
    graph and tokens (``graph.analyses.get(UnitActivity)``), so per-core MACs add up exactly to its dynamic
    total; runs that analysis when the pipeline did not."""
    from ...passes import UnitActivity, measure_macs
    ua = graph.analyses.get(UnitActivity)
    if ua is None or not ua.measured_on(tokens):
        ua = measure_macs(graph, tokens)[1]
    T = len(tokens)
    fires_out = [np.asarray(ua.fires[l], np.int64) for l in range(len(nets))]
    # the recurrent input at step t is y(t-1) (zero at t = 0): every firing but the last step's
    fires_rec = [f - ua.last[l] for l, f in enumerate(fires_out)]
    fires_in = [np.full(nets[0].n_in, T, np.int64)] + fires_out[:-1]
    attach_activity(nets, fires_in, fires_rec, fires_out, T)


def _dense_reference(nets: list[LayerNet], profile: ChipProfile, max_chips: int) -> dict:
    """How many chips the same layers would need unpruned (sequential fill under the same limits). Memory in
    closed form (every unit of a dense layer has 3 (n_in + h) synapses and every core of that layer all
    n_in + h input axons, as `placement.evaluate` counts them) — evaluating the dense placement itself would
    build its cores x cores traffic matrix (1.4 GB for a 27M-synapse model) for two numbers."""
    dense = []
    for n in nets:
        dense.append(LayerNet(n.index, n.n_in, n.hidden, n.events_in,
                              np.full(n.hidden, 3 * n.n_in, np.int64), np.full(n.hidden, 3 * n.hidden, np.int64),
                              np.full((n.hidden, n.n_in), 3, np.int8), np.full((n.hidden, n.hidden), 3, np.int8)))
    pl = sequential_placement(dense, profile, max_chips=10 ** 6)
    m = profile.memory
    memory = synapses = 0
    for l, n in enumerate(dense):
        cores, units = np.unique(np.asarray(pl.core_of[l]), return_counts=True)
        syn = units * 3 * (n.n_in + n.hidden)
        memory += int(((syn * m.synapse_bits + (n.n_in + n.hidden) * m.axon_pointer_bits
                        + units * m.state_bits_per_unit + 7) // 8).sum())
        synapses += int(syn.sum())
    return {"chips": pl.chips, "cores": pl.n_cores, "memory_bytes": memory, "synapses": synapses}


def compile_chip(graph, source, out_dir, options: dict, default_profile: str) -> dict:
    out_dir = Path(out_dir)
    profile = load_profile(options.get("profile") or default_profile)
    max_chips = int(options.get("max_chips") or 16)
    if max_chips < 1:
        raise EgruError("--max-chips must be at least 1")
    stack = extract_stack(graph)
    weight_dtype = resolve_weight_dtype(options, profile)
    float_weights = weight_dtype != "int8"
    quantized = any(l.W.scale is not None or l.R.scale is not None for l in stack.layers)
    if not float_weights and not quantized:
        raise EgruError(f"{profile.name} holds {profile.memory.weight_bits}-bit weights: run quantize-int8 "
                        "(the default pipeline does for chip targets) or pass --weight-dtype f16 / f32")
    if float_weights and quantized:
        raise EgruError(f"--weight-dtype {weight_dtype} needs float weights, but the pipeline quantized them to "
                        "int8 (drop quantize-int8 from --passes)")
    calib = options.get("calib_token_ids")
    f16_report = None
    if weight_dtype == "f16":                       # the chip holds float16 values: place, simulate, store those
        f16_report = round_graph_f16(graph, calib, options.get("perplexity"))
        stack = extract_stack(graph)
        to_f16_storage(stack)
    nets = build_network(stack)
    calibrated = calib is not None and len(calib) > 0
    if calibrated:
        measure_unit_activity(graph, np.asarray(calib, np.int64), nets)
    t0, c0 = time.perf_counter(), time.process_time()
    seq, ours = place(nets, profile, max_chips, calibrated, options.get("placement_objective") or "traffic")
    seq_costs = evaluate(nets, seq, profile, calibrated)
    costs = evaluate(nets, ours, profile, calibrated)
    place_s, place_cpu = time.perf_counter() - t0, time.process_time() - c0
    bad = violations(costs, profile)
    if bad or ours.chips > max_chips:
        if ours.chips > max_chips:
            required_chips_error(nets, profile, max_chips, ours, costs)
        name, core, used, limit = max(bad, key=lambda v: v[2] / v[3])
        raise PlacementError(f"placement violates {name} on core {core}: {used:,.0f} > {limit:,.0f} "
                             f"({used / limit:.2f}x the limit)")
    T = len(calib) if calibrated else 0
    decoder = options.get("decoder") or "host"
    if decoder not in DECODER_CHOICES:
        raise EgruError(f"--decoder must be one of {', '.join(DECODER_CHOICES)} (got {decoder!r})")
    dec = None
    if decoder == "chip" and stack.projection is not None:
        raise EgruError("--decoder chip: this model's decoder starts with a projection relu(P · y + p), whose "
                        "graded output is not spikes; it runs on the host (use --decoder host)")
    if decoder == "chip":
        dec = place_decoder(stack.decoder_weight, ours, profile, nets[-1].fires if calibrated else None, T)
        if dec.chips > max_chips:
            raise PlacementError(f"model does not fit on {max_chips} {profile.name} chip(s) with the decoder on "
                                 f"chip — limiting resource cores: {ours.n_cores} RNN + {len(dec.rows)} decoder "
                                 f"cores need {dec.chips} chips (raise --max-chips or use --decoder host)")
    multicast = router_multicast(profile)
    rows = core_rows(ours, costs, profile, T)
    base_rows = core_rows(seq, seq_costs, profile, T)
    tot, btot = totals(rows, costs, profile, T), totals(base_rows, seq_costs, profile, T)
    from ...passes import MacReport, QuantizeReport
    cm = graph.analyses.get(MacReport)
    q = graph.analyses.get(QuantizeReport)
    sim_report = None
    t_sim, c_sim = time.perf_counter(), time.process_time()
    if calibrated:
        from .simulate import ChipSimulator
        sim = ChipSimulator(stack, nets, Placement(ours.name, ours.core_of, dec.slot_of_core if dec else
                                                   ours.slot_of_core, ours.n_cores, ours.chips),
                            profile=profile, multicast=multicast, dec_core_of=dec.core_of if dec else None)
        for tok in np.asarray(calib, np.int64):
            sim.step(int(tok))
        sim_report = simulated_report(sim, decoder)
        del sim
    sim_s, sim_cpu = time.perf_counter() - t_sim, time.process_time() - c_sim
    mean_last = (float(nets[-1].fires.sum()) / T) if calibrated and T else None
    if decoder == "host":
        dec_info = {"placement": "host", "why": WHY_HOST, "host": host_macs(stack.decoder_weight, None)}
        if stack.projection is not None:      # EvNN's projection runs on the host with the decoder
            dec_info["host"]["projection_macs_static"] = int(stack.projection.nnz)
            dec_info["host"]["projection_macs_event_gated"] = (sim_report["host"]["projection_macs"]
                                                               if sim_report else None)
        if sim_report:
            dec_info["host"]["decoder_macs_event_gated"] = sim_report["host"]["decoder_macs"]
        elif mean_last is not None:
            dec_info["host"]["decoder_macs_event_gated"] = None
    else:
        dec_info = {"placement": "chip", "why": WHY_CHIP, "cores": dec.rows}
    mapping = {
        "schema": "egru-compile/mapping", "version": 1,
        "profile": profile.to_dict(), "chips": dec.chips if dec else ours.chips, "max_chips": max_chips,
        "router": "multicast" if multicast else "unicast", "decoder": dec_info, "simulated": sim_report,
        "calibrated": calibrated, "calib_tokens": T,
        "weights": weights_info(weight_dtype, profile, costs, f16_report if f16_report else
                                (q.to_json() if q and weight_dtype == "int8" else None)),
        "cores": rows, "totals": tot,
        "baseline": {"placement": "sequential", "chips": seq.chips, "totals": btot, "cores": base_rows},
        "traffic": {"spike_hops_per_token": tot["spike_hops_out"],
                    "baseline_spike_hops_per_token": btot["spike_hops_out"],
                    "ratio": (btot["spike_hops_out"] / tot["spike_hops_out"]) if tot["spike_hops_out"] else None},
        "count_macs": {"dynamic": cm.macs_per_token.dynamic if cm else None,
                       "static": cm.macs_per_token.static if cm else None},
        "dense_reference": _dense_reference(nets, profile, max_chips),
        "placement_objective": options.get("placement_objective") or "traffic",
    }
    write_json(out_dir / "mapping.json", mapping)
    t_out, c_out = time.perf_counter(), time.process_time()
    plot_mapping(mapping, costs, ours, profile, out_dir / "mapping.png")
    _save_program(out_dir / "program.npz", stack, ours, float_weights, dec)
    report = text_report(mapping) + f"placement took {place_s:.2f} s (ours and baseline)\n" + \
        (f"chip target: placement {place_s:.1f} s ({place_cpu:.1f} s CPU), simulation {sim_s:.1f} s "
         f"({sim_cpu:.1f} s CPU, {T} tokens), outputs {time.perf_counter() - t_out:.1f} s "
         f"({time.process_time() - c_out:.1f} s CPU)\n")
    (out_dir / "report.txt").write_text(report)
    vocab_file = write_vocab(out_dir, source)
    manifest = {"target": options.get("target") or profile.name, "format": "egru-compile/chip-program", "version": 1,
                "profile": profile.name, "program": "program.npz", "mapping": "mapping.json",
                "vocab": vocab_file, "source_sha256": getattr(source, "sha256", None),
                "hidden_sizes": stack.hidden_sizes, "vocab_size": stack.vocab_size,
                "decoder": decoder, "router": "multicast" if multicast else "unicast",
                "weight_dtype": weight_dtype, "synaptic_memory_bytes": mapping["weights"]["synaptic_memory_bytes"],
                "options": {k: options.get(k) for k in ("profile", "max_chips", "float_weights", "weight_dtype",
                                                         "calib_data",
                                                         "placement_objective", "decoder",
                                                         "calib_tokens", "passes")}}
    write_json(out_dir / "manifest.json", manifest)
    return {"summary": report.rstrip("\n"), "mapping": mapping}


def _save_program(path, stack, pl: Placement, float_weights: bool, dec=None) -> None:
    """Everything the simulator needs, as the chip holds it (int8 values + per-row scales unless float).
    With the decoder on chip, ``slot_of_core`` covers the decoder cores too and ``decoder_core_of`` maps
    each output to its core."""
    arrays = {"embedding": stack.embedding, "decoder_weight": stack.decoder_weight,
              "decoder_bias": stack.decoder_bias, "slot_of_core": dec.slot_of_core if dec else pl.slot_of_core,
              "n_rnn_cores": np.array(pl.n_cores), "n_layers": np.array(len(stack.layers))}
    if dec is not None:
        arrays["decoder_core_of"] = dec.core_of
    if stack.projection is not None:        # EvNN's decoder projection (host), as stored (int8 + scales or f32)
        P = stack.projection
        arrays.update(projection_shape=np.array(P.shape), projection_fmt=np.array(P.fmt),
                      projection_indptr=P.indptr, projection_indices=P.indices, projection_data=P.data,
                      projection_bias=np.asarray(stack.projection_bias, np.float32))
        if P.scale is not None:
            arrays["projection_scale"] = P.scale
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
        np.savez(f, **arrays)          # uncompressed: zlib took longer than the whole placement at 27M synapses


def load_program(path, with_decoder: bool = False):
    """(EGRUStack, Placement) from program.npz; with_decoder: (stack, placement, decoder_core_of or None).
    ``placement.slot_of_core`` covers every core (decoder cores included)."""
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
    if "projection_indptr" in z:
        stack.projection = SparseMatrix(tuple(int(s) for s in z["projection_shape"]), str(z["projection_fmt"]),
                                        z["projection_indptr"], z["projection_indices"], z["projection_data"],
                                        z["projection_scale"] if "projection_scale" in z else None)
        stack.projection_bias = z["projection_bias"]
    n = int(z["n_rnn_cores"]) if "n_rnn_cores" in z else len(z["slot_of_core"])
    pl = Placement("balanced", core_of, z["slot_of_core"], n, 1)
    if with_decoder:
        return stack, pl, (z["decoder_core_of"] if "decoder_core_of" in z else None)
    return stack, pl
