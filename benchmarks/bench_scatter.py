"""Micro-benchmark of the sparse event scatter-add of one EGRU layer (input 750 events -> hidden 1350,
85 % sparse, 20 % events, fresh random events every call so the weights come from L2/L3).

    .venv/bin/python benchmarks/bench_scatter.py [--reps 200] [--variants old,cur,...]

Every variant is compiled into its own kernel; calls are interleaved round robin over the same event
sets and reported as the median ns per non-zero (min in parentheses).  ``old`` is a frozen copy of
the pre-optimisation scalar scatter (8 columns in lock step), ``cur`` the current ``_emit_columns`` with
the default 8 columns in lock step
(``cur_G<n>``: n columns in lock step).
"""
from __future__ import annotations

import os

for _v in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egru_compile.targets.tvm import kernels as K  # noqa: E402


def old_emit_columns(em, ptr, idx, val, acc, n, col, wgt, idx_dtype, interleave):
    """Frozen copy of the original scalar scatter (G columns in lock step, then a per-column tail)."""
    c = em.fresh("c")
    n = f"({n})"
    G = max(1, int(interleave))
    if G > 1:
        tags = [chr(ord("a") + g) for g in range(G)]
        em(f"for {c} in range({n} // {G}):")
        with em.block():
            for g, s_ in enumerate(tags):
                cc = f"{c} * {G} + {g}"
                em(f"{c}_{s_}i: T.let = {col.format(c=cc)}")
                em(f"{c}_{s_}v: T.let = {wgt.format(c=cc)}")
                em(f"{c}_{s_}0: T.let = {ptr}[{c}_{s_}i]")
                em(f"{c}_{s_}n: T.let = {ptr}[{c}_{s_}i + 1] - {c}_{s_}0")
            mins = f"{c}_an"
            for s_ in tags[1:]:
                mins = f"T.min({mins}, {c}_{s_}n)"
            em(f"{c}_m: T.let = {mins}")
            em(f"for {c}_k in range({c}_m):")
            with em.block():
                for s_ in tags:
                    ix = K._ix(idx, f"{c}_{s_}0 + {c}_k", idx_dtype)
                    em(f"{acc}[{ix}] = {acc}[{ix}] + {c}_{s_}v * {val}[{c}_{s_}0 + {c}_k]")
            for s_ in tags:
                em(f"for {c}_{s_}k in range({c}_{s_}0 + {c}_m, {c}_{s_}0 + {c}_{s_}n):")
                with em.block():
                    ix = K._ix(idx, f"{c}_{s_}k", idx_dtype)
                    em(f"{acc}[{ix}] = {acc}[{ix}] + {c}_{s_}v * {val}[{c}_{s_}k]")
        start = f"{n} // {G} * {G}"
    else:
        start = "0"
    em(f"for {c} in range({start}, {n}):")
    with em.block():
        em(f"{c}_i: T.let = {col.format(c=c)}")
        em(f"{c}_v: T.let = {wgt.format(c=c)}")
        em(f"{c}_k0: T.let = {ptr}[{c}_i]")
        em(f"{c}_k1: T.let = {ptr}[{c}_i + 1]")
        em(f"for {c}_k in range({c}_k0, {c}_k1):")
        with em.block():
            ix = K._ix(idx, f"{c}_k", idx_dtype)
            em(f"{acc}[{ix}] = {acc}[{ix}] + {c}_v * {val}[{c}_k]")


def kernel_source(emit, n_in, h, nw, nr, idt, name="scat"):
    em = K._Emitter()
    em(f"T.func_attr({{\"global_symbol\": \"{name}\", \"tir.noalias\": True}})")
    em(f"for o in range({4 * h}):")
    with em.block():
        em("acc[o] = T.float32(0)")
    emit(em, "w_ptr", "w_idx", "w_val", "acc", "xn[0]", "xi[{c}]", "xv[{c}]", idt)
    emit(em, "r_ptr", "r_idx", "r_val", "acc", "en[0]", "ei[{c}]", "ev[{c}]", idt)
    args = [f"w_ptr: T.Buffer(({n_in + 1},), \"int32\")", f"w_idx: T.Buffer(({nw},), \"{idt}\")",
            f"w_val: T.Buffer(({nw},), \"float32\")", f"r_ptr: T.Buffer(({h + 1},), \"int32\")",
            f"r_idx: T.Buffer(({nr},), \"{idt}\")", f"r_val: T.Buffer(({nr},), \"float32\")",
            f"xi: T.Buffer(({n_in},), \"int32\")", f"xv: T.Buffer(({n_in},), \"float32\")",
            "xn: T.Buffer((1,), \"int32\")", f"ei: T.Buffer(({h},), \"int32\")",
            f"ev: T.Buffer(({h},), \"float32\")", "en: T.Buffer((1,), \"int32\")",
            f"acc: T.Buffer(({4 * h},), \"float32\")"]
    return "@T.prim_func\ndef " + name + "(" + ", ".join(args) + "):\n" + em.text()


def variants():
    v = {"old": lambda em, *a: old_emit_columns(em, *a, 8),
         "cur": lambda em, *a: K._emit_columns(em, *a, 8)}
    for G in (1, 2, 4):
        v[f"cur_G{G}"] = (lambda G: lambda em, *a: K._emit_columns(em, *a, G))(G)
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
        src = kernel_source(allv[nm], n_in, h, nw, nr, idt)
        ex = tvm.compile(tvm.IRModule({"scat": tvm.script.from_source(src)}), tgt)
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
