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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import EgruError
from .capacity import core_fits, core_memory_bytes, fits_memory
from .costs import hop_matrices
from .model import Placement

DECODER_CHOICES = ("host", "chip")
WHY_HOST = ("default: the dense V x E decoder needs more synaptic memory than the pruned RNN stack and its "
            "logits leave the chip for the softmax anyway")
WHY_CHIP = "--decoder chip: decoder synapses placed on cores, event-gated by the last layer's spikes"


@dataclass
class DecoderPlacement:
    core_of: np.ndarray          # [V] global core id of each output
    slot_of_core: np.ndarray     # [n_rnn + k] slots of all cores (RNN cores first)
    n_rnn: int
    chips: int
    rows: list[dict]             # per decoder core: outputs, synapses, memory_bytes, input_axons, synops_estimated


def place_decoder(weight: np.ndarray, pl: Placement, profile, last_layer_fires: np.ndarray | None = None,
                  tokens: int = 0) -> DecoderPlacement:
    lim = profile.core
    fan = weight != 0                                      # [V, E]
    V, E = fan.shape
    syn = fan.sum(1)
    core_of = np.zeros(V, np.int64)
    k, count, nsyn, axons = 0, 0, 0, np.zeros(E, bool)
    for v in range(V):
        ax = axons | fan[v]
        n_ax = int(ax.sum())           # one compartment per output
        fits = core_fits(profile, count + 1, core_memory_bytes(profile, nsyn + int(syn[v]), n_ax, count + 1), n_ax)
        if not fits and count:
            k, count, nsyn, ax = k + 1, 0, 0, fan[v].copy()
            if not fits_memory(profile, int(syn[v]), int(ax.sum()), 1):
                raise EgruError(f"one decoder output ({int(syn[v])} synapses) does not fit a {profile.name} core")
        core_of[v] = k
        count, nsyn, axons = count + 1, nsyn + int(syn[v]), ax
    k += 1
    n_rnn = pl.n_cores
    chips = max(1, math.ceil((n_rnn + k) / profile.chip.cores), pl.chips)
    used = np.zeros(chips * profile.chip.cores, bool)
    used[pl.slot_of_core] = True
    free = np.nonzero(~used)[0]
    last = np.unique(pl.core_of[-1])
    hops, _, _ = hop_matrices(profile, np.concatenate([pl.slot_of_core[last], free]))
    dist = hops[:len(last), len(last):].sum(0)
    slots = free[np.argsort(dist, kind="stable")[:k]]
    rows = []
    T = tokens
    for c in range(k):
        m = core_of == c
        ax = int(fan[m].any(0).sum())
        s = int(syn[m].sum())
        est = float((fan[m].sum(0) * last_layer_fires).sum()) / T if last_layer_fires is not None and T else None
        rows.append({"core": n_rnn + c, "outputs": int(m.sum()), "synapses": s, "input_axons": ax,
                     "memory_bytes": int(core_memory_bytes(profile, s, ax, int(m.sum()))),
                     "memory_limit_bytes": lim.synapse_memory_bytes, "synops_estimated": est,
                     "slot": int(slots[c])})
    return DecoderPlacement(core_of + n_rnn, np.concatenate([pl.slot_of_core, slots]), n_rnn, chips, rows)


def host_macs(weight: np.ndarray, mean_active_last: float | None) -> dict:
    """What the host computes per token when the decoder is not on chip."""
    V, E = weight.shape
    return {"embedding_lookups": 1, "embedding_values": int(E), "embedding_macs": 0,
            "decoder_macs_dense": int(np.count_nonzero(weight)),
            "decoder_macs_event_gated": None if mean_active_last is None else float(V * mean_active_last)}
