"""Per-core TIR programs for the chip simulator: each core's slice of a layer runs on the TVM target's
stand-alone kernel library (``targets/tvm/library.py``: ``event_matvec``, ``dense_matvec``, ``update``, all
sizes symbolic, compiled once per process).

A core holds the gate rows (z, r, g) of its ``n`` units: its local synapse blocks ``W_loc [n_in, 3n]`` and
``R_loc [h, 3n]`` (float32, dequantized exactly as the numpy simulator holds them), packed input-major CSR
(per presynaptic unit: its local fan-out = output indices 0..3n and values). One time step of a core::

    gx = dense_matvec(W_loc, x)              layer 0 (dense embedding row: every input active)
       | event_matvec(W_loc, input events)   layers > 0 (spikes of the layer below delivered to this core)
    gh = event_matvec(R_loc, recurrent events)   (own layer's spikes of the previous step)
    update(gx, gh, thr, c, y, ei, ev, en)    EGRU cell of the core's units; c, y in place + their events

Every buffer is a TVM tensor allocated once per core; the simulator writes inputs through zero-copy numpy
views (``tvm.runtime.tensor`` copies cost ~17 us each, a view write costs nothing extra).
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["tvm_available", "kernel_library", "CoreProgram", "DEFAULT_FAST_MATH"]

# parity with the numpy cell (np.exp / np.tanh) must stay <= 1e-5 over long runs; the polynomial exp of the
# fast path is ~1e-7 relative, the same order as the accumulation-order rounding, so it is the default
DEFAULT_FAST_MATH = True
INDEX_DTYPE = "int32"
INTERLEAVE = 8
#: the kernel-library functions a core program calls
CORE_KERNELS = ("event_matvec", "dense_matvec", "update")

_LIBS: dict[tuple, object] = {}
_LOCK = threading.Lock()
_AVAILABLE: bool | None = None


def tvm_available() -> bool:
    """True when tvm (with the tirx script parser the kernel library needs) imports."""
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            import tvm  # noqa: F401
            import tvm.script  # noqa: F401
            _AVAILABLE = True
        except Exception:  # ImportError, or a broken native library
            _AVAILABLE = False
    return _AVAILABLE


def kernel_library(fast_math: bool = DEFAULT_FAST_MATH):
    """The compiled kernel library (built once per process and option set)."""
    key = (INDEX_DTYPE, bool(fast_math), INTERLEAVE)
    with _LOCK:
        lib = _LIBS.get(key)
        if lib is None:
            from ..tvm.library import build_kernel_library
            lib = build_kernel_library(INDEX_DTYPE, fast_math=bool(fast_math), interleave=INTERLEAVE,
                                       names=CORE_KERNELS)
            _LIBS[key] = lib
        return lib


def _csr(block: np.ndarray):
    """Dense local block [n_pre, 3n] -> input-major CSR with one padding slot in idx/val (the kernels'
    buffers are never empty; indptr[-1] = the real nnz, so the slot is never read)."""
    from ..tvm.layout import to_input_major
    ptr, idx, val = to_input_major(block, INDEX_DTYPE)
    return ptr, np.append(idx, np.zeros(1, idx.dtype)), np.append(val, np.float32(0))


class CoreProgram:
    """TIR program + buffers of one core. ``w_in [n_in, 3n]`` and ``w_rec [h, 3n]`` are the local blocks in
    input-major layout (row i = presynaptic unit i's local synapses); b, br [3n]; thr [n].

    Inputs are written with :meth:`set_input_events` / :meth:`set_rec_events` / :meth:`set_dense_input`,
    then :meth:`run` computes one step; ``c`` and ``y`` (numpy views, length n) hold the core's state."""

    def __init__(self, w_in: np.ndarray, w_rec: np.ndarray, b, br, thr, dense_input: bool,
                 fast_math: bool = DEFAULT_FAST_MATH):
        import tvm
        self.lib = kernel_library(fast_math)
        self._event_mv = self.lib["event_matvec"]
        self._dense_mv = self.lib["dense_matvec"]
        self._update = self.lib["update"]
        n_in, m = w_in.shape
        h = w_rec.shape[0]
        n = m // 3
        self.n, self.n_in, self.h = n, n_in, h
        self.dense_input = dense_input
        wp, wi, wv = _csr(w_in)
        rp, ri, rv = _csr(w_rec)
        # local fan-out per presynaptic unit (= number of non-zero local synapses)
        self.fan_in = np.diff(wp).astype(np.int64)
        self.fan_rec = np.diff(rp).astype(np.int64)
        f32, i32 = np.float32, np.int32
        arrays = {
            "w_ptr": wp, "w_idx": wi, "w_val": wv, "r_ptr": rp, "r_idx": ri, "r_val": rv,
            "b": np.asarray(b, f32).reshape(-1), "br": np.asarray(br, f32).reshape(-1),
            "thr": np.asarray(thr, f32).reshape(-1),
            "gx": np.zeros(m, f32), "gh": np.zeros(m, f32),
            "c": np.zeros(n, f32), "y": np.zeros(n, f32),
            "oi": np.zeros(n, i32), "ov": np.zeros(n, f32), "on": np.zeros(1, i32),   # own events (out)
            "xi": np.zeros(max(n_in, 1), i32), "xv": np.zeros(max(n_in, 1), f32), "xn": np.zeros(1, i32),
            "ri": np.zeros(max(h, 1), i32), "rv": np.zeros(max(h, 1), f32), "rn": np.zeros(1, i32),
            "x": np.zeros(max(n_in, 1), f32),
        }
        self.t = {k: tvm.runtime.tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}
        self.v = {k: np.from_dlpack(t) for k, t in self.t.items()}
        t = self.t
        self.c = self.v["c"]
        self.y = self.v["y"]
        self._gx_ev = (t["w_ptr"], t["w_idx"], t["w_val"], t["xi"], t["xv"], t["xn"], t["b"], t["gx"])
        self._gx_de = (t["w_ptr"], t["w_idx"], t["w_val"], t["x"], t["b"], t["gx"])
        self._gh = (t["r_ptr"], t["r_idx"], t["r_val"], t["ri"], t["rv"], t["rn"], t["br"], t["gh"])
        self._upd = (t["gx"], t["gh"], t["thr"], t["c"], t["y"], t["oi"], t["ov"], t["on"])

    def reset(self) -> None:
        for k in ("c", "y", "on", "xn", "rn"):
            self.v[k][:] = 0

    @staticmethod
    def _fill(vi, vv, vn, events, cap: int) -> None:
        if not events:
            vn[0] = 0
            return
        if len(events) == 1:
            idx, val = events[0]
        else:
            idx = np.concatenate([e[0] for e in events])
            val = np.concatenate([e[1] for e in events])
            if len(idx) > cap:  # repeated deliveries of one unit: merge them (sum) to fit the event list
                dense = np.zeros(cap, np.float32)
                np.add.at(dense, idx, val)
                idx = np.unique(idx)
                val = dense[idx]
        k = len(idx)
        vi[:k] = idx
        vv[:k] = val
        vn[0] = k

    def set_input_events(self, events: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self._fill(self.v["xi"], self.v["xv"], self.v["xn"], events, self.n_in)

    def set_rec_events(self, events: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self._fill(self.v["ri"], self.v["rv"], self.v["rn"], events, self.h)

    def set_dense_input(self, x: np.ndarray) -> None:
        self.v["x"][:self.n_in] = x

    def run(self) -> None:
        """One step: gx, gh, then the cell update of the core's units (c, y updated in place)."""
        if self.dense_input:
            self._dense_mv(*self._gx_de)
        else:
            self._event_mv(*self._gx_ev)
        self._event_mv(*self._gh)
        self._update(*self._upd)
