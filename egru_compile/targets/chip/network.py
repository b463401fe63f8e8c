"""The EGRU stack seen as a network of units for placement: per-unit synapse counts and the connectivity
(which unit's spikes reach which unit), plus activity measured on calibration tokens.

Synapse ownership: a unit owns its *incoming* synapses — the three gate rows (z, r, g) of its layer's input
matrix W and recurrent matrix R. A presynaptic spike is multicast once to every core that holds one of its
targets; the core then visits the spike's synapse list (its local CSC column).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..stack import EGRUStack


@dataclass
class LayerNet:
    index: int
    n_in: int
    hidden: int
    events_in: bool
    syn_in: np.ndarray          # [h] incoming synapses from the layer input (3 gates)
    syn_rec: np.ndarray         # [h] incoming recurrent synapses
    conn_in: np.ndarray         # [h, n_in] int8: number of gate synapses from input unit i to unit j (0..3)
    conn_rec: np.ndarray        # [h, h]
    # measured on calibration tokens (None without calibration)
    fires: np.ndarray | None = None        # [h] number of tokens the unit fired (y != 0)
    mac_events: np.ndarray | None = None   # [h] total MACs into the unit over the calibration tokens

    @property
    def synapses(self) -> np.ndarray:
        return self.syn_in + self.syn_rec


def _unit_connectivity(M, h: int) -> np.ndarray:
    """[h, n_in] synapse count per (unit, presynaptic unit), gates summed."""
    pattern = np.zeros(M.shape, dtype=np.int8)
    csr = M if M.fmt == "csr" else M.convert("csr")
    rows = np.repeat(np.arange(M.shape[0]), np.diff(csr.indptr))
    pattern[rows, csr.indices] = 1
    return pattern[:h] + pattern[h:2 * h] + pattern[2 * h:3 * h]


def build_network(stack: EGRUStack) -> list[LayerNet]:
    nets = []
    for lw in stack.layers:
        ci = _unit_connectivity(lw.W, lw.hidden)
        cr = _unit_connectivity(lw.R, lw.hidden)
        nets.append(LayerNet(lw.index, lw.n_in, lw.hidden, lw.events_in, ci.sum(1, dtype=np.int64),
                             cr.sum(1, dtype=np.int64), ci, cr))
    return nets


def attach_activity(nets: list[LayerNet], fires_in: list[np.ndarray], fires_rec: list[np.ndarray],
                    fires_out: list[np.ndarray], tokens: int) -> None:
    """Per-unit MACs from event counts: `fires_in[l][i]` = tokens where input unit i of layer l was active
    (the embedding input counts as active every token), `fires_rec[l][i]` = tokens where unit i's recurrent
    input (its previous y) was active, `fires_out[l]` = tokens where the unit fired. Integer arithmetic, so
    the per-unit MACs add up exactly to the whole-model count."""
    for net, fi, fr, fo in zip(nets, fires_in, fires_rec, fires_out):
        net.mac_events = net.conn_in.astype(np.int64) @ fi.astype(np.int64) + \
            net.conn_rec.astype(np.int64) @ fr.astype(np.int64)
        net.fires = fo.astype(np.int64)
        net.tokens = tokens
