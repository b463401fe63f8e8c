"""Test-side references for the TVM kernels.

* :func:`reference_step` / :func:`reference_run`: one EGRU LM step from dense numpy weights, composed of the IR
  interpreter's op semantics (``OPS["embedding"]``, ``OPS["linear"]``, ``OPS["egru_cell"]``), which define what
  every target computes — not a second hand-written EGRU.
* :func:`rand_model`: a random pruned EGRU LM as numpy arrays (EvNN layout) for the kernel tests.
* :func:`check_streams_equal_batch1`: each stream of a batched run against the same runner's batch-1 run.
* :func:`extra_kernels`: kernels only the tests compile — event compression on its own and a plain (one row per
  pass) event decoder — built from the package's TIR blocks (`egru_compile.targets.tvm.tir`).
"""
from __future__ import annotations

import numpy as np

from egru_compile.ir.ops import OPS


def rand_model(vocab=30, emb=16, hidden=(24, 16), sparsity=0.85, seed=0):
    """Random pruned EGRU LM (numpy, EvNN layout) with thresholds that give a few tens of % activity."""
    rng = np.random.default_rng(seed)
    E = rng.uniform(-0.5, 0.5, (vocab, emb)).astype(np.float32)
    layers, n_in = [], emb
    for h in hidden:
        W = (rng.standard_normal((n_in, 3 * h)) / np.sqrt(n_in * (1 - sparsity))).astype(np.float32)
        R = (rng.standard_normal((h, 3 * h)) / np.sqrt(h * (1 - sparsity))).astype(np.float32)
        W[rng.random(W.shape) < sparsity] = 0
        R[rng.random(R.shape) < sparsity] = 0
        layers.append(dict(W=W, R=R, b=rng.normal(0, 0.2, 3 * h).astype(np.float32),
                           br=rng.normal(0, 0.2, 3 * h).astype(np.float32),
                           thr=rng.uniform(0.0, 0.3, h).astype(np.float32)))
        n_in = h
    return E, layers, rng.normal(0, 0.1, vocab).astype(np.float32)


def _op(name, *args):
    return OPS[name].compute({}, *args)


def reference_step(token: int, emb, layers, dec_w, dec_b, state):
    """One step. layers: dicts with dense W [n_in, 3h], R [h, 3h], b, br [3h], thr [h]; dec_w [V, H_last];
    state: list of (c, y) per layer. Returns (logits [V], new state)."""
    (x,) = _op("embedding", np.asarray(emb, np.float32), np.array([token]))
    new = []
    for L, (c, y) in zip(layers, state):
        (gx,) = _op("linear", x, np.asarray(L["W"], np.float32).T, np.asarray(L["b"], np.float32))
        (gh,) = _op("linear", np.asarray(y, np.float32)[None], np.asarray(L["R"], np.float32).T,
                    np.asarray(L["br"], np.float32))
        c, y = _op("egru_cell", gx, gh, np.asarray(c, np.float32)[None], np.asarray(L["thr"], np.float32))
        new.append((c[0], y[0]))
        x = y
    (logits,) = _op("linear", x, np.asarray(dec_w, np.float32), np.asarray(dec_b, np.float32))
    return logits[0], new


def reference_run(tokens, emb, layers, dec_w, dec_b, state=None):
    """:func:`reference_step` over `tokens` from `state` (zeros by default): (logits [K, V], final state)."""
    if state is None:
        state = [(np.zeros(L["thr"].shape[0], np.float32), np.zeros(L["thr"].shape[0], np.float32))
                 for L in layers]
    out = []
    for t in tokens:
        lg, state = reference_step(int(t), emb, layers, dec_w, dec_b, state)
        out.append(lg)
    return np.stack(out), state


def extra_kernels() -> dict:
    """{name: PrimFunc}: ``compress(y f32[h], ei i32[h], ev f32[h], en i32[1])`` and
    ``event_decoder(ei, ev, en, dwt f32[H, V], dbias f32[V], logits f32[V])``."""
    from tvm.script import tirx as T

    from egru_compile.targets.tvm import tir

    @T.prim_func
    def compress(y_h: T.handle, ei_h: T.handle, ev_h: T.handle, en: T.Buffer((1,), "int32")):
        T.func_attr({"global_symbol": "compress", "tir.noalias": True})
        h = T.int32()
        y = T.match_buffer(y_h, (h,), "float32")
        ei = T.match_buffer(ei_h, (h,), "int32")
        ev = T.match_buffer(ev_h, (h,), "float32")
        tir.compress(h, y, ei, ev, en)

    @T.prim_func
    def event_decoder(ei_h: T.handle, ev_h: T.handle, en: T.Buffer((1,), "int32"), dwt_h: T.handle,
                      dbias_h: T.handle, logits_h: T.handle):
        T.func_attr({"global_symbol": "event_decoder", "tir.noalias": True})
        H = T.int32()
        V = T.int32()
        ne = T.int32()
        ei = T.match_buffer(ei_h, (ne,), "int32")
        ev = T.match_buffer(ev_h, (ne,), "float32")
        dwt = T.match_buffer(dwt_h, (H, V), "float32")
        dbias = T.match_buffer(dbias_h, (V,), "float32")
        logits = T.match_buffer(logits_h, (V,), "float32")
        for v in range(V):
            logits[v] = dbias[v]
        for e in range(en[0]):
            e_j: T.let = ei[e]
            e_y: T.let = ev[e]
            for v in range(V):
                logits[v] = logits[v] + e_y * dwt[e_j, v]

    return {"compress": compress, "event_decoder": event_decoder}


def check_streams_equal_batch1(runner, toks, B=4, steps=None):
    """Each stream of a B-stream run (score_streams, step_streams) equals its own batch-1 run bit for bit:
    events, MACs, NLL and logits (np.array_equal). `steps`: the first step's logits are compared, and with
    `steps` > 1 those of that many steps (step_streams against step)."""
    T = (len(toks) - 1) // B
    tok = np.stack([toks[b * T:(b + 1) * T] for b in range(B)], 1)
    tg = np.stack([toks[b * T + 1:(b + 1) * T + 1] for b in range(B)], 1)
    runner.reset_streams(B)
    nll = runner.score_streams(tok, tg)
    ev, macs = runner.last_run.events, runner.last_run.macs
    assert nll.shape == (T, B) and ev.shape == (T, B, len(runner.layer_sizes)) and macs.shape == (T, B)
    runner.reset_streams(B)
    n_steps = max(1, int(steps or 1))
    logits, stats = [], []
    for t in range(n_steps):
        logits.append(runner.step_streams(tok[t]))
        stats.append(runner.last_stream_stats)
    for b in range(B):
        runner.reset()
        n1 = runner.score(tok[:, b], tg[:, b])
        assert np.array_equal(runner.last_run.events, ev[:, b]) and np.array_equal(runner.last_run.macs, macs[:, b])
        assert np.array_equal(n1, nll[:, b]), f"stream {b}: NLL differs by {np.abs(n1 - nll[:, b]).max()}"
        runner.reset()
        for t in range(n_steps):
            assert np.array_equal(runner.step(int(tok[t, b])), logits[t][b]), f"stream {b}, step {t}: logits differ"
            assert tuple(stats[t].events[b]) == runner.last_stats.events and stats[t].macs[b] == runner.last_stats.macs
    assert ev.sum() > 0
    return nll, ev, macs
