"""Batches that share reads: ``egru_shared_run`` / ``egru_shared_score`` advance B streams per step with each
active column's non-zeros read once for all the streams that need it.

Layout: streams in blocks of :data:`LANES` (one float32 vector); per layer the states c, y are stream-minor
(``y[blk, j*LANES + s]``: unit j of stream blk*LANES + s) and the accumulator is ``acc[o*LANES + s]``. A layer's
input is the union of the block's events (``ui{l}`` / ``un{l}``: the units active in any stream of the block,
ascending); for every union column j the block's value vector ``x[j, 0:LANES]`` (zero where a stream is
silent) is scattered through the column's non-zeros in one vector operation per non-zero.

Bit-identical to batch 1 (the step kernels with ``interleave`` = 1): per accumulator element the batch-1 scatter
adds the active columns in ascending order, each product rounded as batch 1 rounds it — the non-zeros of a
column's full groups of ``tir.SCATTER_GROUP`` as ``acc + round(v * w)`` (batch 1: one vector multiply, lanes
added one by one), the column's tail as one fused multiply-add (LLVM contracts batch 1's scalar tail loop; the
target allows FP contraction): here ``acc + fma(x, w, +0)`` (the +0 keeps LLVM from fusing it) and ``acc + x*w``
(fused the same way). A silent stream adds ``0 * w`` = ±0, which leaves every value as it was (only a -0.0
accumulator would turn +0.0). The gate update is `tir.update` itself on the stream-minor arrays; the decoder and
the NLL are batch 1's code per stream (`tir.decoder`, `tir.nll`) on each stream's own event list of the last
layer, by V-chunks (`streams.DECODER_CHUNK`).

Threads: a step is one parallel region of TVM's thread pool (one wake-up per step, not one per loop), in
phases that end at a barrier (:class:`region.phase`): the scatter splits the accumulator rows into ``P`` parts
(``parts``; per column the first non-zero of each part, ``*_sp``, comes from the runner; the row bounds
``rb{l}`` balance the non-zeros of W and R over the parts), the update the units, the decoder the vocabulary
(part p: one contiguous range of logits, by V-chunks), the NLL the streams; the union / event-list bookkeeping
between them is serial (:class:`region.once`). Every element is written by one part only, in the same order, so any
P gives the same bits; no part reduces into another's memory.
"""
from __future__ import annotations

from .signature import NLL_LANES, weight_arg_names
from .region import once, phase, region
from .spec import EGRUKernelSpec, resolve_target

__all__ = ["LANES", "shared_functions", "build_egru_shared", "shared_state_params", "shared_arg_names",
           "split_names", "supports_shared"]

#: streams per block: one float32 vector (AVX-512)
LANES = 16


def supports_shared(spec: EGRUKernelSpec) -> bool:
    """The shared-read kernels equal batch 1 for specs whose batch-1 scatter adds columns in order
    (``interleave`` <= 1) with the event decoder and no projection."""
    return spec.interleave <= 1 and not spec.projection and spec.decoder_mode == "event" and not spec.u8_events


def split_names(spec: EGRUKernelSpec) -> list[str]:
    """The scattered matrices (``w{l}`` / ``r{l}``) whose per-part split points the kernel takes."""
    out = []
    for l in range(len(spec.hidden_sizes)):
        if not (l == 0 and spec.embed_mode == "table"):
            out.append(f"w{l}")
        out.append(f"r{l}")
    return out


def shared_state_params(spec: EGRUKernelSpec) -> list[tuple[str, tuple, str]]:
    """Batched states and scratch after the weights and splits (NB = blocks of LANES streams)."""
    S, L = LANES, len(spec.hidden_sizes)
    out = [("cnt", ("NB", S), "int32"), ("evc", ("NB", S), "int32"), ("xe", (spec.embedding_size * S,), "float32")]
    for l, h in enumerate(spec.hidden_sizes):
        out += [(f"c{l}", (("NB", h * S),), "float32"), (f"y{l}", (("NB", h * S),), "float32"),
                (f"ui{l}", ("NB", h), "int32"), (f"un{l}", ("NB",), "int32"),
                (f"acc{l}", (spec.acc_size(l) * S,), "float32")]
    hL = spec.hidden_sizes[L - 1]
    out += [("dei", (("B", hL),), "int32"), ("dev", (("B", hL),), "float32"), ("den", ("B",), "int32")]
    return out


def shared_arg_names(spec: EGRUKernelSpec) -> list[str]:
    """Weights, split points, row bounds, batched states (between ``parts`` and the outputs)."""
    return (weight_arg_names(spec) + [f"{m}_sp" for m in split_names(spec)]
            + [f"rb{l}" for l in range(len(spec.hidden_sizes))] + [n for n, _, _ in shared_state_params(spec)])


def _declare(spec: EGRUKernelSpec, score: bool) -> dict:
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    from .signature import kernel_params
    weights = {n: (shape, dt) for n, shape, dt in kernel_params(spec, "step")}
    L = len(spec.hidden_sizes)
    params = [("tokens", ("T", "B"), "int32")] + ([("targets", ("T", "B"), "int32")] if score else [])
    params += [(n, weights[n][0], weights[n][1]) for n in weight_arg_names(spec)]
    for m in split_names(spec):
        l = int(m[1:])
        n_in = (spec.input_sizes[l] if m[0] == "w" else spec.hidden_sizes[l])
        params.append((f"{m}_sp", (n_in, "PP1"), "int32"))
    params += [(f"rb{l}", ("PP1",), "int32") for l in range(L)]
    params += shared_state_params(spec)
    params += [("logits", (("B", spec.vocab_size),), "float32")]
    if score:
        params += [("red", (("B", 2 * NLL_LANES),), "float64"), ("nll", ("T", "B"), "float64")]
    params += [("stats", ("T", "B", L + 1), "int32")]
    a = {"parts": T.arg("parts", T.int32())}
    handles = [(n, T.arg(n + "_h", T.handle()), shape, dt) for n, shape, dt in params]
    dims: dict = {}
    for n, hdl, shape, dt in handles:
        shp = []
        for d in shape:
            k = 1
            if isinstance(d, tuple):            # (var, k): var * k, var declared by an earlier argument
                d, k = d
            if isinstance(d, str):
                if d not in dims:
                    dims[d] = T.int32()
                    IRBuilder.name(d, dims[d])
                d = dims[d]
            shp.append(d * k if k != 1 else d)
        a[n] = T.match_buffer(hdl, tuple(shp), dt)
    a.update(T=dims["T"], B=dims["B"], NB=dims["NB"])
    return a


def _scatter(acc, ptr, idx, val, sp, p, cols, ncols, x, wide) -> None:
    """Part p of the scatter of `ncols` columns (col(c) -> column, x(j) -> its LANES-vector of values): the
    non-zeros sp[j, p] .. sp[j, p+1] of each, rounded as batch 1 rounds them (module docstring)."""
    from tvm.script import tirx as T
    from . import tir
    S, U = LANES, tir.SCATTER_GROUP
    zero = T.Broadcast(T.float32(0.0), S)
    with tir.loop("c", ncols) as c:
        j = tir.let("c_j", cols(c))
        vx = tir.let("c_x", x(j))
        k0 = tir.let("c_k0", ptr[j])
        kt = tir.let("c_kt", k0 + (ptr[j + 1] - k0) // U * U)      # first non-zero of the tail
        lo = tir.let("c_lo", sp[j, p])
        hi = tir.let("c_hi", sp[j, p + 1])
        with tir.loop("k", lo, T.max(T.min(hi, kt), lo)) as k:
            i = tir.let("k_i", T.Cast("int32", idx[k]) * S)
            w = T.Broadcast(wide(val, k), S)
            prod = T.call_llvm_pure_intrin(f"float32x{S}", "llvm.fma", vx, w, zero)
            T.buffer_store(acc, acc[T.Ramp(i, 1, S)] + prod, [T.Ramp(i, 1, S)])
        with tir.loop("kt", T.max(lo, kt), T.max(hi, T.max(lo, kt))) as k:
            i = tir.let("kt_i", T.Cast("int32", idx[k]) * S)
            T.buffer_store(acc, acc[T.Ramp(i, 1, S)] + vx * T.Broadcast(wide(val, k), S), [T.Ramp(i, 1, S)])


def _macs(cnt, blk, ptr, ncols, cols, x) -> None:
    """cnt[blk, s] += fan-out of every union column where stream s is active (batch 1's fanout_count)."""
    from tvm.script import tirx as T
    from . import tir
    S = LANES
    with tir.loop("mc", ncols) as c:
        j = tir.let("mc_j", cols(c))
        fan = T.Broadcast(ptr[j + 1] - ptr[j], S)
        keep = T.Select(x(j) != T.Broadcast(T.float32(0.0), S), fan, T.Broadcast(T.int32(0), S))
        T.buffer_store(cnt, cnt[blk, T.Ramp(0, 1, S)] + keep, [blk, T.Ramp(0, 1, S)])


def _layer(spec: EGRUKernelSpec, a: dict, t, l: int, blk, nval) -> None:
    from tvm.script import tirx as T
    from . import tir
    S, V, B, P = LANES, spec.vocab_size, a["B"], a["parts"]
    q8 = spec.int8_layers
    h, A = spec.hidden_sizes[l], spec.acc_size(l)
    acc, bias = a[f"acc{l}"], a[f"b{l}"]
    y, c = a[f"y{l}"], a[f"c{l}"]

    def tok(s):
        return T.max(T.min(a["tokens"][t, T.min(blk * S + s, B - 1)], V - 1), 0)

    def wide(buf, k):
        return buf[k] if str(buf.dtype) == "float32" else T.Cast("float32", buf[k])

    table = l == 0 and spec.embed_mode == "table"
    ui, un = a[f"ui{l}"], a[f"un{l}"]
    if l > 0:
        hp = spec.hidden_sizes[l - 1]
        ui_p, un_p, y_p = a[f"ui{l - 1}"], a[f"un{l - 1}"], a[f"y{l - 1}"]
    if l == 0 and not table:
        with once("xe", P):                     # the block's embedding rows, stream-minor: xe[i*S + s]
            with tir.loop("xi", spec.embedding_size) as i:
                for s in range(S):
                    T.buffer_store(a["xe"], a["emb"][tok(s), i], [i * S + s])
    with phase("p", P) as p:
        with T.If(p == P - 1):                 # the MAC counts (cnt is read after the last layer)
            with T.Then():
                if l == 0:
                    T.buffer_store(a["cnt"], T.Broadcast(T.int32(0), S), [blk, T.Ramp(0, 1, S)])
                else:
                    _macs(a["cnt"], blk, a[f"w{l}_ptr"], un_p[blk], lambda c_: ui_p[blk, c_],
                          lambda j: y_p[T.Ramp((blk * hp + j) * S, 1, S)])
                _macs(a["cnt"], blk, a[f"r{l}_ptr"], un[blk], lambda c_: ui[blk, c_],
                      lambda j: y[T.Ramp((blk * h + j) * S, 1, S)])
        r0 = tir.let("p_r0", a[f"rb{l}"][p])
        r1 = tir.let("p_r1", a[f"rb{l}"][p + 1])
        with tir.loop("o", r0, r1) as o:
            if table:
                for s in range(S):
                    g = T.Select(o < 3 * h, a["tab"][tok(s), T.min(o, 3 * h - 1)], T.float32(0.0))
                    if q8:
                        init = g
                    else:   # batch 1: tab[tk, o] (+ bias[o] unless the table holds it) for o < 3h, bias[o] after
                        init = T.Select(o < 3 * h, g if spec.table_bias else bias[o] + g, bias[o])
                    T.buffer_store(acc, init, [o * S + s])
            else:
                T.buffer_store(acc, T.Broadcast(T.float32(0.0) if q8 else bias[o], S), [T.Ramp(o * S, 1, S)])
        if l == 0 and not table:
            _scatter(acc, a["w0_ptr"], a["w0_idx"], a["w0_val"], a["w0_sp"], p, lambda c_: c_,
                     spec.embedding_size, lambda j: a["xe"][T.Ramp(j * S, 1, S)], wide)
        elif l > 0:
            _scatter(acc, a[f"w{l}_ptr"], a[f"w{l}_idx"], a[f"w{l}_val"], a[f"w{l}_sp"], p,
                     lambda c_: ui_p[blk, c_], un_p[blk], lambda j: y_p[T.Ramp((blk * hp + j) * S, 1, S)], wide)
        _scatter(acc, a[f"r{l}_ptr"], a[f"r{l}_idx"], a[f"r{l}_val"], a[f"r{l}_sp"], p,
                 lambda c_: ui[blk, c_], un[blk], lambda j: y[T.Ramp((blk * h + j) * S, 1, S)], wide)
    _update(spec, a, l, blk)
    with once("post", P):
        _events(spec, a, t, l, blk, nval)


def _events(spec: EGRUKernelSpec, a: dict, t, l: int, blk, nval) -> None:
    """After layer l's update (serial): padded lanes silent, the union of the block's events, each stream's
    count; the last layer: each stream's own event list for the decoder."""
    from tvm.script import tirx as T
    from . import tir
    S, L, h = LANES, len(spec.hidden_sizes), spec.hidden_sizes[l]
    y, ui, un = a[f"y{l}"], a[f"ui{l}"], a[f"un{l}"]
    with tir.loop("zj", h) as j:
        with tir.loop("zs", nval, S) as s:
            T.buffer_store(y, T.float32(0.0), [(blk * h + j) * S + s])
    T.buffer_store(un, 0, [blk])
    evc, lanes = a["evc"], T.Ramp(0, 1, S)
    one, zero = T.Broadcast(T.int32(1), S), T.Broadcast(T.int32(0), S)
    T.buffer_store(evc, zero, [blk, lanes])
    with tir.loop("uj", h) as j:
        n = tir.let("u_n", un[blk])
        T.buffer_store(ui, j, [blk, n])
        T.buffer_store(evc, evc[blk, lanes] + T.Select(y[T.Ramp((blk * h + j) * S, 1, S)] != T.Broadcast(
            T.float32(0.0), S), one, zero), [blk, lanes])
        anyv = y[(blk * h + j) * S] != T.float32(0.0)
        for s in range(1, S):
            anyv = T.Or(anyv, y[(blk * h + j) * S + s] != T.float32(0.0))
        T.buffer_store(un, n + T.Cast("int32", anyv), [blk])
    with tir.loop("es", nval) as s:
        b = tir.let("es_b", blk * S + s)
        T.buffer_store(a["stats"], evc[blk, s], [t, b, l])
        if l == L - 1:             # the MACs; the stream's own event list (batch 1's compress) for the decoder
            T.buffer_store(a["stats"], a["cnt"][blk, s], [t, b, L])
            T.buffer_store(a["den"], 0, [b])
            with tir.loop("dq", h) as q:
                n = tir.let("dq_n", a["den"][b])
                yq = tir.let("dq_y", y[(blk * h + q) * S + s])
                T.buffer_store(a["dei"], q, [b * h + n])
                T.buffer_store(a["dev"], yq, [b * h + n])
                T.buffer_store(a["den"], n + T.Cast("int32", yq != T.float32(0.0)), [b])


class _Fixed:
    """`tir.update`'s threshold array inside one unit's lanes: every lane reads thr[j]."""

    def __init__(self, value):
        self.value = value

    def __getitem__(self, _):
        return self.value


def _update(spec: EGRUKernelSpec, a: dict, l: int, blk) -> None:
    """`tir.update` on each unit's LANES lanes (units split into `parts` tasks): per element the expressions of
    batch 1's `tir.update_packed` / `tir.update_scaled`."""
    from . import tir
    S, P = LANES, a["parts"]
    h = spec.hidden_sizes[l]
    acc = a[f"acc{l}"]
    thr = a[f"thr{l}"]
    with phase("up", P) as p:
        with tir.loop("uj", h * p // P, h * (p + 1) // P) as j:
            off = (blk * h + j) * S
            if spec.int8_layers:
                b6, s6 = a[f"b{l}"], a[f"s{l}"]

                def gx(g, s):
                    return b6[g * h + j] + s6[g * h + j] * acc[(g * h + j) * S + s]

                def gh(g, s):
                    return b6[(3 + g) * h + j] + s6[(3 + g) * h + j] * acc[((3 + g) * h + j) * S + s]

                tir.update(S, lambda s: gx(0, s) + gh(0, s), lambda s: gx(1, s) + gh(1, s), lambda s: gx(2, s),
                           lambda s: gh(2, s), _Fixed(thr[j]), a[f"c{l}"], a[f"y{l}"], spec.fast_math, off=off)
            else:
                tir.update(S, lambda s: acc[j * S + s], lambda s: acc[(h + j) * S + s],
                           lambda s: acc[(2 * h + j) * S + s], lambda s: acc[(3 * h + j) * S + s], _Fixed(thr[j]),
                           a[f"c{l}"], a[f"y{l}"], spec.fast_math, off=off)


def _step(spec: EGRUKernelSpec, a: dict, t, score: bool) -> None:
    from tvm.script import tirx as T
    from . import tir
    S, B, P = LANES, a["B"], a["parts"]
    L = len(spec.hidden_sizes)
    with region():
        for l in range(L):
            with tir.loop(f"lb{l}", a["NB"]) as blk:
                _layer(spec, a, t, l, blk, tir.let("nval", T.min(B - blk * S, S)))
        _head(spec, a, t, score)


def _head(spec: EGRUKernelSpec, a: dict, t, score: bool) -> None:
    """The decoder (every stream's batch-1 event decoder, part p: its own contiguous range of the vocabulary, by
    V-chunks) and the NLL (streams split over the parts)."""
    from tvm.script import tirx as T
    from . import tir
    from .streams import DECODER_CHUNK
    S, V, B, P = LANES, spec.vocab_size, a["B"], a["parts"]
    L = len(spec.hidden_sizes)
    hL = spec.hidden_sizes[L - 1]
    logits = a["logits"]
    CH = min(DECODER_CHUNK, V)

    def chunk(base, width):
        with tir.loop("db", B) as b:
            def load(v, b=b):
                return logits[b * V + v]

            def store(v, value, b=b):
                T.buffer_store(logits, value, [b * V + v])

            tir.decoder(spec, a["dbias"], a["dwt"], a["dei"], a["dev"], a["den"], None, load, store, a.get("dscale"),
                        eoff=b * hL, es=b, vrange=(base, width))

    with phase("vp", P) as p:                 # part p: logits [v0, v1), v0 a multiple of LANES
        v0 = tir.let("vp_0", V * p // P // S * S)
        v1 = tir.let("vp_1", T.Select(p == P - 1, V, V * (p + 1) // P // S * S))
        with tir.loop("vc", (v1 - v0 + CH - 1) // CH) as vc:
            chunk(v0 + vc * CH, T.min(CH, v1 - v0 - vc * CH))
    if score:
        from tvm.tirx.script.builder import ir as TB
        with phase("nb", B) as b:           # each stream's reduction scratch: its own 2 x NLL_LANES of red
            red = TB.decl_buffer((2 * NLL_LANES,), "float64", data=a["red"].data, elem_offset=b * 2 * NLL_LANES)
            tir.nll(V, logits, a["targets"][t, b], red, NLL_LANES,
                    lambda value: T.buffer_store(a["nll"], value, [t, b]), base=b * V)


def shared_functions(spec: EGRUKernelSpec) -> dict:
    """{name: PrimFunc} of ``egru_shared_run`` (logits [B, V] of the last step) and ``egru_shared_score``."""
    from .streams import prim_funcs
    if not supports_shared(spec):
        raise ValueError("shared-read streams need interleave 1 and the event decoder without a projection")
    return prim_funcs("egru_shared", lambda score: _declare(spec, score), lambda a, t, score: _step(spec, a, t, score))


def build_egru_shared(spec: EGRUKernelSpec, target=None):
    """Compile :func:`shared_functions` alone (the runner builds it on first use, through the compile cache)."""
    import tvm
    return tvm.compile(tvm.IRModule(shared_functions(spec)), resolve_target(target))
