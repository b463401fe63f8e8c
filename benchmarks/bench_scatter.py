"""Micro-benchmark of the sparse event scatter-add of one EGRU layer (input 750 events -> hidden 1350,
85 % sparse, 20 % events, fresh random events every call so the weights come from L2/L3).

    .venv/bin/python -m benchmarks.bench_scatter [--reps 200] [--variants old,cur,...]

Every variant is compiled into its own kernel; calls are interleaved round robin over the same event
sets and reported as the median ns per non-zero (min in parentheses).  ``old`` is a frozen copy of
the pre-optimisation scalar scatter (8 columns in lock step), ``cur`` the current ``tir.scatter_columns`` with
the default 8 columns in lock step
(``cur_G<n>``: n columns in lock step).
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


import egru_compile.targets.tvm as K  # noqa: E402


def old_emit_columns(ptr, idx, val, acc, n, col, wgt, interleave):
    """Frozen copy of the original scalar scatter (G columns in lock step, then a per-column tail)."""
    from tvm.script import tirx as T

    from egru_compile.targets.tvm.tir import let, loop

    def ix(k):
        return idx[k] if idx.dtype == "int32" else T.Cast("int32", idx[k])

    G = max(1, int(interleave))
    if G > 1:
        with loop("c", n // G) as c:
            cols = []
            for g in range(G):
                ci = let(f"c{g}_i", col(c * G + g))
                cv = let(f"c{g}_v", wgt(c * G + g))
                k0 = let(f"c{g}_0", ptr[ci])
                cols.append((cv, k0, let(f"c{g}_n", ptr[ci + 1] - k0)))
            mins = cols[0][2]
            for _, _, cn in cols[1:]:
                mins = T.min(mins, cn)
            m = let("c_m", mins)
            with loop("c_k", m) as k:
                for cv, k0, _ in cols:
                    T.buffer_store(acc, acc[ix(k0 + k)] + cv * val[k0 + k], [ix(k0 + k)])
            for cv, k0, cn in cols:
                with loop("c_t", k0 + m, k0 + cn) as k:
                    T.buffer_store(acc, acc[ix(k)] + cv * val[k], [ix(k)])
        start = n // G * G
    else:
        start = 0
    with loop("c", start, n) as c:
        ci = let("c_i", col(c))
        cv = let("c_v", wgt(c))
        with loop("c_k", let("c_k0", ptr[ci]), let("c_k1", ptr[ci + 1])) as k:
            T.buffer_store(acc, acc[ix(k)] + cv * val[k], [ix(k)])


def build_kernel(emit, n_in, h, nw, nr, idt, name="scat"):
    """PrimFunc scattering the input events (xi, xv, xn) through W and the recurrent events (ei, ev, en)
    through R into acc[4h] with the scatter variant `emit`."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as TB

    from egru_compile.targets.tvm.tir import loop
    shapes = [("w_ptr", n_in + 1, "int32"), ("w_idx", nw, idt), ("w_val", nw, "float32"),
              ("r_ptr", h + 1, "int32"), ("r_idx", nr, idt), ("r_val", nr, "float32"),
              ("xi", n_in, "int32"), ("xv", n_in, "float32"), ("xn", 1, "int32"),
              ("ei", h, "int32"), ("ev", h, "float32"), ("en", 1, "int32"), ("acc", 4 * h, "float32")]
    with IRBuilder() as ib:
        with TB.prim_func():
            T.func_name(name)
            T.func_attr({"global_symbol": name, "tir.noalias": True})
            b = {k: T.arg(k, T.Buffer((n,), dt)) for k, n, dt in shapes}
            acc = b["acc"]
            with loop("o", 4 * h) as o:
                T.buffer_store(acc, T.float32(0), [o])
            emit(b["w_ptr"], b["w_idx"], b["w_val"], acc, b["xn"][0], lambda c: b["xi"][c], lambda c: b["xv"][c])
            emit(b["r_ptr"], b["r_idx"], b["r_val"], acc, b["en"][0], lambda c: b["ei"][c], lambda c: b["ev"][c])
    return ib.get()


def variants():
    from egru_compile.targets.tvm.tir import scatter_columns
    v = {"old": lambda *a: old_emit_columns(*a, 8),
         "cur": lambda *a: scatter_columns(*a, 8)}
    for G in (1, 2, 4):
        v[f"cur_G{G}"] = (lambda G: lambda *a: scatter_columns(*a, G))(G)
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-in", type=int, default=750)
    ap.add_argument("--hidden", type=int, default=1350)
    ap.add_argument("--sparsity", type=float, default=0.85)
    ap.add_argument("--act", type=float, default=0.2)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--sets", type=int, default=64, help="distinct random event sets cycled through")
    ap.add_argument("--variants", default="old,cur")
    ap.add_argument("--asm", default="", help="dump the assembly of the variants to this folder")
    a = ap.parse_args(argv)
    import tvm
    rng = np.random.default_rng(0)
    n_in, h = a.n_in, a.hidden
    W = rng.standard_normal((n_in, 3 * h), dtype=np.float32)
    W[rng.random(W.shape) < a.sparsity] = 0
    R = rng.standard_normal((h, 3 * h), dtype=np.float32)
    R[rng.random(R.shape) < a.sparsity] = 0
    z = np.zeros(3 * h, np.float32)
    pk = K.pack_layer(W, R, z, z, np.full(h, 0.5, np.float32))
    idt = str(pk["w_idx"].dtype)
    nw, nr = len(pk["w_idx"]), len(pk["r_idx"])
    T_ = tvm.runtime.tensor
    wt = [T_(pk[k]) for k in ("w_ptr", "w_idx", "w_val", "r_ptr", "r_idx", "r_val")]
    xi, xv, xn = T_(np.zeros(n_in, np.int32)), T_(np.zeros(n_in, np.float32)), T_(np.zeros(1, np.int32))
    ei, ev, en = T_(np.zeros(h, np.int32)), T_(np.zeros(h, np.float32)), T_(np.zeros(1, np.int32))
    acc = T_(np.zeros(4 * h, np.float32))
    views = [np.from_dlpack(t) for t in (xi, xv, xn, ei, ev, en)]
    acc_np = np.from_dlpack(acc)

    sets = []
    for _ in range(a.sets):
        s = []
        for n in (n_in, h):
            k = int(round(a.act * n))
            idx = np.zeros(n, np.int32)
            idx[:k] = np.sort(rng.choice(n, k, replace=False))
            val = np.zeros(n, np.float32)
            val[:k] = rng.uniform(0.1, 1.0, k)
            s += [idx, val, np.array([k], np.int32)]
        x = np.zeros(n_in, np.float32)
        x[s[0][:s[2][0]]] = s[1][:s[2][0]]
        y = np.zeros(h, np.float32)
        y[s[3][:s[5][0]]] = s[4][:s[5][0]]
        ref = np.zeros(4 * h, np.float32)
        gx, gh = x @ W, y @ R
        ref[:2 * h] = gx[:2 * h] + gh[:2 * h]
        ref[2 * h:3 * h] = gx[2 * h:]
        ref[3 * h:] = gh[2 * h:]
        nnz = int(np.diff(pk["w_ptr"])[s[0][:s[2][0]]].sum() + np.diff(pk["r_ptr"])[s[3][:s[5][0]]].sum())
        sets.append((s, ref, nnz))

    allv = variants()
    names = a.variants.split(",")
    fns = {}
    tgt = K.default_target()
    for nm in names:
        ex = tvm.compile(tvm.IRModule({"scat": build_kernel(allv[nm], n_in, h, nw, nr, idt)}), tgt)
        fns[nm] = ex["scat"]
        if a.asm:
            os.makedirs(a.asm, exist_ok=True)
            try:
                asm = ex.mod.imported_modules[0].inspect_source("asm")
            except Exception:  # noqa: BLE001
                asm = ex.mod.inspect_source("asm")
            Path(a.asm, nm + ".s").write_text(asm)
    # correctness
    for nm, f in fns.items():
        s, ref, _ = sets[0]
        for v, arr in zip(views, s):
            v[:] = arr
        f(*wt, xi, xv, xn, ei, ev, en, acc)
        err = float(np.max(np.abs(acc_np - ref)))
        print(f"{nm:>14}: max |err| = {err:.2e}")
    ts = {nm: [] for nm in names}
    for r in range(a.reps):
        s, _, nnz = sets[r % len(sets)]
        order = names if r % 2 == 0 else names[::-1]
        for nm in order:
            for v, arr in zip(views, s):
                v[:] = arr
            t0 = time.perf_counter()
            fns[nm](*wt, xi, xv, xn, ei, ev, en, acc)
            ts[nm].append((time.perf_counter() - t0) * 1e9 / nnz)
    mean_nnz = np.mean([x[2] for x in sets])
    print(f"n_in={n_in} h={h} sparsity={a.sparsity} act={a.act} idx={idt}  ~{mean_nnz:.0f} nnz/call, "
          f"{a.reps} interleaved calls per variant")
    for nm in names:
        t = np.asarray(ts[nm])
        print(f"{nm:>14}: {np.median(t):.3f} ns/nnz (min {np.min(t):.3f})")


if __name__ == "__main__":
    main()
