"""Connectivity refinement of one layer's unit -> core partition, under every per-core capacity limit.

Establishes: `refine_layer` returns an assignment over the same cores, every core within its unit (compartment),
synaptic-memory and input-axon limits (`refine_packets`' exchanges also keep the units per core; the output-axon
limit is checked after placement, by `violations`), and no more spike packets per token into the layer than
the assignment it was given (exactly: sum over presynaptic units of spikes/token x cores holding a target,
the lambda of the connectivity objective; every kept step is checked against that count). Two steps:

* `refine_moves` — greedy single-unit moves that cut packets, while the target core stays within (1 + eps)
  of the layer's mean synaptic memory (the balance the graph partitioners are given);
* `refine_packets` — "clear" a core of a sender by exchanging the sender's targets there for non-targets
  elsewhere (every core of a memory-bound layer is full, so exchanges, not moves). Exchange partners have a
  firing rate close to the unit they replace (first within 0.1 spikes/token, then within 0.3), so the cores'
  outgoing traffic — which the mesh layout exploits — keeps the shape the partitioner gave it.
"""
from __future__ import annotations

import numpy as np

from .capacity import CoreOccupancy
from .network import LayerNet

RATE_TOLERANCES = (0.1, 0.3)
#: cores x spiking senders above which a layer keeps the partitioner's cut: every move and exchange evaluates
#: a cores x senders matrix (PTB-size layers: at most 31 x 2,700 = 84k; the 0.5-scale random model's 2048-wide
#: layers: 300 x 4,096 = 1.2M, minutes per layer)
MAX_WORK = 250_000


def refine_layer(st: CoreOccupancy, nets: list[LayerNet], l: int, calibrated: bool) -> float:
    """Refine `st` (the occupancy of layer l's cores) in place; returns packets per token saved (0 when the
    layer is above `MAX_WORK`)."""
    w = sender_weights(nets, l, calibrated)
    if not refine_worth(st.net, st.k, w):
        return 0.0
    saved = refine_moves(st, w)
    for tol in RATE_TOLERANCES:
        saved += refine_packets(st, w, w[st.net.n_in:], rate_tol=tol)
    return saved


def refine_worth(net: LayerNet, k: int, w: np.ndarray) -> bool:
    """Several units per core (h >= 4 k) and at most `MAX_WORK` cores x spiking senders."""
    return net.hidden >= 4 * k and k * int(np.count_nonzero(w > 0)) <= MAX_WORK


def sender_weights(nets: list[LayerNet], l: int, calibrated: bool) -> np.ndarray:
    """[n_in + h]: spikes per token of each presynaptic unit of layer l (layer l - 1's units, then layer l's own
    recurrent units; the embedding input of layer 0 sends no packets: 0). Uncalibrated: every unit fires."""
    net = nets[l]

    def rate(src):
        r = src.rate(calibrated)
        return np.ones(src.hidden) if r is None else r
    w_in = rate(nets[l - 1]) if l > 0 else np.zeros(net.n_in)
    return np.concatenate([w_in, rate(net)]).astype(np.float64)


def packets_in(st: CoreOccupancy, w: np.ndarray) -> float:
    """Spike packets per token this layer's cores receive: sum over senders of weight x cores reached."""
    return float((st.cnt > 0).sum(0) @ w)


def refine_packets(st: CoreOccupancy, w: np.ndarray, unit_rate: np.ndarray, core_tries: int = 3, stall: int = 60,
                   rate_tol: float = 0.1, max_attempts: int = 1000) -> float:
    """Connectivity (lambda - 1) refinement under every capacity limit: for each sender s (heaviest first),
    "clear" a core a of s — exchange each of s's targets on a with a non-target of s on another core, so s's
    spikes no longer reach a (one packet per spike of s less). Exchange partners have a firing rate within
    `rate_tol` of the unit they replace (the cores' outgoing traffic, which the layout exploits, keeps the
    partitioner's shape) and, among those, lose the fewest other cleared (core, sender) pairs;
    every exchange keeps both cores within memory and input axons (unit counts are unchanged). An attempt is
    abandoned as soon as its estimated losses reach s's weight, and kept only when the exact packet count
    drops, else undone. Senders go by weight per exchange needed; a sender's cores in order of fewest
    targets until `core_tries` attempts in a row fail; the search stops after `stall` senders in a row
    without a kept attempt or after `max_attempts` attempts (bounds the work on large layers).
    Deterministic. Returns packets per token saved."""
    ws = np.nonzero(w > 0)[0]
    if not len(ws):
        return 0.0
    ctx = _Exchange(st, w[ws], ws, unit_rate, rate_tol)
    start = total = packets_in(st, w)
    idle = attempts = 0
    fewest = np.where(st.cnt[:, ws] > 0, st.cnt[:, ws], np.iinfo(np.int16).max).min(0)   # exchanges to clear
    for col in np.lexsort((-w[ws], -w[ws] / np.maximum(fewest, 1))):
        s = int(ws[col])
        tgt = st.pres[:, s]
        failures, kept = 0, False
        for a in np.argsort(st.cnt[:, s], kind="stable"):
            if failures >= core_tries or attempts >= max_attempts:
                break
            if st.cnt[a, s] == 0:
                continue
            a = int(a)
            attempts += 1
            done, est = [], 0.0
            for j in np.nonzero((st.assign == a) & tgt)[0]:
                i, loss = ctx.partner(int(j), a, int(col), tgt)
                est += loss
                if i < 0 or est >= w[s]:
                    break
                b = int(st.assign[i])
                st.move(int(j), b)
                st.move(i, a)
                done.append((int(j), i, b))
            after = packets_in(st, w) if st.cnt[a, s] == 0 else np.inf
            if after < total - 1e-9:
                total, failures, kept = after, 0, True
                continue
            for j, i, b in reversed(done):                  # undo the attempt
                st.move(i, b)
                st.move(j, a)
            failures += 1
        idle = 0 if kept else idle + 1
        if idle >= stall or attempts >= max_attempts:
            break
    return start - total


def refine_moves(st: CoreOccupancy, w: np.ndarray, eps: float = 0.03, passes: int = 8) -> float:
    """Greedy connectivity moves: each unit j goes to the core where it adds the fewest packets, when that
    saves packets (sum of w over j's senders that reach its core through j alone, minus those it newly
    brings to the other core) and that core stays within every limit and within (1 + eps) x the mean
    synaptic memory of the layer (the balance the graph partitioners are given). Passes until nothing moves.
    Returns packets per token saved."""
    ws = np.nonzero(w > 0)[0]
    if not len(ws) or st.k < 2:
        return 0.0
    presw = st.pres[:, ws].astype(np.float64) * w[ws][None, :]
    cap = (1 + eps) * st.mem.sum() / st.k
    saved = 0.0
    for _ in range(passes):
        moved = 0
        zero = (st.cnt[:, ws] == 0).astype(np.float64)               # [k, senders]: sender reaches no unit
        for j in range(st.net.hidden):
            a = int(st.assign[j])
            if st.units[a] <= 1:
                continue
            add = zero @ presw[j]                                     # packets j brings to each core
            rem = float(presw[j] @ (st.cnt[a, ws] == 1))          # packets that leave with j
            gain = rem - add
            gain[a] = -np.inf
            ok = (st.units + 1 <= st.cap_units) & (st.mem + st.umem[j] <= cap)
            gain[~ok] = -np.inf
            for b in np.argsort(-gain, kind="stable")[:4]:
                if gain[b] <= 1e-9:
                    break
                new_ax = st.axons[b] + int(np.count_nonzero(st.pres[j] & (st.cnt[b] == 0)))
                if new_ax <= st.lim.input_axons and \
                        st.mem[b] + st.umem[j] + new_ax * st.ptr_bytes <= st.lim.synapse_memory_bytes:
                    st.move(j, int(b))
                    zero[[a, b]] = st.cnt[[a, b]][:, ws] == 0
                    saved += float(gain[b])
                    moved += 1
                    break
        if not moved:
            break
    return saved


class _Exchange:
    """Partner search of `refine_packets` over the weighted senders only (columns `ws` of the presence rows)."""

    def __init__(self, st: CoreOccupancy, w: np.ndarray, ws: np.ndarray, unit_rate: np.ndarray, rate_tol: float):
        self.st, self.w, self.ws, self.rate, self.tol = st, w, ws, unit_rate, rate_tol
        self.presw = st.pres[:, ws].astype(np.float64) * w[None, :]      # [h, senders] weight of each presence

    def partner(self, j: int, a: int, col: int, tgt: np.ndarray, checks: int = 16) -> tuple[int, float]:
        """(unit i not on core a and not a target of the sender, its estimated packet loss) or (-1, 0)."""
        st = self.st
        zero = st.cnt[:, self.ws] == 0                         # cleared (core, sender) pairs
        zero[a, col] = True
        loss_in = self.presw[:, zero[a]].sum(1)               # i would bring these senders onto a
        loss_out = zero.astype(np.float64) @ self.presw[j]    # j would bring its senders onto core b
        lim, ptr, b = st.lim.synapse_memory_bytes, st.ptr_bytes, st.assign
        cand = (b != a) & ~tgt
        cand &= st.mem[a] - st.umem[j] + st.umem + st.axons[a] * ptr <= lim
        cand &= st.mem[b] - st.umem + st.umem[j] + st.axons[b] * ptr <= lim
        cand &= np.abs(self.rate - self.rate[j]) <= self.tol
        idx = np.nonzero(cand)[0]
        if not len(idx):
            return -1, 0.0
        dr = np.abs(self.rate[idx] - self.rate[j])
        loss = loss_in[idx] + loss_out[b[idx]]
        order = np.lexsort((dr, loss))
        for t in order[:checks]:
            i = int(idx[t])
            if st.fits_after(a, j, i) and st.fits_after(int(b[i]), i, j):
                return i, float(loss[t])
        return -1, 0.0
