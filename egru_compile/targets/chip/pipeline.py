"""`compile_chip`: the chip back-end as a pipeline of mapping steps — weights as the chip holds them, the
network and its calibration activity, placement (`placement.place`, every candidate estimated once),
capacity (`capacity.py`), the decoder (host or cores), the event simulation of the calibration text, then
the artifact (mapping.json, report.txt, mapping.png, program.npz, manifest.json, vocab.txt).

Option values arrive complete from the target registry (`registry.ChipTargetOptions`, the one place their
defaults live); ``profile`` None means the target's own profile."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .split import split_info, split_lines
from ...errors import EgruError, option
from ..output import write_vocab
from ..stack import extract_stack
from .capacity import check_placement, required_chips_error
from .decoder import (DECODER_CHOICES, WHY_CHIP, WHY_CHIP_PROJECTION, WHY_HOST, host_macs, place_decoder,
                      projection_info)
from .model import CoreMap, PlacementError
from .network import LayerNet, attach_activity, build_network
from .placement import dense_reference, place
from .profile import ChipProfile, load_profile
from .program import save_program
from .assumptions import figure_flags, profile_assumptions
from .mapping_html import write_mapping_html
from .mapping_png import plot_mapping
from .report import MAPPING_VERSION, compare_baseline, core_rows, simulated_report, text_report, totals, write_json
from .whole import decoder_costs, whole_totals
from .routing import router_multicast
from .weights import resolve_weight_dtype, round_graph_f16, to_f16_storage, weights_info

MANIFEST_OPTIONS = ("profile", "max_chips", "float_weights", "weight_dtype", "calib_data", "placement_objective",
                    "decoder", "calib_tokens", "passes")


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


def compile_chip(graph, source, out_dir, options: dict, default_profile: str) -> dict:
    out_dir = Path(out_dir)
    profile = load_profile(options.get("profile") or default_profile)
    max_chips, objective, decoder = options["max_chips"], options["placement_objective"], options["decoder"]
    if max_chips < 1:
        raise EgruError(f"{option('max_chips')} must be at least 1")
    calib = options.get("calib_token_ids")
    calibrated = calib is not None and len(calib) > 0
    T = len(calib) if calibrated else 0
    stack, weight_dtype, weight_report = _chip_weights(graph, options, profile, calib, decoder)
    nets = build_network(stack)
    if calibrated:
        measure_unit_activity(graph, np.asarray(calib, np.int64), nets)
    t0, c0 = time.perf_counter(), time.process_time()
    choice: dict = {}                                   # which candidate the objective kept, and the trade
    seq, ours = place(nets, profile, max_chips, calibrated, objective, info=choice)
    place_s, place_cpu = time.perf_counter() - t0, time.process_time() - c0
    if ours.chips > max_chips:
        raise required_chips_error(profile, max_chips, ours.n_cores, ours.chips, ours.costs)
    check_placement(ours.costs, profile)
    dec = _place_decoder(decoder, stack, ours, profile, nets, T, max_chips)
    cores = ours.core_map(dec)
    multicast = router_multicast(profile)
    t_sim, c_sim = time.perf_counter(), time.process_time()
    sim_report, proj_fires = _simulate(stack, cores, profile, multicast, calib, decoder) if calibrated else (None, None)
    sim_s, sim_cpu = time.perf_counter() - t_sim, time.process_time() - c_sim
    rows = core_rows(ours, ours.costs, profile, T)
    base_rows = core_rows(seq, seq.costs, profile, T)
    tot, btot = totals(rows, ours.costs, profile, T), totals(base_rows, seq.costs, profile, T)
    rnn_tot = None
    if dec is not None:                 # totals cover the whole configuration; the RNN cores are a subtotal
        rnn_tot = dict(tot, scope=f"RNN cores only ({ours.n_cores} cores; decoder cores excluded)")
        stages = decoder_costs(stack.decoder_weight, dec, ours, profile, nets[-1].fires if calibrated else None, T,
                               _projection_dense(stack, dec), proj_fires)
        tot = whole_totals(tot, dec.rows, stages, ours.costs.busy_ns, profile, dec.chips, calibrated)
    else:
        tot["scope"] = f"whole configuration: {ours.n_cores} cores, decoder on the host"
    assumed = profile_assumptions(options.get("profile") or default_profile)
    chips = dec.chips if dec else ours.chips
    hops = (rnn_tot or tot)["hops_out"]
    from ...passes import MacReport
    cm = graph.analyses.get(MacReport)
    mapping = {
        "schema": "egru-compile/mapping", "version": MAPPING_VERSION,
        "profile": profile.to_dict(), "chips": chips, "max_chips": max_chips,
        "router": "multicast" if multicast else "unicast", "simulated": sim_report,
        "decoder": _decoder_info(decoder, dec, stack, sim_report, profile), "calibrated": calibrated,
        "calib_tokens": T,
        "weights": weights_info(weight_dtype, profile, ours.costs, weight_report, len(dec.rows) if dec else 0),
        "cores": rows, "totals": tot,
        "rnn_totals": rnn_tot,
        "baseline": {"placement": ("in-order fan-in split (its own baseline: a unit's fan-in exceeds the "
                                   "input-axon limit, so no unsplit placement exists)") if seq.splits else "sequential",
                     "chips": seq.chips, "totals": btot, "cores": base_rows},
        "traffic": {"hops_per_token": hops, "baseline_hops_per_token": btot["hops_out"],
                    "ratio": (btot["hops_out"] / hops) if hops else None, "scope": "RNN cores (both placements)"},
        "comparison": compare_baseline(rnn_tot or tot, btot, objective, choice),
        "assumptions": {"keys": assumed, "figures": figure_flags(assumed, chips)},
        "count_macs": {"dynamic": cm.macs_per_token.dynamic if cm else None,
                       "static": cm.macs_per_token.static if cm else None},
        "dense_reference": dense_reference(nets, profile), "placement_objective": objective,
        "split": split_info(ours, profile)}
    write_json(out_dir / "mapping.json", mapping)
    t_out, c_out = time.perf_counter(), time.process_time()
    plot_mapping(mapping, ours.costs, profile, out_dir / "mapping.png")
    write_mapping_html(mapping, profile, out_dir / "mapping.html")
    save_program(out_dir / "program.npz", stack, cores)
    report = text_report(mapping) + split_lines(mapping["split"]) + \
        (f"chip target: placement {place_s:.2f} s ({place_cpu:.1f} s CPU), simulation {sim_s:.1f} s "
         f"({sim_cpu:.1f} s CPU, {T} tokens), outputs {time.perf_counter() - t_out:.1f} s "
         f"({time.process_time() - c_out:.1f} s CPU)\n")
    (out_dir / "report.txt").write_text(report)
    manifest = {"target": options.get("target") or profile.name, "format": "egru-compile/chip-program", "version": 1,
                "profile": profile.name, "program": "program.npz", "mapping": "mapping.json",
                "vocab": write_vocab(out_dir, source), "source_sha256": getattr(source, "sha256", None),
                "hidden_sizes": stack.hidden_sizes, "vocab_size": stack.vocab_size,
                "decoder": decoder, "router": mapping["router"], "weight_dtype": weight_dtype,
                "projection_activation": stack.projection_activation,      # EvNN's projection (host or cores)
                # the whole configuration's (decoder cores included), as report.txt / mapping.json totals
                "synaptic_memory_bytes": int(mapping["totals"]["memory_bytes"]),
                "rnn_synaptic_memory_bytes": mapping["weights"]["synaptic_memory_bytes"],
                "options": {k: options.get(k) for k in MANIFEST_OPTIONS}}
    write_json(out_dir / "manifest.json", manifest)
    return {"summary": report.rstrip("\n"), "mapping": mapping}


def _chip_weights(graph, options: dict, profile: ChipProfile, calib, decoder: str):
    """(stack as the chip holds it, weight dtype, weights report for mapping.json); refuses a pipeline whose
    weights do not match the dtype, or a decoder option the model cannot take."""
    stack = extract_stack(graph)
    weight_dtype = resolve_weight_dtype(options, profile)
    quantized = any(l.W.scale is not None or l.R.scale is not None for l in stack.layers)
    if weight_dtype == "int8" and not quantized:
        raise EgruError(f"{profile.name} holds {profile.memory.weight_bits}-bit weights: run quantize-int8 "
                        f"(the default pipeline does for chip targets) or pass {option('weight_dtype', 'f16')} / "
                        f"{option('weight_dtype', 'f32')}")
    if weight_dtype != "int8" and quantized:
        raise EgruError(f"{option('weight_dtype', weight_dtype)} needs float weights, but the pipeline quantized "
                        f"them to int8 (drop quantize-int8 from {option('passes')})")
    if decoder not in DECODER_CHOICES:
        raise EgruError(f"{option('decoder')} must be one of {', '.join(DECODER_CHOICES)} (got {decoder!r})")
    if decoder == "chip" and stack.projection is not None and not profile.spikes.graded:
        act = "relu(P · y + p)" if stack.projection_activation == "relu" else "P · y + p"
        raise EgruError(f"{option('decoder', 'chip')}: this model's decoder starts with a projection {act} whose "
                        f"output is graded; binding limit: spike payload — {profile.name} sends binary spikes "
                        f"([spikes] payload_bits = 0), so it runs on the host (use {option('decoder', 'host')}, or a "
                        "graded-spike profile such as loihi2-like)")
    if weight_dtype == "f16":                       # the chip holds float16 values: place, simulate, store those
        report = round_graph_f16(graph, calib, options.get("perplexity"))
        stack = extract_stack(graph)
        to_f16_storage(stack)
        return stack, weight_dtype, report
    from ...passes import QuantizeReport
    q = graph.analyses.get(QuantizeReport)
    return stack, weight_dtype, (q.to_json() if q and weight_dtype == "int8" else None)


def _place_decoder(decoder: str, stack, ours, profile: ChipProfile, nets, T: int, max_chips: int):
    if decoder != "chip":
        return None
    proj = None if stack.projection is None else stack.projection.to_dense()
    dec = place_decoder(stack.decoder_weight, ours, profile, nets[-1].fires if T else None, T, proj)
    if dec.chips > max_chips:
        what = (f"{dec.n_proj} projection + {len(dec.rows) - dec.n_proj} decoder" if dec.n_proj else
                f"{len(dec.rows)} decoder")
        raise PlacementError(f"model does not fit on {max_chips} {profile.name} chip(s) with the decoder on "
                             f"chip — limiting resource cores: {ours.n_cores} RNN + {what} "
                             f"cores need {dec.chips} chips (raise {option('max_chips')} or use "
                             f"{option('decoder', 'host')})")
    return dec


def _projection_dense(stack, dec):
    return None if dec.proj_core_of is None else stack.projection.to_dense()


def _simulate(stack, cores: CoreMap, profile: ChipProfile, multicast: bool, calib, decoder: str):
    """The event simulator run over the calibration tokens: (`simulated_report`, graded messages sent by each
    projection output, or None without projection cores)."""
    from .simulate import ChipSimulator
    sim = ChipSimulator(stack, cores, profile=profile, multicast=multicast)
    toks = np.asarray(calib, np.int64)
    track = sim.dec.track_float = sim.dec.proj_core_of is not None     # graded projection payload vs float32
    nll = np.zeros(2)
    for i, tok in enumerate(toks):
        logits = sim.step(int(tok))
        if track and i + 1 < len(toks):
            for k, lg in enumerate((sim.dec.float_logits, logits)):
                lg = np.asarray(lg, np.float64)
                m = lg.max()
                nll[k] += m + np.log(np.exp(lg - m).sum()) - lg[toks[i + 1]]
    rep = simulated_report(sim, decoder)
    if track and len(toks) > 1:
        a, b = np.exp(nll / (len(toks) - 1))
        rep["projection"].update(calib_ppl_float=float(a), calib_ppl_chip=float(b), ppl_rel_change=float((b - a) / a))
    return rep, sim.dec.fires


def _decoder_info(decoder: str, dec, stack, sim_report: dict | None, profile: ChipProfile) -> dict:
    if decoder == "chip":
        info = {"placement": "chip", "why": WHY_CHIP if dec.proj_core_of is None else WHY_CHIP_PROJECTION,
                "cores": dec.rows}
        if dec.proj_core_of is not None:
            info["projection"] = projection_info(stack, profile, dec.n_proj, sim_report)
        return info
    info = {"placement": "host", "why": WHY_HOST, "host": host_macs(stack.decoder_weight, None)}
    if stack.projection is not None:      # EvNN's projection runs on the host with the decoder
        info["host"]["projection_macs_static"] = int(stack.projection.nnz)
        info["host"]["projection_activation"] = stack.projection_activation
        info["host"]["projection_macs_event_gated"] = (sim_report["host"]["projection_macs"]
                                                       if sim_report else None)
    if sim_report:
        info["host"]["decoder_macs_event_gated"] = sim_report["host"]["decoder_macs"]
    return info
