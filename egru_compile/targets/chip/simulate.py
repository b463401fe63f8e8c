"""Cycle-free functional simulator of a placed EGRU: every core holds the gate rows of its units (its
incoming synapses, quantized as the chip holds them), receives spike events through its inbox, and sends its
units' spikes to the cores its routing table names. One call of `step` is one time step (one token).

The simulator gives the same outputs as the unplaced model with the same weights (the per-core partition only
splits the sums), and counts what the chip does: synaptic ops and spikes delivered per core.
"""
from __future__ import annotations

import numpy as np

from ...ir.ops import OPS
from ..stack import EGRUStack
from .network import LayerNet
from .placement import Placement, _dest_cores

_cell = OPS["egru_cell"].compute


class _Core:
    def __init__(self, cid: int, layer: int, units: np.ndarray, lw):
        self.id = cid
        self.layer = layer
        self.units = units
        h = lw.hidden
        rows = np.concatenate([units, h + units, 2 * h + units])
        # local synapse blocks, stored input-major (one row per presynaptic unit = its local CSC column)
        self.w_in = np.ascontiguousarray(lw.W.to_dense()[rows].T)           # [n_in, 3n]
        self.w_rec = np.ascontiguousarray(lw.R.to_dense()[rows].T)          # [h, 3n]
        self.fan_in = np.count_nonzero(self.w_in, axis=1)                    # local fan-out per input unit
        self.fan_rec = np.count_nonzero(self.w_rec, axis=1)
        self.b = lw.b[rows][None]
        self.br = lw.br[rows][None]
        self.thr = lw.thr[units]
        self.inbox_in: list[tuple[np.ndarray, np.ndarray]] = []
        self.inbox_rec: list[tuple[np.ndarray, np.ndarray]] = []
        self.synops = 0
        self.spikes_in = 0

    def compute(self, c_prev: np.ndarray, dense_x: np.ndarray | None):
        n = len(self.units)
        gx = self.b.copy()
        if dense_x is not None:                       # embedding input: every unit active
            gx = gx + dense_x @ self.w_in
            self.synops += int(self.fan_in.sum())
        for idx, val in self.inbox_in:
            gx = gx + val[None] @ self.w_in[idx]
            self.synops += int(self.fan_in[idx].sum())
        gh = self.br.copy()
        for idx, val in self.inbox_rec:
            gh = gh + val[None] @ self.w_rec[idx]
            self.synops += int(self.fan_rec[idx].sum())
        self.inbox_in.clear()
        self.inbox_rec.clear()
        c_next, y_next = _cell({}, gx.astype(np.float32), gh.astype(np.float32), c_prev[None, self.units], self.thr)
        assert c_next.shape == (1, n)
        return c_next[0], y_next[0]


class ChipSimulator:
    """Runs a placed stack token by token; `stats()` gives per-core counters since the last `reset`."""

    def __init__(self, stack: EGRUStack, nets: list[LayerNet], placement: Placement):
        self.stack = stack
        self.placement = placement
        self.cores: list[_Core] = []
        self.layer_cores: list[list[_Core]] = []
        for l, lw in enumerate(stack.layers):
            cs = []
            for cid in np.unique(placement.core_of[l]):
                units = np.nonzero(placement.core_of[l] == cid)[0]
                core = _Core(int(cid), l, units, lw)
                cs.append(core)
                self.cores.append(core)
            self.layer_cores.append(cs)
        self.by_id = {}
        for c in self.cores:
            self.by_id.setdefault(c.id, []).append(c)
        # routing tables: for each source layer, unit -> destination core ids (own layer: recurrent; next: input)
        reach = _dest_cores(nets, placement.core_of, placement.n_cores)
        self.routes = [[np.nonzero(r)[0] for r in reach[l]] for l in range(len(nets))]
        self.reset()

    def reset(self) -> None:
        self.c = [np.zeros(l.hidden, np.float32) for l in self.stack.layers]
        self.y = [np.zeros(l.hidden, np.float32) for l in self.stack.layers]
        for core in self.cores:
            core.synops = 0
            core.spikes_in = 0
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
        active = np.nonzero(y)[0]
        target_layer = layer + 1 if forward else layer
        per_core: dict[int, list[int]] = {}
        for i in active:
            for cid in self.routes[layer][i]:
                per_core.setdefault(int(cid), []).append(int(i))
        for cid, units in per_core.items():
            idx = np.asarray(units, np.int64)
            for core in self.by_id.get(cid, []):
                if core.layer != target_layer:
                    continue
                inbox = core.inbox_in if forward else core.inbox_rec
                local = core.w_in if forward else core.w_rec
                # only spikes with a synapse on this core are delivered (routing is per core, not per layer)
                keep = idx[np.count_nonzero(local[idx], axis=1) > 0] if len(idx) else idx
                if len(keep):
                    inbox.append((keep, y[keep]))
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
