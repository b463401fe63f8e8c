"""Batched streams, each stream's batch-1 code in turn: ``egru_streams_run`` / ``egru_streams_score`` advance B
independent streams (B symbolic: one library serves any B) per step, with per-stream event gating, in one call
for T steps. Specs whose batch-1 scatter adds columns in order (``interleave`` 1, the default) run the
shared-read kernels of `shared.py` instead; these serve the others (``interleave`` > 1: artifacts compiled
before that default), and :func:`prim_funcs` builds both libraries' run / score pair.

The weights are the fused step's (`step.py`, same names and packing); the states are batched, stream-major
(``c{l}``, ``y{l}`` and y's event list ``ei{l}`` / ``ev{l}`` [B*h], the counts ``en{l}`` [B], the accumulators
``acc{l}`` [B*A]). A step runs *layer-major*: layer l for every stream, then layer l + 1, so one layer's
weights (a few MB at PTB size) stay in the last-level cache while the B streams scatter through them, instead
of the whole model's weights streaming from memory once per token; the decoder runs in V-chunks of
:data:`DECODER_CHUNK` columns, every stream's active rows per chunk, so a chunk of D^T is read from memory once
per step and from cache for the other streams.

Each stream runs exactly the batch-1 code (`tir.scatter_events`, `tir.update_*`, `tir.compress`,
`tir.decoder` on its own event lists, same interleave and row grouping), so its events, logits and NLL equal
its own batch-1 run bit for bit. EvNN's projection decoder and the dense decoder mode are not batched (the
runner falls back to one stream at a time).
"""
from __future__ import annotations

from .spec import EGRUKernelSpec, resolve_target
from .signature import NLL_LANES, STREAM_STATE, kernel_params, stream_arg_names, stream_state_params, weight_arg_names

__all__ = ["STREAM_STATE", "DECODER_CHUNK", "streams_functions", "build_egru_streams", "stream_arg_names",
           "weight_arg_names"]

#: V-chunk of the batched decoder: the active rows' chunk of D^T (<= H x chunk x 4 bytes) stays in cache while
#: every stream's rows are added
DECODER_CHUNK = 1024


def _declare(spec: EGRUKernelSpec, score: bool) -> dict:
    """Arguments of egru_streams_{run,score}: tokens [T, B] (+ targets), weights, states, logits [B*V], (red,
    nll [T, B]), stats [T, B, L+1]; symbolic T, B; every batched size is checked against B."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    weights = {n: (shape, dt) for n, shape, dt in kernel_params(spec, "step")}
    L = len(spec.hidden_sizes)
    Tn, B = T.int32(), T.int32()
    IRBuilder.name("T", Tn)
    IRBuilder.name("B", B)
    dims = {"T": Tn, "B": B}
    params = [("tokens", ("T", "B"), "int32")] + ([("targets", ("T", "B"), "int32")] if score else [])
    params += [(n, weights[n][0], weights[n][1]) for n in weight_arg_names(spec)]
    params += stream_state_params(spec)
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
    """Step t of every stream, layer-major; then the decoder by V-chunks; [NLL]; stats[t, b, :]."""
    from tvm.script import tirx as T
    from . import tir
    V = spec.vocab_size
    B = a["B"]
    L = len(spec.hidden_sizes)
    q8 = spec.int8_layers
    st = a["stats"]
    G = spec.interleave
    for l, (n_in, h) in enumerate(zip(spec.input_sizes, spec.hidden_sizes)):
        A = spec.acc_size(l)
        acc, bias = a[f"acc{l}"], a[f"b{l}"]
        with tir.loop(f"lb{l}", B) as b:
            if l == 0:
                T.buffer_store(st, 0, [t, b, L])

            def macs(b=b):
                return st[t, b, L]

            def add_macs(value, b=b):
                T.buffer_store(st, value, [t, b, L])

            tk = tir.let("tk", T.max(T.min(a["tokens"][t, b], V - 1), 0))
            if l == 0 and spec.embed_mode == "table":
                tab = a["tab"]
                with tir.loop("o", 3 * h) as o:
                    T.buffer_store(acc, tab[tk, o] if q8 or spec.table_bias else bias[o] + tab[tk, o], [b * A + o])
                with tir.loop("o_g", 3 * h if q8 else h) as o:
                    T.buffer_store(acc, T.float32(0.0) if q8 else bias[3 * h + o], [b * A + 3 * h + o])
            else:
                with tir.loop("o", A) as o:
                    T.buffer_store(acc, T.float32(0.0) if q8 else bias[o], [b * A + o])
                w = (a[f"w{l}_ptr"], a[f"w{l}_idx"], a[f"w{l}_val"])
                if l == 0:
                    tir.scatter_dense(*w, acc, a["emb"], n_in, G, row=tk, off=b * A)
                else:
                    p, hp = l - 1, spec.hidden_sizes[l - 1]
                    ev_in = (a[f"ei{p}"], a[f"ev{p}"], a[f"en{p}"])
                    tir.fanout_count(w[0], ev_in[0], ev_in[2], macs, add_macs, eoff=b * hp, es=b)
                    tir.scatter_events(*w, acc, *ev_in, G, off=b * A, eoff=b * hp, es=b)
            own = (a[f"ei{l}"], a[f"ev{l}"], a[f"en{l}"])
            r = (a[f"r{l}_ptr"], a[f"r{l}_idx"], a[f"r{l}_val"])
            tir.fanout_count(r[0], own[0], own[2], macs, add_macs, eoff=b * h, es=b)
            tir.scatter_events(*r, acc, *own, G, off=b * A, eoff=b * h, es=b)
            if q8:
                tir.update_scaled(h, acc, bias, a[f"s{l}"], a[f"thr{l}"], a[f"c{l}"], a[f"y{l}"], spec.fast_math,
                                  off=b * h, aoff=b * A)
            else:
                tir.update_packed(h, acc, a[f"thr{l}"], a[f"c{l}"], a[f"y{l}"], spec.fast_math, off=b * h,
                                  aoff=b * A)
            tir.compress(h, a[f"y{l}"], *own, off=b * h, es=b)
            T.buffer_store(st, own[2][b], [t, b, l])
    _decoder(spec, a, B)
    if score:
        with tir.loop("nb", B) as b:
            tir.nll(V, a["logits"], a["targets"][t, b], a["red"], NLL_LANES,
                    lambda value: T.buffer_store(a["nll"], value, [t, b]), base=b * V)


def _decoder(spec: EGRUKernelSpec, a: dict, B) -> None:
    """Every stream's batch-1 event decoder (`tir.decoder` on its own active units, same row grouping), one
    V-chunk of the logits at a time for all streams."""
    from tvm.script import tirx as T
    from . import tir
    V = spec.vocab_size
    last = len(spec.hidden_sizes) - 1
    h = spec.hidden_sizes[last]
    logits = a["logits"]
    CH = min(DECODER_CHUNK, V)
    nfull, tail = divmod(V, CH)

    def chunk(base, width: int):
        with tir.loop("db", B) as b:
            def load(v, b=b):
                return logits[b * V + v]

            def store(v, value, b=b):
                T.buffer_store(logits, value, [b * V + v])

            tir.decoder(spec, a["dbias"], a["dwt"], a[f"ei{last}"], a[f"ev{last}"], a[f"en{last}"], None, load,
                        store, a.get("dscale"), eoff=b * h, es=b, vrange=(base, width))

    if nfull:
        with tir.loop("vb", nfull) as vb:
            chunk(vb * CH, CH)
    if tail:
        chunk(nfull * CH, tail)


def prim_funcs(prefix: str, declare, step) -> dict:
    """{name: PrimFunc} of ``{prefix}_run`` and ``{prefix}_score``: ``a = declare(score)`` declares the
    arguments, then ``step(a, t, score)`` builds step t of a loop over ``a["T"]`` steps."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as TB
    from . import tir
    funcs = {}
    for score in (False, True):
        name = f"{prefix}_score" if score else f"{prefix}_run"
        with IRBuilder() as ib:
            with TB.prim_func():
                T.func_name(name)
                T.func_attr({"global_symbol": name, "tir.noalias": True})
                a = declare(score)
                with tir.loop("t", a["T"]) as t:
                    step(a, t, score)
        funcs[name] = ib.get()
    return funcs


def streams_functions(spec: EGRUKernelSpec) -> dict:
    """{name: PrimFunc} of ``egru_streams_run`` (logits [B*V] of the last step) and ``egru_streams_score``."""
    if spec.projection or spec.decoder_mode != "event":
        raise ValueError("batched streams need the event decoder without a projection")
    return prim_funcs("egru_streams", lambda score: _declare(spec, score),
                      lambda a, t, score: _streams_step(spec, a, t, score))


def build_egru_streams(spec: EGRUKernelSpec, target=None):
    """Compile :func:`streams_functions` alone: the batched-stream library a runner builds on first use
    (`cache.load_streams_module`; the artifact's ``egru_step.so`` holds the batch-1 kernels only)."""
    import tvm
    return tvm.compile(tvm.IRModule(streams_functions(spec)), resolve_target(target))
