"""The state of B streams for the shared-read kernels (`shared.py`): :class:`SharedStreams` holds the
stream-minor states, the per-part split points and the I/O tensors, and calls ``egru_shared_run`` /
``egru_shared_score``; `TVMStepRunner` uses it when its spec allows (`shared.supports_shared`)."""
from __future__ import annotations

import os

import numpy as np

from .shared import LANES, shared_arg_names, shared_state_params, split_names

__all__ = ["SharedStreams", "split_points", "row_bounds", "set_kernel_threads", "stream_io"]


def split_points(ptr, idx, bounds) -> np.ndarray:
    """int32 [n_in, parts + 1]: per column the first non-zero of each part of the rows (part p: rows
    ``bounds[p]`` .. ``bounds[p + 1]``); indices ascend within a column."""
    ptr = np.asarray(ptr, np.int64)
    idx = np.asarray(idx).astype(np.int64)
    parts = len(bounds) - 1
    sp = np.empty((len(ptr) - 1, parts + 1), np.int32)
    sp[:, 0], sp[:, parts] = ptr[:-1], ptr[1:]
    for p in range(1, parts):
        below = np.concatenate([[0], np.cumsum(idx < int(bounds[p]))])
        sp[:, p] = ptr[:-1] + below[ptr[1:]] - below[ptr[:-1]]
    return sp


def row_bounds(idx_arrays, n_rows: int, parts: int) -> np.ndarray:
    """int32 [parts + 1]: accumulator rows cut into `parts` ranges holding about equal numbers of the
    non-zeros in `idx_arrays` (a layer's W and R share its accumulator)."""
    per_row = sum(np.bincount(np.asarray(i).astype(np.int64), minlength=n_rows) for i in idx_arrays)
    cum = np.concatenate([[0], np.cumsum(per_row)])
    b = np.searchsorted(cum, cum[-1] * np.arange(parts + 1) / parts, side="left")
    b[0], b[-1] = 0, n_rows
    return np.maximum.accumulate(np.clip(b, 0, n_rows)).astype(np.int32)


_POOL: dict = {}


def set_kernel_threads(n: int) -> None:
    """Use `n` workers of the calling thread's TVM thread pool for the parallel loops. TVM runs a parallel loop
    on the calling thread alone when its concurrency limit (TVM_NUM_THREADS unless configured) is 1, sizes a
    thread's pool once, and configuring sets that limit to the number of CPUs listed: so the list has
    max(n, cores) entries (threads are not pinned to them unless TVM_BIND_THREADS=1)."""
    import threading
    import tvm
    key = threading.get_ident()
    if _POOL.get(key) == int(n):
        return
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    cpus = [str(i) for i in range(max(int(n), os.cpu_count() or 1))]
    tvm.get_global_func("runtime.config_threadpool")(-3, int(n), cpus)     # -3: threads share the cores
    _POOL[key] = int(n)


def stream_io(cache: dict, T: int, B: int, L: int, score: bool):
    """The I/O tensors of a T-step call on B streams (tokens [T, B], with `score` targets and nll, stats
    [T, B, L+1]) and their numpy views, made once per (T, score) in `cache`."""
    import tvm
    key = (T, score)
    bufs = cache.get(key)
    if bufs is None:
        shapes = [((T, B), np.int32)] + ([((T, B), np.int32), ((T, B), np.float64)] if score else []) \
            + [((T, B, L + 1), np.int32)]
        tensors = [tvm.runtime.tensor(np.zeros(s, dt)) for s, dt in shapes]
        bufs = (tensors, [np.from_dlpack(t) for t in tensors])
        cache[key] = bufs
    return bufs


class SharedStreams:
    """B streams (blocks of LANES) for the shared-read kernels of `module`, weights from `rt` (a
    `TVMStepRunner`); `threads` = parts of the scatter / update / decoder run by TVM's thread pool."""

    def __init__(self, rt, module, batch: int, threads: int = 1):
        import tvm
        spec = rt.spec
        self.spec, self.B, self.threads = spec, int(batch), max(1, int(threads))
        self._run_fn, self._score_fn = module["egru_shared_run"], module["egru_shared_score"]
        NB = -(-self.B // LANES)
        sizes = {"NB": NB, "B": self.B}
        st = {}
        for name, shape, dt in shared_state_params(spec):
            st[name] = np.zeros([sizes[d[0]] * d[1] if isinstance(d, tuple) else sizes.get(d, d) for d in shape], dt)
        P = self.threads
        names = split_names(spec)
        for l in range(len(spec.hidden_sizes)):
            mats = [m for m in names if int(m[1:]) == l]
            st[f"rb{l}"] = row_bounds([rt.views[f"{m}_idx"] for m in mats], spec.acc_size(l), P)
            for m in mats:
                st[f"{m}_sp"] = split_points(rt.views[f"{m}_ptr"], rt.views[f"{m}_idx"], st[f"rb{l}"])
        self.tensors = {k: tvm.runtime.tensor(v) for k, v in st.items()}
        self._red = tvm.runtime.tensor(np.zeros(self.B * 16, np.float64))
        self.views = {k: np.from_dlpack(v) for k, v in self.tensors.items()}
        self._args = [self.tensors[n] if n in self.tensors else rt.tensors[n] for n in shared_arg_names(spec)]
        self._logits = tvm.runtime.tensor(np.zeros(self.B * spec.vocab_size, np.float32))
        self._logits_np = np.from_dlpack(self._logits).reshape(self.B, spec.vocab_size)
        self._bufs: dict = {}

    def reset(self) -> None:
        for k, v in self.views.items():
            if not (k.endswith("_sp") or k.startswith("rb")):
                v[...] = 0

    def _io(self, T: int, score: bool):
        return stream_io(self._bufs, T, self.B, len(self.spec.hidden_sizes), score)

    def _call(self, fn, *args):
        set_kernel_threads(self.threads)
        fn(*args)

    def step(self, tokens):
        """tokens int [B] -> (logits float32 [B, V] (a view the next call overwrites), stats int32 [B, L+1])."""
        (t_tok, t_st), (n_tok, n_st) = self._io(1, False)
        n_tok[0] = np.asarray(tokens).reshape(-1)
        self._call(self._run_fn, self.threads, t_tok, *self._args, self._logits, t_st)
        return self._logits_np, n_st[0].copy()

    def score(self, tokens, targets):
        """tokens, targets int [T, B] -> (nll float64 [T, B], stats int32 [T, B, L+1]) in one call."""
        tok = np.asarray(tokens)
        (t_tok, t_tg, t_nll, t_st), (n_tok, n_tg, n_nll, n_st) = self._io(tok.shape[0], True)
        n_tok[...] = tok
        n_tg[...] = np.asarray(targets)
        self._call(self._score_fn, self.threads, t_tok, t_tg, *self._args, self._logits, self._red, t_nll, t_st)
        return n_nll.copy(), n_st.copy()
