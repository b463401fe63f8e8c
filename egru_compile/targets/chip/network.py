"""The EGRU stack seen as a network of units for placement: per-unit synapse counts and the connectivity
(which unit's spikes reach which unit), plus activity measured on calibration tokens; and the one reach
computation (`dest_cores`: which cores a unit's spike must reach under a unit -> core map), used by the
placement estimate and the simulator alike.

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
    tokens: int = 0                        # calibration tokens `fires` and `mac_events` were counted on
    source_fires: np.ndarray | None = None  # [n_in + h] tokens each source (input, then recurrent) was active

    def rate(self, calibrated: bool) -> np.ndarray | None:
        """Spikes per token of each unit (None without calibration)."""
        return self.fires / self.tokens if calibrated and self.tokens and self.fires is not None else None

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
        net.source_fires = np.concatenate([fi, fr]).astype(np.int64)


def group_sum(rows: np.ndarray, group: np.ndarray, k: int, dtype=np.float64, weights=None,
              compact: bool = False):
    """[k, cols]: sum of `rows` (times `weights` per row) over the rows of each group (sorted reduceat; no
    one-hot matrix, empty groups are zero). ``compact``: (present group ids, [n_present, cols]) instead."""
    order = np.argsort(group, kind="stable")
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    ids = g[starts]
    out = np.zeros((len(ids) if compact else k, rows.shape[1]), dtype)
    for lo in range(0, len(starts), 256):                 # chunks of groups bound the temporary
        s = starts[lo:lo + 257]
        a, b = s[0], (s[-1] if len(s) > 256 else len(g))
        block = rows[order[a:b]].astype(dtype, copy=False)
        if weights is not None:
            block = block * weights[order[a:b], None]
        dest = np.arange(lo, lo + len(s[:256])) if compact else ids[lo:lo + 256]
        red = np.logical_or if dtype is bool else np.add          # bool: "any" without widening
        out[dest] = red.reduceat(block, s[:256] - a, axis=0)
    return (ids, out) if compact else out


def _or_group_any(reach: np.ndarray, fan: np.ndarray, core_of: np.ndarray) -> None:
    """reach[i, c] |= any unit on core c has a synapse from presynaptic unit i (`fan` [h, n_pre] per unit;
    a sorted OR-reduction over the cores that hold these units only, no unit x core one-hot product)."""
    ids, pres = group_sum(fan > 0, np.asarray(core_of, np.int64), reach.shape[1], bool, compact=True)
    reach[:, ids] |= pres.T


def dest_cores(fans: list[tuple[np.ndarray, np.ndarray]], core_of: list[np.ndarray], n_cores: int,
               dec_fan: np.ndarray | None = None, dec_core_of: np.ndarray | None = None) -> list[np.ndarray]:
    """Per source layer l: [h_l, n_cores] bool — unit i has a synapse on core c (own layer's recurrent
    synapses, the next layer's input synapses, or the decoder's when it is on chip). `fans[l]` = (input,
    recurrent) synapse counts [h_l, n_pre] of layer l's units (`LayerNet.conn_in/conn_rec`, or the simulator's
    counts of the stored non-zero values)."""
    out = []
    L = len(fans)
    for l in range(L):
        reach = np.zeros((fans[l][1].shape[1], n_cores), bool)
        _or_group_any(reach, fans[l][1], core_of[l])
        if l + 1 < L:
            _or_group_any(reach, fans[l + 1][0], core_of[l + 1])
        elif dec_fan is not None:
            _or_group_any(reach, dec_fan, dec_core_of)
        out.append(reach)
    return out


def net_reach(nets: list[LayerNet], core_of: list[np.ndarray], n_cores: int) -> list[np.ndarray]:
    """`dest_cores` of the placement's view of the network (connectivity of `build_network`)."""
    return dest_cores([(n.conn_in, n.conn_rec) for n in nets], core_of, n_cores)


def release_freed_heap() -> None:
    """Give memory the process has freed but the C allocator still holds back to the system (glibc's
    ``malloc_trim``; a no-op elsewhere). The frontend and the passes free gigabytes of small and mid-size
    blocks (27M synapses: 1.3 GB of a 2.8 GB resident set) that the placement's and the simulator's large
    arrays (fresh memory maps) would never reuse."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
