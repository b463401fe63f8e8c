"""Where the decoder runs (``--decoder host|chip``) and, on chip, which cores hold it.

Default ``host``: the decoder is a dense V x E matrix (10,000 x 750 = 7.5 M weights at PTB size: more
synaptic memory than the whole RNN stack, about one more loihi-like chip) and its output — logits for a
softmax over the vocabulary — has to leave the chip anyway; the reports then give the host's MACs/token
(embedding row lookup and decoder) so that no total is silently partial.

``chip``: every decoder output is one accumulator (one compartment) holding its incoming synapses (one per
non-zero decoder weight, at the profile's weight + index bits); outputs fill cores in order under the
per-core limits (compartments, synaptic memory incl. one pointer per input axon, input axons), on extra cores
after the RNN cores, in the free slots nearest (in hops) to the last layer's cores. The decoder's synaptic
ops are event-gated by the last layer's spikes, which are routed to the decoder cores like any spike.

EvNN's projection decoder ``logits = E · a(P · y_last + p) + b`` on chip (graded-spike profiles only,
`projection`): the projection's E outputs are one accumulator each on projection cores (packed the same way,
in the free slots nearest the last layer), fed by the last layer's events; each output sends its value
``a(P · y + p)`` as one graded message (a signed ``payload_bits`` integer with a per-output scale; zeros — all
of relu's — are not sent) to the decoder cores that hold its synapses, which then compute the logits as above.
On a binary-spike profile the projection's graded output cannot travel: ``--decoder chip`` is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import EgruError
from .capacity import core_fits, core_memory_bytes
from .costs import hop_matrices
from .model import Placement

DECODER_CHOICES = ("host", "chip")
WHY_HOST = ("default: the dense V x E decoder needs more synaptic memory than the pruned RNN stack and its "
            "logits leave the chip for the softmax anyway")
WHY_CHIP = "--decoder chip: decoder synapses placed on cores, event-gated by the last layer's spikes"
WHY_CHIP_PROJECTION = ("--decoder chip: projection and decoder synapses placed on cores; the projection's "
                       "outputs travel as graded messages")


@dataclass
class DecoderPlacement:
    core_of: np.ndarray          # [V] global core id of each output
    slot_of_core: np.ndarray     # [n_rnn + k] slots of all cores (RNN cores first, then projection, decoder)
    n_rnn: int
    chips: int
    rows: list[dict]             # per projection / decoder core: role, outputs, synapses, memory_bytes, ...
    proj_core_of: np.ndarray | None = None    # [E] global core id of each projection output (graded profile)
    n_proj: int = 0                            # projection cores (after the RNN cores, before the decoder's)


def _pack(fan: np.ndarray, profile, what: str) -> np.ndarray:
    """Local core (0, 1, ...) of each output (row of `fan` [outputs, inputs]): outputs fill cores in order, one
    compartment each, under the per-core limits (compartments, synaptic memory, input axons)."""
    syn = fan.sum(1)
    core_of = np.zeros(fan.shape[0], np.int64)
    k, count, nsyn, axons = 0, 0, 0, np.zeros(fan.shape[1], bool)
    for v in range(fan.shape[0]):
        ax = axons | fan[v]
        n_ax = int(ax.sum())           # one compartment per output
        fits = core_fits(profile, count + 1, core_memory_bytes(profile, nsyn + int(syn[v]), n_ax, count + 1), n_ax)
        if not fits and count:
            k, count, nsyn, ax = k + 1, 0, 0, fan[v].copy()
            n_ax = int(ax.sum())
            fits = core_fits(profile, 1, core_memory_bytes(profile, int(syn[v]), n_ax, 1), n_ax)
        if not fits:
            raise EgruError(f"one {what} output ({int(syn[v])} synapses, {n_ax} input axons) does not fit a "
                            f"{profile.name} core")
        core_of[v] = k
        count, nsyn, axons = count + 1, nsyn + int(syn[v]), ax
    return core_of


def _nearest(profile, used: np.ndarray, near_slots: np.ndarray, k: int) -> np.ndarray:
    """The `k` free slots (not `used`) nearest in hops to `near_slots`, marked used."""
    free = np.nonzero(~used)[0]
    hops, _, _ = hop_matrices(profile, np.concatenate([near_slots, free]))
    dist = hops[:len(near_slots), len(near_slots):].sum(0)
    slots = free[np.argsort(dist, kind="stable")[:k]]
    used[slots] = True
    return slots


def _rows(fan, local, k, first, slots, profile, role, in_fires, tokens) -> list[dict]:
    syn = fan.sum(1)
    rows = []
    for c in range(k):
        m = local == c
        ax = int(fan[m].any(0).sum())
        s = int(syn[m].sum())
        est = float((fan[m].sum(0) * in_fires).sum()) / tokens if in_fires is not None and tokens else None
        rows.append({"core": first + c, "role": role, "outputs": int(m.sum()), "synapses": s, "input_axons": ax,
                     "memory_bytes": int(core_memory_bytes(profile, s, ax, int(m.sum()))),
                     "memory_limit_bytes": profile.core.synapse_memory_bytes, "synops_estimated": est,
                     "slot": int(slots[c])})
    return rows


def place_decoder(weight: np.ndarray, pl: Placement, profile, last_layer_fires: np.ndarray | None = None,
                  tokens: int = 0, projection: np.ndarray | None = None) -> DecoderPlacement:
    """Decoder cores (and, with `projection` [E, h_last] on a graded-spike profile, projection cores before
    them: one compartment per projection output, fed by the last layer's events, in the free slots nearest
    the last layer's cores; the decoder cores then in the free slots nearest the projection cores)."""
    fan = weight != 0                                      # [V, E]
    dec_local = _pack(fan, profile, "decoder")
    kd = int(dec_local.max()) + 1
    pfan = None if projection is None else projection != 0            # [E, h_last]
    proj_local = None if pfan is None else _pack(pfan, profile, "projection")
    kp = 0 if proj_local is None else int(proj_local.max()) + 1
    n_rnn = pl.n_cores
    chips = max(1, math.ceil((n_rnn + kp + kd) / profile.chip.cores), pl.chips)
    used = np.zeros(chips * profile.chip.cores, bool)
    used[pl.slot_of_core] = True
    last = pl.slot_of_core[np.unique(pl.core_of[-1])]
    rows = []
    proj_core_of = None
    if pfan is not None:
        pslots = _nearest(profile, used, last, kp)
        rows += _rows(pfan, proj_local, kp, n_rnn, pslots, profile, "projection", last_layer_fires, tokens)
        proj_core_of = proj_local + n_rnn
        last = pslots
        last_layer_fires = None              # the decoder's inputs are the projection outputs (rates: simulated)
    slots = _nearest(profile, used, last, kd)
    rows += _rows(fan, dec_local, kd, n_rnn + kp, slots, profile, "decoder", last_layer_fires, tokens)
    all_slots = np.concatenate([pl.slot_of_core] + [np.array([r["slot"] for r in rows], np.int64)])
    return DecoderPlacement(dec_local + n_rnn + kp, all_slots, n_rnn, chips, rows, proj_core_of, kp)


def host_macs(weight: np.ndarray, mean_active_last: float | None) -> dict:
    """What the host computes per token when the decoder is not on chip."""
    V, E = weight.shape
    return {"embedding_lookups": 1, "embedding_values": int(E), "embedding_macs": 0,
            "decoder_macs_dense": int(np.count_nonzero(weight)),
            "decoder_macs_event_gated": None if mean_active_last is None else float(V * mean_active_last)}


def projection_info(stack, profile, n_proj: int, sim_report: dict | None) -> dict:
    """mapping.json ``decoder.projection`` for projection cores: the activation, the graded payload's format
    (`projection.payload_format`) and, when simulated, what the calibration run sent and the perplexity
    change of the quantised payload against the float32 projection output (the host's)."""
    from .projection import payload_format
    P = stack.projection.to_dense()
    bits = profile.spikes.payload_bits
    scale, qmax = payload_format(P, stack.projection_bias, bits)
    info = {"activation": stack.projection_activation or "identity", "outputs": int(P.shape[0]), "cores": n_proj,
            "synapses": int(np.count_nonzero(P)), "payload_bits": bits, "flits_per_message": profile.spikes.flits(),
            "payload": (f"signed {bits}-bit integer q = round(x / s), |q| <= {qmax}, static per-output scale s = "
                        "largest |x| the output can take / qmax; zeros are not sent"),
            "scale_min": float(scale.min()), "scale_max": float(scale.max())}
    if sim_report and sim_report.get("projection"):
        info["simulated"] = sim_report["projection"]
    return info
