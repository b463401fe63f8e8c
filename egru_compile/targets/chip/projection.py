"""The decoder side of a simulated token: EvNN's projection ``a(P · y_last + p)`` (on the host, or on
projection cores with graded events) and the decoder (on the host, or on decoder cores).

Graded events on chip (``--decoder chip`` with a projection model, graded-spike profiles only): the last
layer's events reach the projection cores (one compartment per projection output; routed like every spike,
in the last layer's phase); each projection core adds ``P[e, j] · y_j`` for every event j (one synop per
non-zero) onto the bias, applies relu for the relu variant, and every output whose payload is non-zero sends
one graded message — a spike of the profile's ``payload_bits`` (`costs.CostModel.message`: header flit plus
payload flits) — to each decoder core holding a synapse from it (projection phase: synops, updates, messages,
hops, links, energy, latency, exactly like a layer phase). The decoder cores then add ``W[v, e] · x̂_e`` over
the messages they received (decoder phase).

Payload (`payload_format`): the value travels as a signed ``payload_bits``-bit integer ``q = round(x / s)``
with a static per-output scale ``s = B / (2^(bits-1) - 1)``, ``B`` the largest ``|x|`` the output can take:
an EGRU event satisfies ``0 < y <= 1`` when every threshold is >= 0 (``c`` stays in [-1, 1], ``y = c~`` of a
firing unit), so ``x`` lies between ``p + Σ min(P, 0)`` and ``p + Σ max(P, 0)`` — no payload can overflow
(with a negative threshold it could: values are then clipped and counted, ``saturated``). The decoder cores
read ``x̂ = q · s``. This is the only quantised value on the way: today's chip decoder (and every layer)
receives the event values ``y`` as float32 (32-bit payloads, unquantised), the decoder weights are float32.
"""
from __future__ import annotations

import numpy as np

from .network import _or_group_any
from .routing import UnitRoutes


def payload_format(P: np.ndarray, bias: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """(per-output scale [E] float64, largest integer) of the graded payload of projection outputs (`P`
    [E, h_last] dense as the cores hold it, `bias` [E]), for a ``bits``-bit signed payload."""
    qmax = 2 ** (int(bits) - 1) - 1
    b = np.asarray(bias, np.float64)
    P = np.asarray(P, np.float64)
    bound = np.maximum(np.abs(b + np.minimum(P, 0).sum(1)), np.abs(b + np.maximum(P, 0).sum(1)))
    return np.where(bound > 0, bound / max(qmax, 1), 1.0), qmax


def quantize_payload(x: np.ndarray, scale: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(integer payloads (float64), the values the decoder cores read (float32), saturated count)."""
    r = np.rint(np.asarray(x, np.float64) / scale)
    sat = int(np.count_nonzero(np.abs(r) > qmax))
    q = np.clip(r, -qmax, qmax)
    return q, (q * scale).astype(np.float32), sat


def _core_sums(fan_T: np.ndarray, active: np.ndarray, core_of: np.ndarray, n: int) -> np.ndarray:
    per_unit = fan_T[active].sum(0, dtype=np.int64)
    return np.bincount(core_of, weights=per_unit, minlength=n).astype(np.int64)


class DecoderSide:
    """Projection and decoder of a `ChipSimulator`: on the host, or on cores (``cores.decoder_core_of``,
    ``cores.projection_core_of``). ``first`` = (fan [outputs, h_last], core_of) of the cores the last layer's
    spikes must reach (projection cores, else decoder cores), None when the decoder runs on the host."""

    def __init__(self, stack, cores, profile, n: int):
        self.n = n
        self.profile = profile
        self.dec_core_of = None if cores.decoder_core_of is None else np.asarray(cores.decoder_core_of, np.int64)
        pc = getattr(cores, "projection_core_of", None)
        self.proj_core_of = None if pc is None else np.asarray(pc, np.int64)
        has_proj = stack.projection is not None
        if has_proj and self.dec_core_of is not None and self.proj_core_of is None:
            raise ValueError("a projection decoder on chip needs projection cores (program.npz has none)")
        if self.proj_core_of is not None and not profile.spikes.graded:
            raise ValueError(f"projection cores need graded spikes ({profile.name} has payload_bits = 0)")
        self.relu = stack.projection_activation == "relu"       # identity (EvNN >= 0.2.0): graded, signed
        dec_fan = (stack.decoder_weight != 0).astype(np.int32)
        self.dec_wT = np.ascontiguousarray(stack.decoder_weight.T.astype(np.float32))     # [E, V], event rows
        self.dec_b = stack.decoder_bias.astype(np.float32)
        self.dec_col_nnz = np.count_nonzero(stack.decoder_weight, axis=0).astype(np.int64)
        self.proj_wT = None
        self.first = None
        if self.dec_core_of is not None:
            self.fdec_T = np.ascontiguousarray(dec_fan.T)
            self.dec_units = np.bincount(self.dec_core_of, minlength=n)
            self.first = (dec_fan, self.dec_core_of)
        if has_proj:
            P = stack.projection.to_dense()                                                 # [E, h_last]
            self.proj_wT = np.ascontiguousarray(P.T)                                        # event rows
            self.proj_b = np.asarray(stack.projection_bias, np.float32)
            self.proj_col_nnz = np.count_nonzero(P, axis=0).astype(np.int64)
        self.routes = None
        if self.proj_core_of is not None:
            pfan = (P != 0).astype(np.int32)
            self.fproj_T = np.ascontiguousarray(pfan.T)
            self.proj_units = np.bincount(self.proj_core_of, minlength=n)
            self.scale, self.qmax = payload_format(P, self.proj_b, profile.spikes.payload_bits)
            self.reach = np.zeros((P.shape[0], n), bool)          # projection output e -> decoder cores
            _or_group_any(self.reach, dec_fan, self.dec_core_of)
            self.first = (pfan, self.proj_core_of)
        self.phases = (self.dec_core_of is not None) + (self.proj_core_of is not None)
        self.track_float = False        # also compute `float_logits`: the decoder on the unquantised payload
        self.float_logits = None
        self.reset()

    def connect(self, tiles, mesh, multicast: bool) -> None:
        """Routes of the projection outputs' graded messages on the simulator's mesh (`routing.UnitRoutes`)."""
        if self.proj_core_of is not None:
            self.routes = UnitRoutes(self.reach, self.proj_core_of, tiles, mesh, self.profile, multicast)

    def reset(self) -> None:
        self.fires = None if self.proj_core_of is None else np.zeros(len(self.proj_core_of), np.int64)
        self.saturated = 0

    def link_loads(self):
        """Messages per link of the projection outputs' graded messages (0 without projection cores)."""
        return 0.0 if self.routes is None else self.routes.link_loads(self.fires)

    def step(self, sim, y_last: np.ndarray, a_in: np.ndarray) -> np.ndarray:
        """Logits of one token from the last layer's events `a_in` (values `y_last`); charges the projection
        and decoder phases (on chip) to `sim`'s counters."""
        n, cnt = self.n, sim.counters
        src = a_in                                     # decoder inputs: indices and values
        vals = y_last[a_in]
        if self.proj_wT is not None:
            x = self.proj_b + y_last[a_in] @ self.proj_wT[a_in]
            if self.relu:
                x = np.maximum(x, np.float32(0.0))
            sim.projection_macs += int(self.proj_col_nnz[a_in].sum())
            if self.proj_core_of is not None:
                if self.track_float:
                    nz = np.flatnonzero(x)
                    self.float_logits = self.dec_b + x[nz] @ self.dec_wT[nz]
                q, x, sat = quantize_payload(x, self.scale, self.qmax)
                self.saturated += sat
                src = np.flatnonzero(q)                # a zero payload is not sent
                self._projection_phase(sim, a_in, src)
            else:
                src = np.flatnonzero(x)
            vals = x[src]
        logits = self.dec_b + vals @ self.dec_wT[src]
        sim.decoder_macs += int(self.dec_col_nnz[src].sum())
        if self.dec_core_of is not None:
            synops = _core_sums(self.fdec_T, src, self.dec_core_of, n)
            cnt["dec_synops"] += synops
            cnt["updates"] += self.dec_units
            cnt["updates_active"] += self.dec_units
            ph = sim._phase(synops, self.dec_units, 0, 0, 0.0, 0.0)
            sim.phase_ns[-1] += ph
            sim.latency_ns += ph
        return logits

    def _projection_phase(self, sim, a_in: np.ndarray, sent: np.ndarray) -> None:
        n, cnt, R = self.n, sim.counters, self.routes
        synops = _core_sums(self.fproj_T, a_in, self.proj_core_of, n)
        src = self.proj_core_of[sent]
        spk = np.bincount(src, minlength=n)
        msgs = np.bincount(src, weights=R.n_msgs[sent], minlength=n).astype(np.int64)
        self.fires[sent] += 1
        cnt["dec_synops"] += synops
        cnt["updates"] += self.proj_units
        cnt["updates_active"] += spk
        cnt["spikes_out"] += spk
        cnt["messages_out"] += msgs
        cnt["messages_in"] += R.reach[sent].sum(0)
        cnt["hops_out"] += np.bincount(src, weights=R.hops[sent], minlength=n).astype(np.int64)
        route_pj = np.bincount(src, weights=R.pj[sent], minlength=n)
        max_route = float(R.max_ns[sent].max()) if len(sent) else 0.0
        ph = sim._phase(synops, spk, self.proj_units - spk, msgs, route_pj, max_route)
        sim.phase_ns[-2] += ph
        sim.latency_ns += ph
