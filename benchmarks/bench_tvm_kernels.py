"""Per-step latency of the TVM event-driven EGRU kernels vs dense torch, batch 1, one thread.

    .venv/bin/python -m benchmarks.bench_tvm_kernels                 # 750/1350/1350/750, V=10000, 85% sparse
    .venv/bin/python -m benchmarks.bench_tvm_kernels --quick         # fewer steps

Activity (fraction of non-zero units of every y) is set by calibrating one threshold per layer by
bisection on the compiled step itself, so the measured steps run the real recurrent dynamics at that
activity.  The single-layer row (input 750 events -> hidden 1350) injects random event vectors at
the activity into input and recurrent state (fresh events before each call: weights come from L2/L3;
same events every call: cache-hot).  Times are medians (min in
parentheses) over the measured steps; other processes on the machine inflate the medians, the
minima show the uncontended cost.
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


from benchmarks.common import calibrate_runner as calibrate  # noqa: E402
from egru_compile.targets.tvm import (EGRUKernelSpec, TVMStepRunner, build_egru_step,  # noqa: E402
                                      build_kernel_library, pack_layer)


def rand_model(V, E, hidden, sparsity, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.uniform(-0.1, 0.1, (V, E)).astype(np.float32)
    layers, n_in = [], E
    for h in hidden:
        mats = []
        for shape, fan in (((n_in, 3 * h), n_in), ((h, 3 * h), h)):
            M = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(fan * (1 - sparsity)))
            M[rng.random(shape, dtype=np.float32) < sparsity] = 0
            mats.append(M)
        layers.append(dict(W=mats[0], R=mats[1], b=np.zeros(3 * h, np.float32), br=np.zeros(3 * h, np.float32),
                           thr=np.full(h, 0.5, np.float32)))
        n_in = h
    return emb, layers, np.zeros(V, np.float32)


def stats(ts):
    ts = np.asarray(ts) * 1e6
    return float(np.median(ts)), float(np.min(ts))


def fmt(s):
    return f"{s[0]:8.1f} ({s[1]:6.1f})"


def time_runner(runner, toks, steps):
    runner.reset()
    for i in range(20):  # burn-in: reach the steady activity
        runner.step(int(toks[i]), copy=False)
    ts, acts = [], []
    fn, args, lg = runner._step_fn, runner._args, runner._logits
    for i in range(steps):
        tk = int(toks[20 + i])
        t0 = time.perf_counter()
        fn(tk, *args, lg)
        ts.append(time.perf_counter() - t0)
        acts.append(runner.activity())
    py = []
    for i in range(min(steps, 100)):
        t0 = time.perf_counter()
        runner.step(int(toks[i]), copy=False)
        py.append(time.perf_counter() - t0)
    K = 10  # egru_run: K tokens per packed call; per-token median over several calls
    runner.run(toks[:20])
    rt = []
    for i in range(max(steps // K, 5)):
        chunk = toks[20 + (i * K) % steps:][:K]
        t0 = time.perf_counter()
        runner.run(chunk, copy=False)
        rt.append((time.perf_counter() - t0) / len(chunk))
    run_tok = stats(rt)[0]
    return stats(ts), stats(py), run_tok, np.mean(acts, axis=0)


def bench_single_layer(lib, n_in, h, sparsity, act, steps, seed=1):
    import tvm
    T_ = tvm.runtime.tensor
    rng = np.random.default_rng(seed)
    L = rand_model(2, n_in, [h], sparsity, seed)[1][0]
    pk = pack_layer(L["W"], L["R"], L["b"], L["br"], L["thr"], "int16")
    w = [T_(pk[k]) for k in ("w_ptr", "w_idx", "w_val", "r_ptr", "r_idx", "r_val", "thr", "bias4")]
    st = [T_(np.zeros(h, np.float32)), T_(np.zeros(h, np.float32)), T_(np.zeros(h, np.int32)),
          T_(np.zeros(h, np.float32)), T_(np.zeros(1, np.int32))]
    acc = T_(np.zeros(4 * h, np.float32))
    xi, xv, xn = T_(np.zeros(n_in, np.int32)), T_(np.zeros(n_in, np.float32)), T_(np.zeros(1, np.int32))

    def inject(n, idx_t, val_t, cnt_t):
        k = int(round(act * n))
        idx = np.zeros(n, np.int32)
        idx[:k] = np.sort(rng.choice(n, k, replace=False))
        val = np.zeros(n, np.float32)
        val[:k] = rng.uniform(0.1, 1.0, k)
        idx_t.copyfrom(idx)
        val_t.copyfrom(val)
        cnt_t.copyfrom(np.array([k], np.int32))

    fn = lib["egru_layer"]
    ts = []
    for _ in range(steps):  # fresh random events every call: weights come from L2/L3
        inject(n_in, xi, xv, xn)
        inject(h, st[2], st[3], st[4])
        t0 = time.perf_counter()
        fn(xi, xv, xn, *w, *st, acc)
        ts.append(time.perf_counter() - t0)
    # same events every call (cache-hot): the recurrent event list the call overwrites is restored
    # (outside the timed region) through zero-copy numpy views
    views = [np.from_dlpack(t) for t in st[2:]]
    keep = [v.copy() for v in views]
    hot = []
    for _ in range(steps):
        for v, k in zip(views, keep):
            v[:] = k
        t0 = time.perf_counter()
        fn(xi, xv, xn, *w, *st, acc)
        hot.append(time.perf_counter() - t0)
    return stats(ts), stats(hot)


def bench_torch(V, E, hidden, steps):
    import torch
    from torch import nn
    torch.set_num_threads(1)
    from egru_compile.model import EGRUConfig, EGRULanguageModel
    out = {}
    with torch.no_grad():
        m = EGRULanguageModel(EGRUConfig(V, E, list(hidden))).eval()
        state = m.init_state(1)
        tok = torch.tensor([1])
        for _ in range(5):
            _, state = m.step(tok, state)
        ts = []
        for i in range(steps):
            tok = torch.tensor([i % V])
            t0 = time.perf_counter()
            _, state = m.step(tok, state)
            ts.append(time.perf_counter() - t0)
        out["dense torch EGRU LM step"] = stats(ts)
        # nn.GRUCell stack + embedding + tied linear decoder
        embm = nn.Embedding(V, E)
        cells = [nn.GRUCell(i, h) for i, h in zip([E] + list(hidden[:-1]), hidden)]
        dec = nn.Linear(hidden[-1], V)
        hs = [torch.zeros(1, h) for h in hidden]
        ts = []
        for i in range(steps + 5):
            t0 = time.perf_counter()
            x = embm(torch.tensor([i % V]))
            for j, c in enumerate(cells):
                hs[j] = c(x, hs[j])
                x = hs[j]
            dec(x)
            if i >= 5:
                ts.append(time.perf_counter() - t0)
        out["dense torch GRUCell LM step"] = stats(ts)
        cell = nn.GRUCell(E, hidden[0])
        x, hh = torch.randn(1, E), torch.zeros(1, hidden[0])
        ts = []
        for i in range(steps + 5):
            t0 = time.perf_counter()
            hh = cell(x, hh)
            if i >= 5:
                ts.append(time.perf_counter() - t0)
        out[f"dense torch GRUCell {E}->{hidden[0]}"] = stats(ts)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--emb", type=int, default=750)
    ap.add_argument("--hidden", default="1350,1350,750")
    ap.add_argument("--sparsity", type=float, default=0.85)
    ap.add_argument("--acts", default="0.1,0.2,0.3")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--embed-modes", default="table,csc")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    hidden = [int(h) for h in a.hidden.split(",")]
    acts = [float(x) for x in a.acts.split(",")]
    steps = 60 if a.quick else a.steps
    V, E = a.vocab, a.emb

    import tvm
    print(f"TVM {tvm.__version__}, target {tvm.target.codegen.llvm_get_system_cpu()}, TVM_NUM_THREADS=1")
    print(f"model: emb {E}, layers {'/'.join(map(str, [E] + hidden))}, vocab {V}, sparsity {a.sparsity:.0%}")
    emb, layers, db = rand_model(V, E, hidden, a.sparsity)
    nnz = sum(np.count_nonzero(L["W"]) + np.count_nonzero(L["R"]) for L in layers)
    print(f"RNN nnz {nnz} ({nnz * 6 / 2**20:.1f} MiB as int16 idx + f32), "
          f"decoder D^T {V * hidden[-1] * 4 / 2**20:.1f} MiB")
    toks = np.random.default_rng(3).integers(0, V, 20 + max(steps, 100) + 10)

    rows = []  # (name, act, median, min, extra)
    configs = [(m, "event") for m in a.embed_modes.split(",")]
    if not a.quick:
        configs.append(("table", "dense"))
    for mode, dec in configs:
        spec = EGRUKernelSpec(V, E, tuple(hidden), embed_mode=mode, decoder_mode=dec)
        t0 = time.perf_counter()
        mod = build_egru_step(spec)
        t_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        runner = TVMStepRunner(emb, layers, db, spec=spec, module=mod)
        t_pack = time.perf_counter() - t0
        print(f"[embed={mode}, decoder={dec}] compile egru_step + egru_run: {t_compile:.1f} s; pack weights"
              f"{' + E@W0 table' if mode == 'table' else ''}: {t_pack:.1f} s")
        for act in (acts if dec == "event" else acts[:1]):
            calibrate(runner, act, toks)
            raw, py, run_tok, got = time_runner(runner, toks, steps)
            name = f"TVM fused step, embed={mode}" + ("" if dec == "event" else ", dense decoder")
            rows.append((name, act, raw, f"py .step {py[0]:.0f}, run(K=10) {run_tok:.0f}/tok, "
                         f"act {'/'.join(f'{g:.2f}' for g in got)}"))
        del runner

    t0 = time.perf_counter()
    lib = build_kernel_library("int16")
    print(f"kernel library compile: {time.perf_counter() - t0:.1f} s")
    for act in acts:
        cold, hot = bench_single_layer(lib, E, hidden[0], a.sparsity, act, steps)
        rows.append((f"TVM egru_layer {E}->{hidden[0]}, fresh events", act, cold, "weights from L2/L3"))
        rows.append((f"TVM egru_layer {E}->{hidden[0]}, same events", act, hot, "cache-hot"))

    if not a.no_torch:
        for name, s in bench_torch(V, E, hidden, min(steps, 100)).items():
            rows.append((name, None, s, ""))

    print()
    print(f"{'kernel':46s} {'act':>5s} {'median (min) us':>17s}  notes")
    print("-" * 112)
    for name, act, s, note in rows:
        print(f"{name:46s} {'' if act is None else f'{act:.0%}':>5s} {fmt(s)}  {note}")


if __name__ == "__main__":
    main()
