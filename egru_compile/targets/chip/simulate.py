"""Event-level simulator of a placed EGRU (one `step` = one token): every core holds the gate rows of its
units (its incoming synapses, as the chip holds them), works on the spikes delivered to it, and its units'
spikes travel as messages over the mesh (`routing`: X-then-Y routes, unicast or multicast trees) to every
core that holds one of their targets. Layers run in phases (layer 0, 1, ..., then the projection and the
decoder when they are on chip: `projection.DecoderSide`), each closed by a barrier.

Counted per core and token, from the events of the run: synaptic ops (`synops`, the MAC convention: the
local non-zero fan-out of every delivered spike; the dense embedding input counts every local input
synapse), compartment updates (active = the unit fired), spikes out, messages out / in, hops of the messages
it sent, energy (profile per-event costs); per link the messages that crossed it; per layer phase the latency
= slowest core's work (synops, updates, message injection) + longest route of the phase + barrier.

Fan-in split layers (``CoreMap.splits``, `split`): a spike is delivered to the part cores that hold its
synapses, each part counts its synops, and every (unit, remote part) that received events in the token sends
one graded partial-sum message (payload `split.psum_bits`) to the unit's home core, which adds it into the
unit's gate accumulators (``psum_adds``, charged as synops) and runs the update. Partial-sum messages count
in messages, hops, links and energy like spikes (``psum_messages`` separately); the phase latency adds the
longest partial-sum route to the longest spike route. Split mappings run on the "layer" backend.

Backends (``ChipSimulator(..., backend=)``) differ only in how the arithmetic is grouped:

* ``"layer"`` (default): one program per layer computes all its cores' accumulators at once (TIR kernels
  when tvm imports, else numpy); per-core synops come from per-core fan-out tables indexed by the spikes
  delivered. Fast enough for PTB-size models (benchmarks/bench_chip_eval.py).
* ``"tir"``: each core runs its own compiled TIR program (`kernels.CoreProgram`) on its own inbox;
* ``"numpy"``: the reference — per-core dense local blocks, one matvec per inbox message.

All give the same outputs and counters (tests/targets/chip/test_chip_sim.py).
"""
from __future__ import annotations

import numpy as np

from ...ir.ops import OPS
from ..stack import EGRUStack
from .costs import CostModel
from .model import CoreMap
from .network import dest_cores
from .projection import DecoderSide
from .routing import Mesh, UnitRoutes, core_tiles
from .split import psum_link_loads, psum_routes, split_dest_cores, split_synops

_cell = OPS["egru_cell"].compute

BACKENDS = ("layer", "tir", "numpy")


def default_backend() -> str:
    """The arithmetic of core programs: "tir" when tvm imports, else "numpy"."""
    from .kernels import tvm_available
    return "tir" if tvm_available() else "numpy"


def _gate_fan(M, h: int) -> np.ndarray:
    """[h, n_pre] int8 non-zero synapses (gates summed) from presynaptic unit i into unit j, from the stored
    values as the cores hold them (an explicitly stored zero is no synapse)."""
    d = M.to_dense() != 0
    return d[:h].astype(np.int8) + d[h:2 * h] + d[2 * h:3 * h]          # 0..3: int8 (sums widen to int64)


def _core_sums(fan_T: np.ndarray, active: np.ndarray, core_of: np.ndarray, n: int) -> np.ndarray:
    """[n] int64: per core, the synapses its units have from the `active` presynaptic units (`fan_T`
    [n_pre, h] int8 per presynaptic unit, `core_of` [h])."""
    per_unit = fan_T[active].sum(0, dtype=np.int64)
    return np.bincount(core_of, weights=per_unit, minlength=n).astype(np.int64)


class _Core:
    def __init__(self, cid: int, layer: int, units: np.ndarray, lw, W_dense: np.ndarray, R_dense: np.ndarray,
                 backend: str = "numpy", fast_math: bool | None = None):
        """One core's units of layer `layer` (``cid`` -1: a whole layer, the "layer" backend's program)."""
        self.id = cid
        self.layer = layer
        self.units = units
        self.backend = backend
        h = lw.hidden
        rows = np.concatenate([units, h + units, 2 * h + units])
        # local synapse blocks, stored input-major (one row per presynaptic unit = its local CSC column)
        w_in = np.ascontiguousarray(W_dense[rows].T)                        # [n_in, 3n]
        w_rec = np.ascontiguousarray(R_dense[rows].T)                       # [h, 3n]
        self.b = lw.b[rows][None]
        self.br = lw.br[rows][None]
        self.thr = lw.thr[units]
        self.prog = None
        if backend == "tir":
            from .kernels import DEFAULT_FAST_MATH, CoreProgram
            self.prog = CoreProgram(w_in, w_rec, self.b[0], self.br[0], self.thr, dense_input=layer == 0,
                                    fast_math=DEFAULT_FAST_MATH if fast_math is None else fast_math)
            self.fan_in, self.fan_rec = self.prog.fan_in, self.prog.fan_rec      # = non-zeros per CSR row
        else:
            self.w_in, self.w_rec = w_in, w_rec
            self.fan_in = np.count_nonzero(w_in, axis=1)                         # local fan-out per input unit
            self.fan_rec = np.count_nonzero(w_rec, axis=1)
        self.fan_in_total = int(self.fan_in.sum())
        self.inbox_in: list[tuple[np.ndarray, np.ndarray]] = []
        self.inbox_rec: list[tuple[np.ndarray, np.ndarray]] = []
        self.synops = 0
        self.spikes_in = 0

    def reset(self) -> None:
        self.synops = 0
        self.spikes_in = 0
        self.inbox_in.clear()
        self.inbox_rec.clear()
        if self.prog is not None:
            self.prog.reset()

    def _count(self, dense_x) -> None:
        if dense_x is not None:                       # embedding input: every unit active
            self.synops += self.fan_in_total
        for idx, _ in self.inbox_in:
            self.synops += int(self.fan_in[idx].sum())
        for idx, _ in self.inbox_rec:
            self.synops += int(self.fan_rec[idx].sum())

    def compute(self, c_prev: np.ndarray, dense_x: np.ndarray | None):
        """One step of the core's units -> (c_next [n], y_next [n]); consumes the inboxes."""
        self._count(dense_x)
        if self.prog is not None:
            return self._compute_tir(dense_x)
        n = len(self.units)
        gx = self.b.copy()
        if dense_x is not None:
            gx = gx + dense_x @ self.w_in
        for idx, val in self.inbox_in:
            gx = gx + val[None] @ self.w_in[idx]
        gh = self.br.copy()
        for idx, val in self.inbox_rec:
            gh = gh + val[None] @ self.w_rec[idx]
        self.inbox_in.clear()
        self.inbox_rec.clear()
        c_next, y_next = _cell({}, gx.astype(np.float32), gh.astype(np.float32), c_prev[None, self.units], self.thr)
        assert c_next.shape == (1, n)
        return c_next[0], y_next[0]

    def _compute_tir(self, dense_x):
        p = self.prog
        if p.dense_input:
            p.set_dense_input(dense_x.reshape(-1))
        else:
            p.set_input_events(self.inbox_in)
        p.set_rec_events(self.inbox_rec)
        self.inbox_in.clear()
        self.inbox_rec.clear()
        p.run()                                       # c, y of the core's units updated in place
        return p.c, p.y


class ChipSimulator:
    """Runs a placed stack token by token; `stats()` gives per-core counters since the last `reset`.

    cores: where units sit (`model.CoreMap`: a program's map, or `Placement.core_map()`); its
    ``decoder_core_of`` [V] gives each decoder output's core when the decoder is on chip (cores after the RNN
    cores in ``slot_of_core``), None when the host runs it. profile: chip profile (default loihi-like; its
    `costs.CostModel` charges every event); multicast: routers replicate packets (see `routing`).
    backend: "layer" (default), "tir" or "numpy"."""

    def __init__(self, stack: EGRUStack, cores: CoreMap, backend: str | None = None,
                 fast_math: bool | None = None, profile=None, multicast: bool = False):
        if backend is None:
            backend = "layer"
        if backend not in BACKENDS:
            raise ValueError(f"unknown simulator backend {backend!r} (expected one of {', '.join(BACKENDS)})")
        if profile is None:
            from .profile import load_profile
            profile = load_profile("loihi-like")
        self.backend = backend
        self.stack = stack
        self.core_map = cores
        self.profile = profile
        self.cost = CostModel(profile)
        self.multicast = bool(multicast)
        n = self.n_cores = len(cores.slot_of_core)
        L = len(stack.layers)
        self.core_of = [np.asarray(c, np.int64) for c in cores.core_of]
        fans = [(_gate_fan(lw.W, lw.hidden), _gate_fan(lw.R, lw.hidden)) for lw in stack.layers]
        # projection (host or graded-event cores) and decoder (host or cores): `projection.DecoderSide`
        self.dec = DecoderSide(stack, cores, profile, n)
        self.dec_core_of = self.dec.dec_core_of
        dec_fan, dec_dest = self.dec.first or (None, None)    # cores the last layer's spikes reach after it
        # fan-out tables [presynaptic unit, postsynaptic unit] (int8; the decoder's int32): per step, the
        # synapses on each core are the active rows summed, grouped by the postsynaptic units' cores (`_core_sums`)
        self.fin_T = [np.ascontiguousarray(f[0].T) for f in fans]
        self.frec_T = [np.ascontiguousarray(f[1].T) for f in fans]
        self.fin0 = np.bincount(self.core_of[0], weights=fans[0][0].sum(1), minlength=n).astype(np.int64)
        self.units = [np.bincount(c, minlength=n) for c in self.core_of]
        self.splits = list(cores.splits) if cores.splits else [None] * L
        if any(sp is not None for sp in self.splits):       # partial-sum fan-in split layers (`split`)
            if backend != "layer":
                raise ValueError(f"a fan-in split mapping runs on the layer backend (not {backend!r})")
            reach = split_dest_cores(fans, self.core_of, self.splits, n, dec_fan, dec_dest)
        else:
            reach = dest_cores(fans, self.core_of, n, dec_fan, dec_dest)
        self.mesh = Mesh(profile, max(1, int(np.max(cores.slot_of_core)) // profile.chip.cores + 1))
        tiles = core_tiles(profile, cores.slot_of_core, self.mesh)
        self.dec.connect(tiles, self.mesh, self.multicast)
        self._tiles = tiles
        self._psum = [None if sp is None else psum_routes(sp, self.core_of[l], cores.slot_of_core, self.cost)
                      for l, sp in enumerate(self.splits)]
        self.routes = [UnitRoutes(reach[l], self.core_of[l], tiles, self.mesh, profile, self.multicast)
                       for l in range(L)]
        # arithmetic
        self.cores: list[_Core] = []
        self.layer_cores: list[list[_Core]] = []
        self._targets: dict[tuple[int, bool], list[tuple[_Core, np.ndarray]]] = {}
        arith = default_backend() if backend == "layer" else backend
        for l, lw in enumerate(stack.layers):
            W_dense, R_dense = lw.W.to_dense(), lw.R.to_dense()
            if backend == "layer":
                cs = [_Core(-1, l, np.arange(lw.hidden), lw, W_dense, R_dense, arith, fast_math)]
            else:
                cs = [_Core(int(cid), l, np.nonzero(self.core_of[l] == cid)[0], lw, W_dense, R_dense, arith,
                            fast_math) for cid in np.unique(self.core_of[l])]
            self.cores += cs
            self.layer_cores.append(cs)
            del W_dense, R_dense
        if backend != "layer":
            # per-core inboxes: only spikes with a synapse on the core's units of the target layer (a core id
            # shared by two layers' units must not hand one layer's spikes to the other)
            for l in range(L):
                for forward in (True, False):
                    tl = l + 1 if forward else l
                    if tl < L:
                        self._targets[(l, forward)] = [
                            (core, reach[l][:, core.id] & ((core.fan_in if forward else core.fan_rec) > 0))
                            for core in self.layer_cores[tl]]
        self.reset()

    def reset(self) -> None:
        L, n = len(self.stack.layers), self.n_cores
        self.c = [np.zeros(l.hidden, np.float32) for l in self.stack.layers]
        self.y = [np.zeros(l.hidden, np.float32) for l in self.stack.layers]
        for core in self.cores:
            core.reset()
        self.steps = 0
        self.active = np.zeros(L, np.int64)
        self.last_active = np.zeros(L, np.int64)
        self.last_synops = 0
        self.fires = [np.zeros(l.hidden, np.int64) for l in self.stack.layers]
        z = lambda dt=np.int64: np.zeros(n, dt)  # noqa: E731
        self.counters = {"synops": z(), "dec_synops": z(), "updates": z(), "updates_active": z(),
                         "spikes_out": z(), "messages_out": z(), "messages_in": z(), "hops_out": z(),
                         "psum_messages": z(), "psum_adds": z(), "energy_pj": z(np.float64)}
        for ps in self._psum:
            if ps is not None:
                ps["count"][:] = 0
        self.dec.reset()
        self.phase_ns = np.zeros(L + self.dec.phases)        # layers, then projection and decoder on chip
        self.latency_ns = 0.0
        self.decoder_macs = 0          # event-gated decoder MACs (wherever it runs)
        self.projection_macs = 0       # event-gated MACs of the decoder projection, if any

    def _phase(self, synops, upd_active, upd_inactive, msgs_out, route_pj, max_route_ns,
               extra_ns=0.0) -> float:
        """Energy of the phase into the counters; returns its latency (`CostModel.phase_ns`). `extra_ns`:
        per core, the injection time of its partial-sum messages."""
        pj, ns = self.cost.compute(synops, upd_active, upd_inactive)
        self.counters["energy_pj"] += pj + route_pj
        work = ns + msgs_out * self.cost.message()[1] + extra_ns
        return self.cost.phase_ns(float(work.max()), max_route_ns)

    def step(self, token: int) -> np.ndarray:
        n, cnt = self.n_cores, self.counters
        cpu = self.profile.core.compartments_per_unit
        x = self.stack.embedding[token][None].astype(np.float32)
        a_in = None
        rnn_synops = 0
        for l, lw in enumerate(self.stack.layers):
            a_rec = np.flatnonzero(self.y[l])            # own spikes of the previous step (delivered then)
            if self.backend == "layer":
                core = self.layer_cores[l][0]
                if l:
                    core.inbox_in.append((a_in, self.y[l - 1][a_in]))
                core.inbox_rec.append((a_rec, self.y[l][a_rec]))
                c_new, y_new = core.compute(self.c[l], x if l == 0 else None)
                c_new, y_new = c_new.copy(), y_new.copy()
                if self.splits[l] is not None:
                    synops, per_part = split_synops(self.fin_T[l], self.frec_T[l], None if l == 0 else a_in,
                                                    a_rec, self.splits[l], n)
                else:
                    synops = (self.fin0 if l == 0 else _core_sums(self.fin_T[l], a_in, self.core_of[l], n)) + \
                        _core_sums(self.frec_T[l], a_rec, self.core_of[l], n)
            else:
                c_new = np.zeros(lw.hidden, np.float32)
                y_new = np.zeros(lw.hidden, np.float32)
                synops = np.zeros(n, np.int64)
                for core in self.layer_cores[l]:
                    before = core.synops
                    cn, yn = core.compute(self.c[l], x if l == 0 else None)
                    c_new[core.units] = cn
                    y_new[core.units] = yn
                    synops[core.id] += core.synops - before
            self.c[l], self.y[l] = c_new, y_new
            a = np.flatnonzero(y_new)
            self.last_active[l] = len(a)
            self.fires[l][a] += 1
            if self.backend != "layer" and l + 1 < len(self.stack.layers):
                self._deliver(l, y_new, forward=True)
            src = self.core_of[l][a]
            R = self.routes[l]
            spk = np.bincount(src, minlength=n)
            msgs = np.bincount(src, weights=R.n_msgs[a], minlength=n).astype(np.int64)
            cnt["synops"] += synops
            cnt["updates"] += self.units[l] * cpu
            cnt["updates_active"] += spk * cpu
            cnt["spikes_out"] += spk
            cnt["messages_out"] += msgs
            cnt["messages_in"] += R.reach[a].sum(0)
            cnt["hops_out"] += np.bincount(src, weights=R.hops[a], minlength=n).astype(np.int64)
            rnn_synops += int(synops.sum())
            route_pj = np.bincount(src, weights=R.pj[a], minlength=n)
            max_route = float(R.max_ns[a].max()) if len(a) else 0.0
            adds, extra_ns, part_upd, part_act = 0, 0.0, 0, 0
            if self._psum[l] is not None:     # partial sums: one graded message per (unit, remote part) with events
                ps = self._psum[l]
                # a remote part's compartments_per_unit accumulators update every token: like a unit that fired
                # in a token the part sends its partial sum, like a silent one otherwise
                part_upd = np.bincount(ps["src"][ps["has"]], minlength=n) * cpu
                cnt["updates"] += part_upd
                sent = ps["has"] & (per_part[:, 1:] > 0)
                ps["count"] += sent
                snd, rcv = ps["src"][sent], ps["dst"][sent]
                p_out, p_in = np.bincount(snd, minlength=n), np.bincount(rcv, minlength=n)
                adds = p_in * cpu                                 # added into the home's gate accumulators
                cnt["psum_messages"] += p_out
                cnt["psum_adds"] += adds
                cnt["messages_out"] += p_out
                cnt["messages_in"] += p_in
                cnt["hops_out"] += np.bincount(snd, weights=ps["hops"][sent], minlength=n).astype(np.int64)
                route_pj = route_pj + np.bincount(snd, weights=ps["pj"][sent], minlength=n)
                extra_ns = p_out * ps["inject_ns"]
                part_act = p_out * cpu
                cnt["updates_active"] += part_act
                max_route += float(ps["link_ns"][sent].max()) if sent.any() else 0.0
            ph = self._phase(synops + adds, spk * cpu + part_act, (self.units[l] - spk) * cpu + part_upd - part_act,
                             msgs, route_pj, max_route,
                             extra_ns)
            self.phase_ns[l] += ph
            self.latency_ns += ph
            a_in = a
        if self.backend != "layer":
            for l in range(len(self.stack.layers)):
                self._deliver(l, self.y[l], forward=False)
        logits = self.dec.step(self, self.y[-1], a_in)       # projection and decoder (`projection`)
        self.active += self.last_active
        self.steps += 1
        self.last_synops = rnn_synops
        return logits.astype(np.float32)

    def _deliver(self, layer: int, y: np.ndarray, forward: bool) -> None:
        active = np.flatnonzero(y)
        if not len(active):
            return
        for core, mask in self._targets.get((layer, forward), ()):
            keep = active[mask[active]]
            if len(keep):
                (core.inbox_in if forward else core.inbox_rec).append((keep, y[keep]))
                core.spikes_in += len(keep)

    def link_messages(self) -> np.ndarray:
        """Messages (packets) that crossed each mesh link since `reset` ([n_links], `mesh.links` order)."""
        loads = sum(R.link_loads(f) for f, R in zip(self.fires, self.routes))
        for ps in self._psum:
            if ps is not None:
                psum_link_loads(ps, self._tiles, self.mesh, loads)
        return loads + self.dec.link_loads()

    def stats(self) -> dict:
        n = max(self.steps, 1)
        synops = self.counters["synops"].astype(np.float64)
        return {"steps": self.steps, "synops_total": synops, "spikes_in_total":
                self.counters["messages_in"].astype(np.float64),
                "activity": (self.active / (n * np.array([l.hidden for l in self.stack.layers]))).tolist()}
