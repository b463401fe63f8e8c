"""Micro-benchmark of the sparse event scatter-add of one EGRU layer (input 750 events -> hidden 1350,
85 % sparse, 20 % events, fresh random events every call so the weights come from L2/L3).

    .venv/bin/python -m benchmarks.bench_scatter [--reps 200] [--variants old,cur,...]

Every variant is compiled into its own kernel; calls are interleaved round robin over the same event
sets and reported as the median ns per non-zero (min in parentheses).  ``old`` is a frozen copy of
the pre-optimisation scalar scatter (8 columns in lock step), ``cur`` the current ``tir.scatter_columns`` with
the default 8 columns in lock step
(``cur_G<n>``: n columns in lock step).

``--weight-dtype int8`` packs the layer as the int8 kernels do (`layout.pack_layer`: int8 values, the 6h
accumulator) and offers ``gs16`` (issue 26 item 1): AVX-512 gather / scatter, 16 non-zeros of one column per
step (a column's output indices are distinct, so its scatter is conflict-free): vpgatherdd 16 acc values, add
the 16 widened int8 products, vpscatterdd them back (LLVM's ``llvm.x86.avx512.{gather,scatter}.dps.512``
through ``T.call_llvm_intrin``; needs AVX-512F). Its results are compared bit for bit with ``cur``.
``--copies N`` cycles N independently drawn weight sets call by call (N = 5: about the working set of the
PTB-size stack, which does not stay in L2; the default 1 keeps one layer's weights in L2/L3).

    .venv/bin/python -m benchmarks.bench_scatter --weight-dtype int8 --n-in 1350 --variants cur,gs16 --copies 5
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


def gs16_emit_columns(ptr, idx, val, acc, n, col, wgt, interleave=1):
    """AVX-512 gather / scatter of 16 non-zeros of one column at a time (then a scalar tail): the same sums in
    the same order as ``tir.scatter_columns`` (per column, each output once; columns in event order)."""
    from tvm.script import tirx as T

    from egru_compile.targets.tvm.tir import let, loop
    base = T.address_of(acc[0])
    with loop("c", n) as c:
        ci = let("c_i", col(c))
        cv = let("c_v", wgt(c))
        k0 = let("c_k0", ptr[ci])
        k1 = let("c_k1", ptr[ci + 1])
        m = let("c_m", (k1 - k0) // 16)
        with loop("q", m) as q:
            k = let("k", k0 + q * 16)
            ix = let("ix", T.Cast("int32x16", idx[T.Ramp(k, 1, 16)]))
            prod = let("p", T.Broadcast(cv, 16) * T.Cast("float32x16", val[T.Ramp(k, 1, 16)]))
            old = let("ga", T.call_llvm_intrin("float32x16", "llvm.x86.avx512.gather.dps.512",
                                               T.Broadcast(T.float32(0), 16), base, ix, T.int16(-1), T.int32(4)))
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.avx512.scatter.dps.512", base, T.int16(-1), ix,
                                          old + prod, T.int32(4)))
        with loop("t", k0 + m * 16, k1) as t:
            ix = T.Cast("int32", idx[t]) if idx.dtype != "int32" else idx[t]
            T.buffer_store(acc, acc[ix] + cv * T.Cast("float32", val[t]), [ix])


def build_kernel(emit, n_in, h, nw, nr, idt, name="scat", vdt="float32", acc_size=None):
    """PrimFunc scattering the input events (xi, xv, xn) through W and the recurrent events (ei, ev, en)
    through R into acc[4h] (int8: acc[6h]) with the scatter variant `emit`."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as TB

    from egru_compile.targets.tvm.tir import loop
    acc_size = acc_size or 4 * h
    shapes = [("w_ptr", n_in + 1, "int32"), ("w_idx", nw, idt), ("w_val", nw, vdt),
              ("r_ptr", h + 1, "int32"), ("r_idx", nr, idt), ("r_val", nr, vdt),
              ("xi", n_in, "int32"), ("xv", n_in, "float32"), ("xn", 1, "int32"),
              ("ei", h, "int32"), ("ev", h, "float32"), ("en", 1, "int32"), ("acc", acc_size, "float32")]
    with IRBuilder() as ib:
        with TB.prim_func():
            T.func_name(name)
            T.func_attr({"global_symbol": name, "tir.noalias": True})
            b = {k: T.arg(k, T.Buffer((n,), dt)) for k, n, dt in shapes}
            acc = b["acc"]
            with loop("o", acc_size) as o:
                T.buffer_store(acc, T.float32(0), [o])
            emit(b["w_ptr"], b["w_idx"], b["w_val"], acc, b["xn"][0], lambda c: b["xi"][c], lambda c: b["xv"][c])
            emit(b["r_ptr"], b["r_idx"], b["r_val"], acc, b["en"][0], lambda c: b["ei"][c], lambda c: b["ev"][c])
    return ib.get()


def variants():
    from egru_compile.targets.tvm.tir import scatter_columns
    v = {"old": lambda *a: old_emit_columns(*a, 8),
         "cur": lambda *a: scatter_columns(*a, 8), "gs16": gs16_emit_columns}
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
    ap.add_argument("--weight-dtype", choices=("f32", "int8"), default="f32")
    ap.add_argument("--copies", type=int, default=1, help="weight copies cycled call by call (working set)")
    a = ap.parse_args(argv)
    import tvm
    rng = np.random.default_rng(0)
    n_in, h = a.n_in, a.hidden
    W = rng.standard_normal((n_in, 3 * h), dtype=np.float32)
    W[rng.random(W.shape) < a.sparsity] = 0
    R = rng.standard_normal((h, 3 * h), dtype=np.float32)
    R[rng.random(R.shape) < a.sparsity] = 0
    z = np.zeros(3 * h, np.float32)
    q8 = a.weight_dtype == "int8"
    pk = K.pack_layer(W, R, z, z, np.full(h, 0.5, np.float32), weight_dtype=a.weight_dtype)
    idt = str(pk["w_idx"].dtype)
    nw, nr = len(pk["w_idx"]), len(pk["r_idx"])
    asz = (6 if q8 else 4) * h
    T_ = tvm.runtime.tensor
    copies = [[T_(np.copy(pk[k])) for k in ("w_ptr", "w_idx", "w_val", "r_ptr", "r_idx", "r_val")]
              for _ in range(max(1, a.copies))]
    wt = copies[0]
    if q8:      # the int8 sums (unscaled) in the 6h layout, recounted from the packed arrays
        W = K.from_input_major(pk["w_ptr"], pk["w_idx"].astype(np.int64), pk["w_val"].astype(np.float32), asz)
        R = K.from_input_major(pk["r_ptr"], pk["r_idx"].astype(np.int64), pk["r_val"].astype(np.float32), asz)
    xi, xv, xn = T_(np.zeros(n_in, np.int32)), T_(np.zeros(n_in, np.float32)), T_(np.zeros(1, np.int32))
    ei, ev, en = T_(np.zeros(h, np.int32)), T_(np.zeros(h, np.float32)), T_(np.zeros(1, np.int32))
    acc = T_(np.zeros(asz, np.float32))
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
        if q8:
            ref = (x.astype(np.float64) @ W + y.astype(np.float64) @ R).astype(np.float32)
        else:
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
        ex = tvm.compile(tvm.IRModule({"scat": build_kernel(allv[nm], n_in, h, nw, nr, idt,
                                                             vdt="int8" if q8 else "float32", acc_size=asz)}), tgt)
        fns[nm] = ex["scat"]
        if a.asm:
            os.makedirs(a.asm, exist_ok=True)
            try:
                asm = ex.mod.imported_modules[0].inspect_source("asm")
            except Exception:  # noqa: BLE001
                asm = ex.mod.inspect_source("asm")
            Path(a.asm, nm + ".s").write_text(asm)
    # correctness (and bit-identity with the first variant on every event set)
    first = {}
    for nm, f in fns.items():
        errs, same = [], True
        for si, (s, ref, _) in enumerate(sets):
            for v, arr in zip(views, s):
                v[:] = arr
            f(*wt, xi, xv, xn, ei, ev, en, acc)
            errs.append(float(np.max(np.abs(acc_np - ref)) / max(float(np.max(np.abs(ref))), 1e-30)))
            if nm == names[0]:
                first[si] = acc_np.copy()
            else:
                same = same and np.array_equal(acc_np, first[si])
        print(f"{nm:>14}: max |err| / max |ref| = {max(errs):.2e}" +
              ("" if nm == names[0] else f"; bit-identical to {names[0]}: {same}"))
    ts = {nm: [] for nm in names}
    for r in range(a.reps):
        s, _, nnz = sets[r % len(sets)]
        order = names if r % 2 == 0 else names[::-1]
        for nm in order:
            for v, arr in zip(views, s):
                v[:] = arr
            w = copies[r % len(copies)]
            t0 = time.perf_counter()
            fns[nm](*w, xi, xv, xn, ei, ev, en, acc)
            ts[nm].append((time.perf_counter() - t0) * 1e9 / nnz)
    mean_nnz = np.mean([x[2] for x in sets])
    print(f"n_in={n_in} h={h} sparsity={a.sparsity} act={a.act} idx={idt} values={a.weight_dtype} "
          f"copies={len(copies)}  ~{mean_nnz:.0f} nnz/call, {a.reps} interleaved calls per variant; "
          f"load average {os.getloadavg()[0]:.1f}")
    for nm in names:
        t = np.asarray(ts[nm])
        print(f"{nm:>14}: {np.median(t):.3f} ns/nnz (min {np.min(t):.3f})")


if __name__ == "__main__":
    main()
