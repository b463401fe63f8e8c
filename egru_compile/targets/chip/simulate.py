"""Cycle-free functional simulator of a placed EGRU: every core holds the gate rows of its units (its
incoming synapses, quantized as the chip holds them), receives spike events through its inbox, and sends its
units' spikes to the cores its routing table names. One call of `step` is one time step (one token).

The simulator gives the same outputs as the unplaced model with the same weights (the per-core partition only
splits the sums), and counts what the chip does: synaptic ops and spikes delivered per core.

Backends (``ChipSimulator(..., backend=)``):

* ``"tir"`` (default when tvm imports): each core's slice is a compiled TIR program (`kernels.CoreProgram`:
  the TVM target's ``dense_matvec`` / ``event_matvec`` / ``update`` kernels over the core's input-major CSR
  synapse blocks and preallocated per-core event lists, accumulators and state);
* ``"numpy"``: the reference — dense local blocks, one matvec per inbox message, the IR's ``egru_cell``.

Both deliver the same events and count the same synaptic ops and spikes.
"""
from __future__ import annotations

import numpy as np

from ...ir.ops import OPS
from ..stack import EGRUStack
from .network import LayerNet
from .placement import Placement, _dest_cores

_cell = OPS["egru_cell"].compute

BACKENDS = ("tir", "numpy")


def default_backend() -> str:
    from .kernels import tvm_available
    return "tir" if tvm_available() else "numpy"


class _Core:
    def __init__(self, cid: int, layer: int, units: np.ndarray, lw, W_dense: np.ndarray, R_dense: np.ndarray,
                 backend: str = "numpy", fast_math: bool | None = None):
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

    backend: "tir" (per-core compiled TIR programs; default when tvm imports) or "numpy" (reference).
    fast_math: TIR backend only — polynomial exp in the cell update (None: `kernels.DEFAULT_FAST_MATH`)."""

    def __init__(self, stack: EGRUStack, nets: list[LayerNet], placement: Placement, backend: str | None = None,
                 fast_math: bool | None = None):
        if backend is None:
            backend = default_backend()
        if backend not in BACKENDS:
            raise ValueError(f"unknown simulator backend {backend!r} (expected one of {', '.join(BACKENDS)})")
        self.backend = backend
        self.stack = stack
        self.placement = placement
        self.cores: list[_Core] = []
        self.layer_cores: list[list[_Core]] = []
        for l, lw in enumerate(stack.layers):
            W_dense, R_dense = lw.W.to_dense(), lw.R.to_dense()
            cs = []
            for cid in np.unique(placement.core_of[l]):
                units = np.nonzero(placement.core_of[l] == cid)[0]
                core = _Core(int(cid), l, units, lw, W_dense, R_dense, backend, fast_math)
                cs.append(core)
                self.cores.append(core)
            self.layer_cores.append(cs)
            del W_dense, R_dense
        # routing tables: for each source layer, unit -> destination core ids (own layer: recurrent; next: input)
        reach = _dest_cores(nets, placement.core_of, placement.n_cores)
        # delivery masks per (source layer, direction): for every core of the target layer, which source units
        # it receives — routed to its core id AND with a synapse on this core (routing is per core, not per
        # layer, so a core id shared by two layers' cores must not hand one layer's spikes to the other)
        self._targets: dict[tuple[int, bool], list[tuple[_Core, np.ndarray]]] = {}
        for l in range(len(nets)):
            for forward in (True, False):
                tl = l + 1 if forward else l
                if tl >= len(stack.layers):
                    continue
                self._targets[(l, forward)] = [
                    (core, reach[l][:, core.id] & ((core.fan_in if forward else core.fan_rec) > 0))
                    for core in self.layer_cores[tl]]
        self.reset()

    def reset(self) -> None:
        self.c = [np.zeros(l.hidden, np.float32) for l in self.stack.layers]
        self.y = [np.zeros(l.hidden, np.float32) for l in self.stack.layers]
        for core in self.cores:
            core.reset()
        self.steps = 0
        self.active = np.zeros(len(self.stack.layers), np.int64)
        self.last_active = np.zeros(len(self.stack.layers), np.int64)
        self.last_synops = 0

    def step(self, token: int) -> np.ndarray:
        before = sum(c.synops for c in self.cores)
        x = self.stack.embedding[token][None].astype(np.float32)
        for l, lw in enumerate(self.stack.layers):
            # recurrent spikes of the previous time step were delivered at its end
            c_new = np.zeros(lw.hidden, np.float32)
            y_new = np.zeros(lw.hidden, np.float32)
            for core in self.layer_cores[l]:
                cn, yn = core.compute(self.c[l], x if l == 0 else None)
                c_new[core.units] = cn
                y_new[core.units] = yn
            self.c[l], self.y[l] = c_new, y_new
            self.last_active[l] = np.count_nonzero(y_new)
            if l + 1 < len(self.stack.layers):
                self._send_forward(l, y_new)
        for l in range(len(self.stack.layers)):
            self._send_recurrent(l, self.y[l])
        self.active += self.last_active
        self.steps += 1
        self.last_synops = sum(c.synops for c in self.cores) - before
        y_last = self.y[-1]
        return (y_last[None] @ self.stack.decoder_weight.T + self.stack.decoder_bias).astype(np.float32)[0]

    def _send_forward(self, layer, y):
        self._deliver(layer, y, forward=True)

    def _send_recurrent(self, layer, y):
        self._deliver(layer, y, forward=False)

    def _deliver(self, layer: int, y: np.ndarray, forward: bool) -> None:
        active = np.flatnonzero(y)
        if not len(active):
            return
        for core, mask in self._targets.get((layer, forward), ()):
            # only spikes with a synapse on this core are delivered (routing is per core, not per layer)
            keep = active[mask[active]]
            if len(keep):
                (core.inbox_in if forward else core.inbox_rec).append((keep, y[keep]))
                core.spikes_in += len(keep)

    def stats(self) -> dict:
        n = max(self.steps, 1)
        synops = np.zeros(self.placement.n_cores)
        spikes = np.zeros(self.placement.n_cores)
        for c in self.cores:
            synops[c.id] += c.synops
            spikes[c.id] += c.spikes_in
        return {"steps": self.steps, "synops_total": synops, "spikes_in_total": spikes,
                "activity": (self.active / (n * np.array([l.hidden for l in self.stack.layers]))).tolist()}
