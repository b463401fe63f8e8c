"""uint8 event values and AVX-512 VNNI dot products over dense int8 rows (``spec.event_dtype = "u8"``).

With int8 weights the event products can run on integers: the event values of one event list (a layer's y,
all > 0) are quantized to uint8 with one scale per list and step, ``s = max(ev) / 255`` and ``q = min(255,
rint(ev / s))`` (ONNX Runtime's ``DynamicQuantizeLinear`` of a non-negative tensor: zero point 0, round half to
even; a scale that is 0 — no events, or only denormal values — is taken as 1), and the product of a matrix's
int8 rows with them is an exact int32 sum, ``isum[o] = sum_e q_e * W[i_e, o]``; the float value is
``s * isum[o]`` times the row scale of quantize-int8, applied after the sum as for float events. Integer sums do
not depend on the order of the additions.

Layout (:func:`permute_dense_rows`, numpy): the int8 matrix stored dense, one row per input unit (zeros
included: at 85 % weight sparsity 6.7 bytes per non-zero instead of 3 for int8 values + int16 indices), the
row length padded to a multiple of 64 and the bytes of every 64-output block permuted (:func:`block_position`)
so that interleaving 4 rows with vpunpck{l,h}bw and vpunpck{l,h}wd yields 4 x 16 dwords whose 4 bytes are the
4 rows' weights of one output, in natural output order.

Kernel (:func:`dot_rows`): the events are taken 4 at a time (one dword of 4 uint8 values broadcast), 8 per
pass over the sums (two groups): per 64 outputs and group, 4 row loads, 8 byte shuffles and 4 ``vpdpbusd``
(4 x 16 x 4 multiply-adds). :func:`quantize_events` builds the groups (row indices padded with row 0 and value
0). The events of a layer are quantized where they are read (the next layer's input product, the same layer's
recurrent product one step later, the decoder): all three see the same values.
"""
from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "EVENTS_PER_PASS", "padded", "padded_events", "block_position",
           "dense_event_rows", "permute_dense_rows", "quantize_events", "dot_rows", "sums_to_float"]

#: outputs per interleaved block (one 64-byte row segment per event)
BLOCK = 64
#: events (rows) per pass of :func:`dot_rows` over the sums: two groups of 4, one dword of uint8 values each
EVENTS_PER_PASS = 8


def padded(n_out: int) -> int:
    """Row length of the dense layout: n_out rounded up to a multiple of :data:`BLOCK`."""
    return -(-int(n_out) // BLOCK) * BLOCK


def padded_events(n: int) -> int:
    """Rows :func:`dot_rows` reads for n events: n rounded up to :data:`EVENTS_PER_PASS` (padding reads row 0)."""
    return -(-int(n) // EVENTS_PER_PASS) * EVENTS_PER_PASS


def block_position(o: np.ndarray | int):
    """Byte position, inside a 64-output block, of output o (0..63). After the two unpack steps, dword i of
    result k (k = 0..3) holds the bytes at positions 16 (i // 4) + 4 k + (i % 4); it must be output 16 k + i."""
    k, i = np.divmod(np.asarray(o), 16)
    return 16 * (i // 4) + 4 * k + i % 4


def dense_event_rows(indptr, indices, data, n_out: int) -> np.ndarray:
    """Input-major CSR (int8 data) -> dense int8 rows [n_in, padded(n_out)] in the block-permuted layout."""
    data = np.asarray(data)
    if data.dtype != np.int8:
        raise ValueError("the dense event rows need int8 values")
    indptr = np.asarray(indptr, np.int64)
    M = np.zeros((len(indptr) - 1, n_out), np.int8)
    M[np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), np.asarray(indices, np.int64)] = data
    return permute_dense_rows(M)


def permute_dense_rows(M) -> np.ndarray:
    """Dense int8 rows M [n_in, n_out] -> [n_in, padded(n_out)] in the block-permuted layout."""
    M = np.asarray(M)
    if M.dtype != np.int8 or M.ndim != 2:
        raise ValueError("the dense event rows need a 2-D int8 matrix")
    o = np.arange(M.shape[1])
    out = np.zeros((M.shape[0], padded(M.shape[1])), np.int8)
    out[:, o // BLOCK * BLOCK + block_position(o % BLOCK)] = M
    return out


def _byte_shuffles():
    """Index lists of vpunpck{l,h}bw and vpunpck{l,h}wd on two int8x64 vectors (TIR Shuffle of [x, y]: index
    j < 64 is x[j], 64 + j is y[j]); per 128-bit lane, as the instructions do."""
    def unpack(width: int, high: bool):
        out = []
        per = 16 // width                      # elements of `width` bytes per 128-bit lane
        for lane in range(4):
            base = 16 * lane
            for e in range(per // 2):
                src = (e + (per // 2 if high else 0)) * width
                out += [base + src + b for b in range(width)]
                out += [64 + base + src + b for b in range(width)]
        return out
    return {"lo8": unpack(1, False), "hi8": unpack(1, True), "lo16": unpack(2, False), "hi16": unpack(2, True)}


SHUFFLES = _byte_shuffles()


def quantize_events(ei, ev, en, qrow, qword, qs, eoff=0, es=0) -> None:
    """TIR: the event list (ei, ev, en) -> qs[0] = its scale, qword[g] = the 4 uint8 values of events 4g..4g+3
    (one int32, event 4g + j in byte j), qrow[4g + j] = their input units; padded to a multiple of 8 events
    with row 0 and value 0 (what :func:`dot_rows` reads)."""
    from tvm.script import tirx as T
    from .tir import let, loop
    n = let("qn", en[es])
    T.buffer_store(qs, T.float32(0.0), [0])
    with loop("qm", n) as c:
        T.buffer_store(qs, T.max(qs[0], ev[eoff + c]), [0])
    s0 = let("qs0", qs[0] / T.float32(255.0))
    s = let("qsc", T.Select(s0 > T.float32(0.0), s0, T.float32(1.0)))     # no events (or denormal ones): 1
    T.buffer_store(qs, s, [0])
    with loop("qg", (n + EVENTS_PER_PASS - 1) // EVENTS_PER_PASS * (EVENTS_PER_PASS // 4)) as g:
        word = T.int64(0)
        for j in range(4):
            c = g * 4 + j
            valid = c < n
            cc = T.min(c, T.max(n - 1, 0))
            q = T.Cast("int64", T.min(T.nearbyint(ev[eoff + cc] / s), T.float32(255.0)))
            word = word + T.Select(valid, q, T.int64(0)) * T.int64(1 << (8 * j))
            T.buffer_store(qrow, T.Select(valid, ei[eoff + cc], 0), [g * 4 + j])
        T.buffer_store(qword, T.Cast("int32", word), [g])


def dot_rows(rows, npad: int, qrow, qword, n, isum, base=0) -> None:
    """TIR: isum[base + o] = sum over the quantized events (:func:`quantize_events`, n of them) of q * rows[i, o]
    for o < npad (int32, exact). `rows`: the block-permuted dense int8 [n_in, npad]."""
    from tvm.script import tirx as T
    from .tir import let, loop
    nb = npad // BLOCK
    with loop("dz", npad // 16) as z:
        T.buffer_store(isum, T.Broadcast(T.int32(0), 16), [T.Ramp(base + z * 16, 1, 16)])

    def dpbusd(acc, a, x):
        return T.call_llvm_pure_intrin("int32x16", "llvm.x86.avx512.vpdpbusd.512", acc, a, x)

    def shuffle(x, y, kind):
        return T.Shuffle([x, y], SHUFFLES[kind])

    with loop("dg", (n + EVENTS_PER_PASS - 1) // EVENTS_PER_PASS) as g:
        groups = EVENTS_PER_PASS // 4
        words = [let(f"da{h}", T.reinterpret("int8x64", T.Broadcast(qword[g * groups + h], 16)))
                 for h in range(groups)]
        r = [let(f"dr{j}", qrow[g * EVENTS_PER_PASS + j]) for j in range(EVENTS_PER_PASS)]
        with loop("db", nb) as b:
            o = let("do", base + b * BLOCK)
            s = [let(f"ds{k}", isum[T.Ramp(o + 16 * k, 1, 16)]) for k in range(4)]
            for h in range(groups):
                A, B, C, D = (rows[r[4 * h + j], T.Ramp(b * BLOCK, 1, BLOCK)] for j in range(4))
                t0 = let("t0", shuffle(A, B, "lo8"))
                t1 = let("t1", shuffle(A, B, "hi8"))
                t2 = let("t2", shuffle(C, D, "lo8"))
                t3 = let("t3", shuffle(C, D, "hi8"))
                for k, (x, y, kind) in enumerate(((t0, t2, "lo16"), (t0, t2, "hi16"), (t1, t3, "lo16"),
                                                  (t1, t3, "hi16"))):
                    s[k] = let(f"ds{k}", dpbusd(s[k], words[h], shuffle(x, y, kind)))
            for k in range(4):
                T.buffer_store(isum, s[k], [T.Ramp(o + 16 * k, 1, 16)])


def sums_to_float(n_out: int, isum, qs, acc, off=0, ioff=0) -> None:
    """TIR: acc[off + o] = float(isum[ioff + o]) * qs[0] for o < n_out (the event scale; the row scale and the
    bias come after, as for float events)."""
    from tvm.script import tirx as T
    from .tir import let, loop
    s = let("qf", qs[0])
    with loop("df", n_out) as o:
        T.buffer_store(acc, T.Cast("float32", isum[ioff + o]) * s, [off + o])
