"""Batched streams: ``egru_streams_run`` / ``egru_streams_score`` advance B independent streams (B symbolic: one
library serves any B) per step, with per-stream event gating, in one call for T steps.

The weights are the fused step's (`step.py`, same names and packing); the states are batched, stream-major
(``c{l}``, ``y{l}`` [B*h], the accumulators ``acc{l}`` [B*A]), and each layer keeps, instead of one event
list, the *union* event lists of its y (`tir.union_events`): the units active in any stream and, per unit,
the streams active on it with their values. A scatter walks the union (`tir.scatter_union`): each active
column of W / R is read from memory once and added into the accumulator row of every stream active on it; the
decoder walks the union of the last layer in V-chunks of :data:`DECODER_CHUNK` (each active row chunk read
once, then added from cache into the logits of each stream active on that unit). So the weight bytes per step
are those of the units active in *any* stream, while every stream's sums run over its own active units only.

Each stream's contributions arrive in ascending unit order (as in the batch-1 kernel with ``interleave=1``):
its numbers equal its own batch-1 run up to float32 summation order (the tests check exact events and NLL
within 1e-6). EvNN's projection decoder is not batched (the runner falls back to one stream at a time).
"""
from __future__ import annotations

from .spec import EGRUKernelSpec, resolve_target
from .step import NLL_LANES, _params

__all__ = ["STREAM_STATE", "DECODER_CHUNK", "streams_functions", "build_egru_streams", "stream_arg_names",
           "weight_arg_names"]

#: batched per-layer state / scratch arguments (besides the weights): name -> (size in units of h / A, dtype)
STREAM_STATE = ("c", "y", "ui", "un", "sc", "si", "sv", "acc")
#: logits per stream and V-chunk of the batched decoder (B x chunk floats stay in L1 while the rows stream)
DECODER_CHUNK = 256
_STEP_STATE = ("c", "y", "ei", "ev", "en", "acc")


def weight_arg_names(spec: EGRUKernelSpec) -> list[str]:
    """The weight arguments of the fused step (same packing), in order."""
    state = {f"{k}{l}" for l in range(len(spec.hidden_sizes)) for k in _STEP_STATE}
    return [n for n, _, _ in _params(spec, "step")[1:-1] if n not in state]


def _state_params(spec: EGRUKernelSpec) -> list[tuple[str, tuple, str]]:
    out = []
    for l, h in enumerate(spec.hidden_sizes):
        out += [(f"c{l}", ("BH",), "float32"), (f"y{l}", ("BH",), "float32"), (f"ui{l}", (h,), "int32"),
                (f"un{l}", (1,), "int32"), (f"sc{l}", (h,), "int32"), (f"si{l}", (f"BH{l}",), "int32"),
                (f"sv{l}", (f"BH{l}",), "float32"), (f"acc{l}", (f"BA{l}",), "float32")]
    return out


def stream_arg_names(spec: EGRUKernelSpec) -> list[str]:
    """Weights, then the batched states (:func:`_state_params`), between the tokens and the outputs."""
    return weight_arg_names(spec) + [n for n, _, _ in _state_params(spec)]


def _declare(spec: EGRUKernelSpec, score: bool) -> dict:
    """Arguments of egru_streams_{run,score}: tokens [T, B] (+ targets), weights, states, logits [B*V], (red,
    nll [T, B]), stats [T, B, L+1]; symbolic T, B; every batched size is checked against B."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    weights = {n: (shape, dt) for n, shape, dt in _params(spec, "step")}
    L = len(spec.hidden_sizes)
    Tn, B = T.int32(), T.int32()
    IRBuilder.name("T", Tn)
    IRBuilder.name("B", B)
    dims = {"T": Tn, "B": B}
    params = [("tokens", ("T", "B"), "int32")] + ([("targets", ("T", "B"), "int32")] if score else [])
    params += [(n, weights[n][0], weights[n][1]) for n in weight_arg_names(spec)]
    params += _state_params(spec)
    params += [("logits", ("BV",), "float32")]
    if score:
        params += [("red", (2 * NLL_LANES,), "float64"), ("nll", ("T", "B"), "float64")]
    params += [("stats", ("T", "B", L + 1), "int32")]
    handles = [(n, T.arg(n + "_h", T.handle()), shape, dt) for n, shape, dt in params]
    a = {"T": Tn, "B": B}
    for n, hdl, shape, dt in handles:
        shp = []
        for d in shape:
            if not isinstance(d, str):
                shp.append(d)
            elif d in dims:
                shp.append(dims[d])
            elif d == "BH":                     # c, y of layer l: B * h
                shp.append(B * spec.hidden_sizes[int(n[1:]) if n[0] in "cy" else 0])
            elif d.startswith("BH"):
                shp.append(B * spec.hidden_sizes[int(d[2:])])
            elif d.startswith("BA"):
                shp.append(B * spec.acc_size(int(d[2:])))
            elif d == "BV":
                shp.append(B * spec.vocab_size)
            else:                               # nnz of a weight array
                if d not in dims:
                    dims[d] = T.int32()
                    IRBuilder.name(d, dims[d])
                shp.append(dims[d])
        a[n] = T.match_buffer(hdl, tuple(shp), dt)
    return a


def _streams_step(spec: EGRUKernelSpec, a: dict, t, score: bool) -> None:
    """Step t of every stream: layers (union scatters), decoder (union rows), [NLL], stats."""
    from tvm.script import tirx as T
    from . import tir
    V = spec.vocab_size
    B = a["B"]
    L = len(spec.hidden_sizes)
    q8 = spec.int8_layers
    st = a["stats"]
    with tir.loop("sb", B) as b:
        for l in range(L + 1):
            T.buffer_store(st, 0, [t, b, l])

    def add_macs(b, n):
        T.buffer_store(st, st[t, b, L] + n, [t, b, L])

    for l, (n_in, h) in enumerate(zip(spec.input_sizes, spec.hidden_sizes)):
        A = spec.acc_size(l)
        acc, bias = a[f"acc{l}"], a[f"b{l}"]
        with tir.loop("ib", B) as b:
            tk = tir.let("tk", T.max(T.min(a["tokens"][t, b], V - 1), 0))
            if l == 0 and spec.embed_mode == "table":
                tab = a["tab"]
                with tir.loop("o", 3 * h) as o:
                    T.buffer_store(acc, tab[tk, o] if q8 else bias[o] + tab[tk, o], [b * A + o])
                with tir.loop("o_g", 3 * h if q8 else h) as o:
                    T.buffer_store(acc, T.float32(0.0) if q8 else bias[3 * h + o], [b * A + 3 * h + o])
            else:
                with tir.loop("o", A) as o:
                    T.buffer_store(acc, T.float32(0.0) if q8 else bias[o], [b * A + o])
                if l == 0:
                    tir.scatter_dense(a["w0_ptr"], a["w0_idx"], a["w0_val"], acc, a["emb"], n_in, 1, row=tk,
                                      off=b * A)
        if l > 0:
            p = l - 1
            tir.scatter_union(a[f"w{l}_ptr"], a[f"w{l}_idx"], a[f"w{l}_val"], acc, A, B, a[f"ui{p}"], a[f"un{p}"],
                              a[f"sc{p}"], a[f"si{p}"], a[f"sv{p}"], add_macs)
        tir.scatter_union(a[f"r{l}_ptr"], a[f"r{l}_idx"], a[f"r{l}_val"], acc, A, B, a[f"ui{l}"], a[f"un{l}"],
                          a[f"sc{l}"], a[f"si{l}"], a[f"sv{l}"], add_macs)
        with tir.loop("ub", B) as b:
            if q8:
                tir.update_scaled(h, acc, bias, a[f"s{l}"], a[f"thr{l}"], a[f"c{l}"], a[f"y{l}"], spec.fast_math,
                                  off=b * h, aoff=b * A)
            else:
                tir.update_packed(h, acc, a[f"thr{l}"], a[f"c{l}"], a[f"y{l}"], spec.fast_math, off=b * h,
                                  aoff=b * A)

        def count(b, act, l=l):
            T.buffer_store(st, st[t, b, l] + act, [t, b, l])

        tir.union_events(h, B, a[f"y{l}"], a[f"ui{l}"], a[f"un{l}"], a[f"sc{l}"], a[f"si{l}"], a[f"sv{l}"], count)
    last = L - 1
    _decoder(spec, a, B, a[f"ui{last}"], a[f"un{last}"], a[f"sc{last}"], a[f"si{last}"], a[f"sv{last}"])
    if score:
        with tir.loop("nb", B) as b:
            tir.nll(V, a["logits"], a["targets"][t, b], a["red"], NLL_LANES,
                    lambda value: T.buffer_store(a["nll"], value, [t, b]), base=b * V)


def _decoder(spec: EGRUKernelSpec, a: dict, B, ui, un, sc, si, sv) -> None:
    """logits[b*V + v] = dbias[v] + sum over the units j active in stream b of y_b[j] * D^T[j, v] (int8: the
    scale after the sum), V in chunks: each union row chunk is read once for all streams active on it."""
    from tvm.script import tirx as T
    from . import tir
    V = spec.vocab_size
    logits, dbias, dwt = a["logits"], a["dbias"], a["dwt"]
    dscale = a.get("dscale")
    CH = min(DECODER_CHUNK, V)
    nfull, tail = divmod(V, CH)

    def chunk(base, width: int):
        with tir.loop("db", B) as b:
            with tir.loop("dv", width) as v:
                T.buffer_store(logits, T.float32(0.0) if dscale is not None else dbias[base + v],
                               [b * V + base + v])
        with tir.loop("du", un[0]) as u:
            j = tir.let("du_j", ui[u])
            with tir.loop("du_s", sc[j]) as s:
                b = tir.let("du_b", si[j * B + s])
                yj = tir.let("du_y", sv[j * B + s])
                with tir.loop("du_v", width) as v:
                    w = dwt[j, base + v]
                    w = w if str(dwt.dtype) == "float32" else T.Cast("float32", w)
                    T.buffer_store(logits, logits[b * V + base + v] + yj * w, [b * V + base + v])
        if dscale is not None:
            with tir.loop("ds", B) as b:
                with tir.loop("ds_v", width) as v:
                    T.buffer_store(logits, dbias[base + v] + dscale[base + v] * logits[b * V + base + v],
                                   [b * V + base + v])

    if nfull:
        with tir.loop("vb", nfull) as vb:
            chunk(vb * CH, CH)
    if tail:
        chunk(nfull * CH, tail)


def streams_functions(spec: EGRUKernelSpec) -> dict:
    """{name: PrimFunc} of ``egru_streams_run`` (logits [B*V] of the last step) and ``egru_streams_score``."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as TB
    from . import tir
    if spec.projection:
        raise ValueError("batched streams do not support EvNN's projection decoder")
    funcs = {}
    for score in (False, True):
        name = "egru_streams_score" if score else "egru_streams_run"
        with IRBuilder() as ib:
            with TB.prim_func():
                T.func_name(name)
                T.func_attr({"global_symbol": name, "tir.noalias": True})
                a = _declare(spec, score)
                with tir.loop("t", a["T"]) as t:
                    _streams_step(spec, a, t, score)
        funcs[name] = ib.get()
    return funcs


def build_egru_streams(spec: EGRUKernelSpec, target=None):
    """Compile :func:`streams_functions` alone (the artifact's library holds them next to the step kernels)."""
    import tvm
    return tvm.compile(tvm.IRModule(streams_functions(spec)), resolve_target(target))
