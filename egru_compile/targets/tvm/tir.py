"""TIR building blocks of the EGRU kernels, written with TVM's script IR builder (no TVMScript source text).

Every function here appends statements to the TIR function being built — by ``tvm.script.ir_builder`` frames
(`step.py`, whose signature depends on the number of layers) or from inside a ``@T.prim_func`` body that calls
it (`library.py`). Arguments are TIR buffers and expressions; Python ints / floats / callables parameterise
what is generated (unroll factors, index dtype, how a column's input unit and weight are read). Python loops
over those parameters unroll at build time; ``range`` over a TIR expression becomes a TIR loop.

Math of one layer (gate order z, r, g; hidden h; input n_in)::

    gx = x @ W + b        (W [n_in, 3h])        gh = y @ R + br      (R [h, 3h])
    z = sigmoid(gx_z + gh_z)   r = sigmoid(gx_r + gh_r)   g = tanh(gx_g + r * gh_g)
    ct = z * c + (1 - z) * g   o = (ct - thr > 0)   y' = o * ct   c' = ct - o * thr

* scatter loops (:func:`scatter_columns`): each input column's non-zeros (input-major CSR, `layout.py`) in
  groups of 8 (indices read as 64-bit words, one vector multiply for the 8 products, then 8 scalar
  read-modify-writes of acc); optionally several sparse columns walked in lock step (``interleave``; the spec's default is 1, `spec.EGRUKernelSpec`):
  a lone layer whose weights sit in L2/L3 is fastest with 1, but in the 3-layer stack the weights miss the
  caches and 8 streams in flight win.
* :func:`update`: the gate / threshold / reset update, branch free and vectorisable (``fast``: a polynomial
  exp, max rel. error ~1e-7, instead of libm's expf behind ``T.sigmoid`` / ``T.tanh``).
* :func:`compress`: branch-free stream compaction of y's non-zeros into an event list (ei, ev, en).
* :func:`decoder`: ``logits = dbias + y_last @ D^T`` walking only the active units of y_last (event mode) or
  all of them (dense mode) over rows of ``D^T``, several rows streamed per pass over the logits.
"""
from __future__ import annotations

from typing import Callable

from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder

__all__ = ["let", "loop", "fexp", "sigmoid", "tanh", "scatter_columns", "scatter_events", "scatter_dense",
           "update", "update_gates", "update_packed", "update_scaled", "compress", "decoder", "fanout_count",
           "nll", "projection", "SCATTER_GROUP"]

#: non-zeros per group in the scatter inner loop (one float32x8 product vector)
SCATTER_GROUP = 8

Index = Callable[[object], object]   # TIR index expression -> TIR expression


def let(name: str, value):
    """Bind `value` to a fresh immutable variable (``name: T.let = value``) and return the variable."""
    var = T.Bind(value)
    IRBuilder.name(name, var)
    return var


class loop:
    """``for name in range(start, stop)`` as a TIR serial loop: ``with loop("i", n) as i: ...``."""

    def __init__(self, name: str, start, stop=None):
        self.name = name
        self.frame = T.serial(0, start) if stop is None else T.serial(start, stop)

    def __enter__(self):
        var = self.frame.__enter__()
        IRBuilder.name(self.name, var)
        return var

    def __exit__(self, *exc):
        return self.frame.__exit__(*exc)


def _f(x: float):
    return T.float32(float(x))


def fexp(x, lanes: int = 1):
    """Cephes-style expf: clamp, range-reduce by ln2, degree-6 polynomial, scale by 2^n built with integer
    bit ops. Branch free, vectorisable, rel. error < 1.5e-7. `lanes` > 1: `x` is a float32 vector."""
    def c(v):
        return _f(v) if lanes == 1 else T.Broadcast(_f(v), lanes)

    def ci(v):
        return T.int32(v) if lanes == 1 else T.Broadcast(T.int32(v), lanes)

    sfx = "" if lanes == 1 else f"x{lanes}"
    xc = let("ex_x", T.max(T.min(x, c(88.0)), c(-87.0)))
    n = let("ex_n", T.floor(xc * c(1.44269504088896341) + c(0.5)))
    r = let("ex_r", xc - n * c(0.693359375) + n * c(2.12194440e-4))
    p = let("ex_p", ((((((c(1.9875691500e-4) * r + c(1.3981999507e-3)) * r + c(8.3334519073e-3)) * r
                         + c(4.1665795894e-2)) * r + c(1.6666665459e-1)) * r + c(5.0000001201e-1))
                     * r * r + r + c(1.0)))
    bits = T.shift_left(T.Cast("int32" + sfx, n) + ci(127), ci(23))
    return let("ex", p * T.reinterpret("float32" + sfx, bits))


def sigmoid(x, fast: bool):
    if fast:
        return let("sg", _f(1.0) / (_f(1.0) + fexp(_f(0.0) - x)))
    return let("sg", T.sigmoid(x))


def tanh(x, fast: bool):
    if fast:
        return let("th", _f(2.0) / (_f(1.0) + fexp(_f(-2.0) * x)) - _f(1.0))
    return let("th", T.tanh(x))


def _ix(idx, k):
    """idx[k] as an int32 index."""
    return idx[k] if idx.dtype == "int32" else T.Cast("int32", idx[k])


def _wide(buf, index, lanes: int = 1):
    """``buf[index]`` (a float16 / int8 weight value, or a vector of `lanes`) widened to float32."""
    x = buf[index]
    if str(buf.dtype) == "float32":
        return x
    return T.Cast("float32" if lanes == 1 else f"float32x{lanes}", x)


def _group(idx, val, acc, k, v, U: int, off=None) -> None:
    """U consecutive non-zeros k..k+U-1 of one column: acc[idx[k+j]] += (v * val[k:k+U])[j].

    The indices are read as 64-bit words (4 int16/uint16 or 2 int32 per load; unaligned is fine) and split with
    shifts/masks in registers, the U products come from one vector multiply and are taken lane by lane: per
    non-zero only the acc load + store remain as memory operations (the scalar loop needs four), which is what
    bounds this loop. Indices are >= 0 (checked at pack time), so masking the low bits is exact for the signed
    types too."""
    bits = 32 if idx.dtype == "int32" else 16
    per = 64 // bits
    mask = (1 << bits) - 1
    words = [let(f"w{w}", T.reinterpret("int64", idx[T.Ramp(k + w * per, 1, per)])) for w in range(U // per)]
    prod = let("p", T.Broadcast(v, U) * _wide(val, T.Ramp(k, 1, U), U))
    for j in range(U):
        w, sub = divmod(j, per)
        sh = T.shift_right(words[w], T.int64(bits * sub)) if sub else words[w]
        ix = T.Cast("int32", sh) if sub == per - 1 else T.Cast("int32", T.bitwise_and(sh, T.int64(mask)))
        if off is not None:
            ix = ix + off
        T.buffer_store(acc, acc[ix] + T.Shuffle([prod], [j]), [ix])


def _column_range(idx, val, acc, k0, k1, v, U: int, off=None) -> None:
    """acc[off + idx[k]] += v * val[k] for k in [k0, k1): groups of U, then a scalar tail."""
    s = let("s", k0)
    m = let("m", (k1 - s) // U)
    with loop("q", m) as q:
        _group(idx, val, acc, s + q * U, v, U, off)
    with loop("t", s + m * U, k1) as t:
        ix = _ix(idx, t) if off is None else _ix(idx, t) + off
        T.buffer_store(acc, acc[ix] + v * _wide(val, t), [ix])


def scatter_columns(ptr, idx, val, acc, n, col: Index, wgt: Index, interleave: int, off=None,
                    prefetch: int = 0) -> None:
    """Scatter-add columns: for c in range(n): acc[idx[k]] += wgt(c) * val[k] over column col(c).

    Each column's non-zeros are processed in groups of ``SCATTER_GROUP`` (see :func:`_group`: ~0.37 vs ~0.61 ns
    per non-zero for the plain scalar loop on Zen 4, 750 -> 1350 at 85 % sparsity). With ``interleave`` = G > 1,
    G columns are walked in lock step (more independent streams in flight: wins when the weights are not cache
    resident, e.g. the whole PTB stack; costs ~25 % when one layer sits in L2/L3); indices inside one column
    are distinct, so the read-modify-writes of one column never conflict. With G = 1 and ``prefetch`` = D > 0,
    the cache lines of column c + D's values and indices are prefetched before column c is added (the sums
    and their order are unchanged)."""
    U = SCATTER_GROUP
    G = max(1, int(interleave))
    if G > 1:
        with loop("c", n // G) as c:
            cols = []
            for g in range(G):
                ci = let(f"c{g}_i", col(c * G + g))
                cv = let(f"c{g}_v", wgt(c * G + g))
                cols.append((cv, let(f"c{g}_0", ptr[ci]), let(f"c{g}_1", ptr[ci + 1])))
            mins = cols[0][2] - cols[0][1]
            for _, k0, k1 in cols[1:]:
                mins = T.min(mins, k1 - k0)
            m = let("c_m", mins // U)
            with loop("c_q", m) as q:
                for cv, k0, _ in cols:
                    _group(idx, val, acc, k0 + q * U, cv, U, off)
            for cv, k0, k1 in cols:
                _column_range(idx, val, acc, k0 + m * U, k1, cv, U, off)
        start = n // G * G
    else:
        start = 0
    with loop("c", start, n) as c:
        ci = let("c_i", col(c))
        cv = let("c_v", wgt(c))
        if prefetch > 0:           # the column `prefetch` ahead: its value and index lines into the cache
            cn = let("c_n", col(T.min(c + prefetch, n - 1)))
            _prefetch_range(val, ptr[cn], ptr[cn + 1])
            _prefetch_range(idx, ptr[cn], ptr[cn + 1])
        _column_range(idx, val, acc, let("c_k0", ptr[ci]), let("c_k1", ptr[ci + 1]), cv, U, off)


#: locality of the column prefetch (LLVM: 3 = prefetcht0, 1 = prefetcht2): into L2, not L1 — on Zen 4 a T0
#: prefetch of the next column evicts lines of the L1-resident accumulator; T2 measured ~10 % faster per
#: PTB-size token (f32: 409 vs 366 µs, medians of two interleaved copies each, docs/performance.md)
PREFETCH_LOCALITY = 1


def _prefetch_range(buf, k0, k1) -> None:
    """Software prefetch (read, into L2: :data:`PREFETCH_LOCALITY`) of the cache lines of buf[k0:k1]: the order
    and the results of the arithmetic stay as they are."""
    per = 64 // (int(str(buf.dtype).replace("float", "").replace("uint", "").replace("int", "")) // 8)
    a0 = let("pf_0", k0)
    with loop("pf", (k1 - a0 + per - 1) // per) as f:
        T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch", T.address_of(buf[a0 + f * per]),
                                      T.int32(0), T.int32(PREFETCH_LOCALITY), T.int32(1)))


def scatter_events(ptr, idx, val, acc, ei, ev, en, interleave: int = 8, off=None, eoff=0, es=0,
                   prefetch: int = 0) -> None:
    """acc[off + idx[k]] += v * val[k] for the CSR columns of the active inputs (event list ei, ev, en; batched
    streams: a stream's list at ``ei[eoff:]``, its count ``en[es]``, its accumulator row at `off`)."""
    scatter_columns(ptr, idx, val, acc, en[es], lambda c: ei[eoff + c], lambda c: ev[eoff + c], interleave, off,
                    prefetch)


def scatter_dense(ptr, idx, val, acc, x, n_in, interleave: int = 8, row=None, off=None) -> None:
    """acc[off + idx[k]] += x[i] * val[k] over all inputs i < n_in (``x[row, i]`` with `row`: an embedding
    row)."""
    wgt = (lambda c: x[c]) if row is None else (lambda c: x[row, c])
    scatter_columns(ptr, idx, val, acc, n_in, lambda c: c, wgt, interleave, off)


def update(h, az: Index, ar: Index, agx: Index, agh: Index, thr, c, y, fast: bool, off=0) -> None:
    """Elementwise gate / threshold / reset update over h units (vectorisable, branch free): c and y in place
    (at ``off + j``: a stream's row of batched states).

    az, ar, agx, agh: unit j -> z pre-activation, r pre-activation, gx_g, gh_g."""
    with loop("j", h) as j:
        z = sigmoid(az(j), fast)
        r = sigmoid(ar(j), fast)
        g = tanh(agx(j) + r * agh(j), fast)
        ct = let("ct", z * c[off + j] + (_f(1.0) - z) * g)
        th = let("th", thr[j])
        spike = let("sp", ct - th > _f(0.0))
        T.buffer_store(y, T.Select(spike, ct, _f(0.0)), [off + j])
        T.buffer_store(c, T.Select(spike, ct - th, ct), [off + j])


def update_gates(h, gx, gh, thr, c, y, fast: bool) -> None:
    """:func:`update` from separate gate pre-activations gx[3h], gh[3h] (biases included)."""
    update(h, lambda j: gx[j] + gh[j], lambda j: gx[h + j] + gh[h + j], lambda j: gx[2 * h + j],
           lambda j: gh[2 * h + j], thr, c, y, fast)


def update_packed(h, acc, thr, c, y, fast: bool, off=0, aoff=0) -> None:
    """:func:`update` from the packed accumulator acc[4h] of `layout.pack_layer` (z|r sums, gx_g, gh_g)
    (batched: states at `off`, the accumulator at `aoff`)."""
    update(h, lambda j: acc[aoff + j], lambda j: acc[aoff + h + j], lambda j: acc[aoff + 2 * h + j],
           lambda j: acc[aoff + 3 * h + j], thr, c, y, fast, off)


def update_scaled(h, acc, bias6, scale6, thr, c, y, fast: bool, off=0, aoff=0) -> None:
    """:func:`update` from the int8 layout of `layout.pack_layer` (acc[6h] = W sums | R sums): the per-output
    scales are applied after the sums, gx = bias6[:3h] + scale6[:3h] * acc[:3h], gh = the same over [3h:6h)."""
    def gx(i):
        return bias6[i] + scale6[i] * acc[aoff + i]

    def gh(i):
        return bias6[3 * h + i] + scale6[3 * h + i] * acc[aoff + 3 * h + i]

    update(h, lambda j: gx(j) + gh(j), lambda j: gx(h + j) + gh(h + j), lambda j: gx(2 * h + j),
           lambda j: gh(2 * h + j), thr, c, y, fast, off)


def compress(h, y, ei, ev, en, off=0, es=0) -> None:
    """Branch-free stream compaction of y's non-zeros into the event list (ei, ev, en) (batched streams: y,
    ei, ev at `off`, the count at ``en[es]``)."""
    T.buffer_store(en, 0, [es])
    with loop("q", h) as q:
        n = let("q_n", en[es])
        yq = let("q_y", y[off + q])
        T.buffer_store(ei, q, [off + n])
        T.buffer_store(ev, yq, [off + n])
        T.buffer_store(en, n + T.Cast("int32", yq != _f(0.0)), [es])


def nll(V: int, logits, target, red, lanes: int, store: Callable[[object], None], base=0) -> None:
    """store(logsumexp(logits[0:V]) - logits[target]) as float64, the logits row read twice while it is in
    cache: a `lanes`-wide max, then exp(x - max) (:func:`fexp`, rel. error < 1.5e-7) summed in `lanes` float64
    accumulators (``red[lanes:2 lanes]``; ``red[0:lanes]`` holds the max lanes). Within ~2e-7 nats of the
    all-float64 formula (`runner.nll_reference`)."""
    nv, tail0 = V // lanes, V // lanes * lanes
    vec = (lambda b: T.Ramp(b, 1, lanes))
    lg = (lambda v: logits[base + v])
    mx = vec(0)
    sm = vec(lanes)
    T.buffer_store(red, T.Broadcast(T.float64(-3.0e38), lanes), [mx])
    with loop("nm", nv) as b:
        T.buffer_store(red, T.max(red[mx], T.Cast(f"float64x{lanes}", logits[vec(base + b * lanes)])), [mx])
    m = T.float64(-3.0e38)
    for j in range(lanes):
        m = T.max(m, red[j])
    with loop("nm_t", tail0, V) as v:        # the tail (V % lanes) folded into lane 0
        T.buffer_store(red, T.max(red[0], T.Cast("float64", lg(v))), [0])
    m = let("n_m", T.max(m, red[0]))
    m32 = let("n_m32", T.Cast("float32", m))   # exact: m is a float32 logit
    T.buffer_store(red, T.Broadcast(T.float64(0.0), lanes), [sm])
    with loop("ns", nv) as b:
        e = fexp(logits[vec(base + b * lanes)] - T.Broadcast(m32, lanes), lanes)
        T.buffer_store(red, red[sm] + T.Cast(f"float64x{lanes}", e), [sm])
    with loop("ns_t", tail0, V) as v:
        T.buffer_store(red, red[lanes] + T.Cast("float64", fexp(lg(v) - m32)), [lanes])
    s = red[lanes]
    for j in range(1, lanes):
        s = s + red[lanes + j]
    store(m + T.log(s) - T.Cast("float64", lg(target)))


def fanout_count(ptr, ei, en, load: Callable[[], object], store: Callable[[object], None], eoff=0,
                 es=0) -> None:
    """cell += the non-zero count of every active unit's column (the MACs of an event scatter)."""
    with loop("e", en[es]) as e:
        store(load() + (ptr[ei[eoff + e] + 1] - ptr[ei[eoff + e]]))


def projection(E, ptr, idx, val, pbias, pacc, ei, ev, en, pei, pev, pen, interleave: int,
               relu: bool = True) -> None:
    """EvNN's decoder projection: pacc = pbias + sum over the active units j of y_last of ev_j * P[:, j]
    (event-driven: only active units' columns). With `relu` (EvNN's 2023 code) then pacc = relu(pacc) and its
    non-zeros compressed into (pei, pev, pen) for the event decoder; without (EvNN >= 0.2.0) pacc is the
    graded, signed input of a dense decoder."""
    with loop("po", E) as o:
        T.buffer_store(pacc, pbias[o], [o])
    scatter_events(ptr, idx, val, pacc, ei, ev, en, interleave)
    if relu:
        with loop("pr", E) as o:
            T.buffer_store(pacc, T.max(pacc[o], _f(0.0)), [o])
        compress(E, pacc, pei, pev, pen)


def decoder(spec, dbias, dwt, ei, ev, en, y, load: Index, store: Callable[[object, object], None],
            dscale=None, eoff=0, es=0, vrange=None) -> None:
    """logits[v] = dbias[v] + sum_j y[j] * dwt[j, v] (load / store: logits element v of this step).

    event mode: j runs over the active units (ei, ev, en) only; dense mode: over all H units of y (same
    vectorised row-axpy code, for comparison). ``decoder_unroll`` rows of D^T are streamed per pass over the
    logits, in V-chunks of ``decoder_chunk`` (0 = whole rows). float16 / int8 rows (``spec.decoder_dtype``)
    are widened as they are read; int8 (`dscale` [V]): logits[v] = dbias[v] + dscale[v] * sum_j y[j] * q[j, v].
    Batched streams: the event list at ``ei[eoff:]`` with count ``en[es]``, only ``vrange = (base, width)`` of
    the logits (the same sums per element, in the same order)."""
    V = spec.vocab_size
    H = spec.decoder_input_size
    CH = V if spec.decoder_chunk <= 0 else max(1, min(int(spec.decoder_chunk), V))
    nfull, tail = divmod(V, CH)
    U = max(1, int(spec.decoder_unroll))
    if spec.decoder_mode == "dense":
        n, row, wgt = H, (lambda e: e), (lambda e: y[e])
    else:
        n, row, wgt = en[es], (lambda e: ei[eoff + e]), (lambda e: ev[eoff + e])

    q8 = dscale is not None

    def chunk(base, width: int):
        with loop("vi", width) as vi:
            store(base + vi, _f(0.0) if q8 else dbias[base + vi])
        if U > 1:
            with loop("de", n // U) as e:
                rows = [(let(f"de_j{u}", row(e * U + u)), let(f"de_y{u}", wgt(e * U + u))) for u in range(U)]
                with loop("de_v", width) as v:
                    terms = rows[0][1] * _wide(dwt, (rows[0][0], base + v))
                    for j, yj in rows[1:]:
                        terms = terms + yj * _wide(dwt, (j, base + v))
                    store(base + v, load(base + v) + terms)
            e0 = n // U * U
        else:
            e0 = 0
        with loop("de", e0, n) as e:
            j = let("de_j", row(e))
            yj = let("de_y", wgt(e))
            with loop("de_v", width) as v:
                store(base + v, load(base + v) + yj * _wide(dwt, (j, base + v)))
        if q8:
            with loop("ds", width) as v:
                store(base + v, dbias[base + v] + dscale[base + v] * load(base + v))

    if vrange is not None:
        chunk(*vrange)
        return
    if nfull:
        with loop("vb", nfull) as vb:
            chunk(vb * CH, CH)
    if tail:
        chunk(nfull * CH, tail)
