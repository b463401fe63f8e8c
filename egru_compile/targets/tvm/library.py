"""The stand-alone kernel library (every size symbolic, so one compiled library serves any layer): the kernels a
chip core program calls (`targets/chip/kernels.py`) and the one-layer kernel the single-layer benchmark times.
Each kernel is a ``@T.prim_func`` closure over the library options, its body built from `tir.py`."""
from __future__ import annotations

from .spec import resolve_target

__all__ = ["KERNELS", "kernel_functions", "build_kernel_library", "load_module"]

#: kernel name -> call signature
KERNELS = {
    "event_matvec": "(ptr i32[n_in+1], idx[nnz], val f32[nnz], ei i32[ne], ev f32[ne], en i32[1], bias f32[m], "
                    "acc f32[m]): acc = bias + sum_{e<en} ev[e] * W[ei[e], :]",
    "dense_matvec": "(ptr, idx, val, x f32[n_in], bias f32[m], acc f32[m]): acc = bias + x @ W",
    "update": "(gx f32[3h], gh f32[3h], thr f32[h], c f32[h], y f32[h], ei i32[h], ev f32[h], en i32[1]): in-place "
              "c, y and the compressed events of the new y",
    "egru_layer": "(xi i32[n_in], xv f32[n_in], xn i32[1], w_ptr, w_idx, w_val, r_ptr, r_idx, r_val, thr f32[h], "
                  "b4 f32[4h], c, y, ei, ev, en, acc f32[4h]): one whole event-driven layer with the packed weights "
                  "of layout.pack_layer (input events in, new c / y / events out)",
}


def kernel_functions(index_dtype: str = "int32", fast_math: bool = True, interleave: int = 8) -> dict:
    """{name: PrimFunc} of :data:`KERNELS` for this index dtype / math / interleave."""
    from tvm.script import tirx as T
    from . import tir
    idt = index_dtype

    @T.prim_func
    def event_matvec(ptr_h: T.handle, idx_h: T.handle, val_h: T.handle, ei_h: T.handle, ev_h: T.handle,
                     en: T.Buffer((1,), "int32"), bias_h: T.handle, acc_h: T.handle):
        T.func_attr({"global_symbol": "event_matvec", "tir.noalias": True})
        np1 = T.int32()
        nnz = T.int32()
        m = T.int32()
        ptr = T.match_buffer(ptr_h, (np1,), "int32")
        idx = T.match_buffer(idx_h, (nnz,), idt)
        val = T.match_buffer(val_h, (nnz,), "float32")
        bias = T.match_buffer(bias_h, (m,), "float32")
        acc = T.match_buffer(acc_h, (m,), "float32")
        ne = T.int32()
        ei = T.match_buffer(ei_h, (ne,), "int32")
        ev = T.match_buffer(ev_h, (ne,), "float32")
        for o in range(m):
            acc[o] = bias[o]
        tir.scatter_events(ptr, idx, val, acc, ei, ev, en, interleave)

    @T.prim_func
    def dense_matvec(ptr_h: T.handle, idx_h: T.handle, val_h: T.handle, x_h: T.handle, bias_h: T.handle,
                     acc_h: T.handle):
        T.func_attr({"global_symbol": "dense_matvec", "tir.noalias": True})
        np1 = T.int32()
        nnz = T.int32()
        m = T.int32()
        ptr = T.match_buffer(ptr_h, (np1,), "int32")
        idx = T.match_buffer(idx_h, (nnz,), idt)
        val = T.match_buffer(val_h, (nnz,), "float32")
        bias = T.match_buffer(bias_h, (m,), "float32")
        acc = T.match_buffer(acc_h, (m,), "float32")
        n_in = T.int32()
        x = T.match_buffer(x_h, (n_in,), "float32")
        for o in range(m):
            acc[o] = bias[o]
        tir.scatter_dense(ptr, idx, val, acc, x, np1 - 1, interleave)

    @T.prim_func
    def update(gx_h: T.handle, gh_h: T.handle, thr_h: T.handle, c_h: T.handle, y_h: T.handle, ei_h: T.handle,
               ev_h: T.handle, en: T.Buffer((1,), "int32")):
        T.func_attr({"global_symbol": "update", "tir.noalias": True})
        h = T.int32()
        gx = T.match_buffer(gx_h, (3 * h,), "float32")
        gh = T.match_buffer(gh_h, (3 * h,), "float32")
        thr = T.match_buffer(thr_h, (h,), "float32")
        c = T.match_buffer(c_h, (h,), "float32")
        y = T.match_buffer(y_h, (h,), "float32")
        ei = T.match_buffer(ei_h, (h,), "int32")
        ev = T.match_buffer(ev_h, (h,), "float32")
        tir.update_gates(h, gx, gh, thr, c, y, fast_math)
        tir.compress(h, y, ei, ev, en)

    @T.prim_func
    def egru_layer(xi_h: T.handle, xv_h: T.handle, xn: T.Buffer((1,), "int32"), w_ptr_h: T.handle,
                   w_idx_h: T.handle, w_val_h: T.handle, r_ptr_h: T.handle, r_idx_h: T.handle, r_val_h: T.handle,
                   thr_h: T.handle, b4_h: T.handle, c_h: T.handle, y_h: T.handle, ei_h: T.handle, ev_h: T.handle,
                   en: T.Buffer((1,), "int32"), acc_h: T.handle):
        T.func_attr({"global_symbol": "egru_layer", "tir.noalias": True})
        n_in = T.int32()
        h = T.int32()
        nw = T.int32()
        nr = T.int32()
        xi = T.match_buffer(xi_h, (n_in,), "int32")
        xv = T.match_buffer(xv_h, (n_in,), "float32")
        wp1 = T.int32()
        w_ptr = T.match_buffer(w_ptr_h, (wp1,), "int32")
        w_idx = T.match_buffer(w_idx_h, (nw,), idt)
        w_val = T.match_buffer(w_val_h, (nw,), "float32")
        rp1 = T.int32()
        r_ptr = T.match_buffer(r_ptr_h, (rp1,), "int32")
        r_idx = T.match_buffer(r_idx_h, (nr,), idt)
        r_val = T.match_buffer(r_val_h, (nr,), "float32")
        thr = T.match_buffer(thr_h, (h,), "float32")
        b4 = T.match_buffer(b4_h, (4 * h,), "float32")
        c = T.match_buffer(c_h, (h,), "float32")
        y = T.match_buffer(y_h, (h,), "float32")
        ei = T.match_buffer(ei_h, (h,), "int32")
        ev = T.match_buffer(ev_h, (h,), "float32")
        acc = T.match_buffer(acc_h, (4 * h,), "float32")
        for o in range(4 * h):
            acc[o] = b4[o]
        tir.scatter_events(w_ptr, w_idx, w_val, acc, xi, xv, xn, interleave)
        tir.scatter_events(r_ptr, r_idx, r_val, acc, ei, ev, en, interleave)
        tir.update_packed(h, acc, thr, c, y, fast_math)
        tir.compress(h, y, ei, ev, en)

    return {"event_matvec": event_matvec, "dense_matvec": dense_matvec, "update": update, "egru_layer": egru_layer}


def build_kernel_library(index_dtype: str = "int32", fast_math: bool = True, target=None, interleave: int = 8,
                         names=None):
    """Compile the stand-alone kernels of :data:`KERNELS` (only those in `names` when given) into one
    ``tvm.runtime.Executable``."""
    import tvm
    if names is not None and set(names) - set(KERNELS):
        raise ValueError(f"unknown kernels {sorted(set(names) - set(KERNELS))}")
    funcs = {name: f for name, f in kernel_functions(index_dtype, fast_math, interleave).items()
             if names is None or name in names}
    return tvm.compile(tvm.IRModule(funcs), resolve_target(target))


def load_module(path: str):
    """Load a library written by ``Executable.export_library`` (no recompilation)."""
    import tvm
    return tvm.runtime.load_module(path)
