"""The fused whole-step kernels ``egru_step`` (one token per call) and ``egru_run`` (K tokens per call) of an
:class:`~.spec.EGRUKernelSpec`, built with TVM's script IR builder from the blocks of `tir.py`.

Their argument list depends on the model (per layer: the packed weights of `layout.pack_layer`, the state c, y,
y's event list and the 4h accumulator; layer 0's W is replaced by the ``E @ W0`` gate table in ``table`` embed
mode), which a fixed-arity ``@T.prim_func`` cannot express: the signature is declared argument by argument
(:func:`_declare_args`, from `signature.kernel_params`), and `signature.step_arg_names` gives the runner
the same order.

Every layer keeps, besides c and y, the compressed event list of y (``ev_idx[h]`` int32, ``ev_val[h]`` f32,
``ev_cnt[1]`` int32); the update emits it, the next layer consumes it as its input events and the same layer
consumes it as recurrent events in the next step. With EvNN's projection decoder (``spec.projection``) the
last layer's events are scattered through P (``p_ptr/p_idx/p_val``) into ``pacc[E]`` + ``pbias``, ReLU'd and
compressed (``pei/pev/pen``), and the event decoder walks those.

Layer 0's input (a dense embedding row) is either scattered column by column (``embed_mode="csc"``) or read
from the folded gate table ``tab[V, 3h0] = E @ W0 + b`` (``embed_mode="table"``; `layout.fold_table`: float64,
rounded once; int8 layers: E @ W0's integer values, the scale and the bias after the sum; ``spec.table_bias``
False: the kernel adds the bias, as libraries compiled before the table held it did).
"""
from __future__ import annotations

from dataclasses import replace

from .signature import NLL_LANES, kernel_params, step_arg_names
from .spec import EGRUKernelSpec, resolve_target

__all__ = ["build_egru_step", "step_arg_names", "step_functions"]


def _declare_args(spec: EGRUKernelSpec, kind: str) -> dict:
    """Declare the arguments in the current prim_func frame; returns name -> buffer (or the token var)."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    params = kernel_params(spec, kind)
    handles, out = {}, {}
    for name, shape, dtype in params:
        if not shape:
            out[name] = T.arg(name, T.int32())
        elif any(isinstance(d, str) for d in shape):
            handles[name] = T.arg(name + "_h", T.handle())
        else:
            out[name] = T.arg(name, T.Buffer(shape, dtype))
    sizes: dict = {}
    for name, shape, dtype in params:
        if name in handles:
            dims = []
            for d in shape:
                if isinstance(d, str) and d not in sizes:
                    sizes[d] = T.int32()
                    IRBuilder.name(d, sizes[d])
                dims.append(sizes[d] if isinstance(d, str) else d)
            out[name] = T.match_buffer(handles[name], tuple(dims), dtype)
    if kind != "step":
        out["K"] = sizes["K"]
    return out


def _step_body(spec: EGRUKernelSpec, a: dict, tok, logits_at, stats_row=None, with_decoder: bool = True):
    """One token through every layer and the decoder. ``logits_at(v)`` indexes the step's logits element v.
    With `stats_row` (egru_run), also writes ``stats[t, l]`` = active units of layer l and ``stats[t, L]`` = the
    step's event-gated MACs (the dense first-layer input's MACs are constant and added by the caller)."""
    from tvm.script import tirx as T
    from . import tir
    V = spec.vocab_size
    fast = spec.fast_math
    L_all = len(spec.hidden_sizes)
    stats = a.get("stats")
    logits = a["logits"]
    tk = tir.let("tk", T.max(T.min(tok, V - 1), 0))
    if stats_row is not None:
        T.buffer_store(stats, 0, [stats_row, L_all])

    def macs():
        return stats[stats_row, L_all]

    def add_macs(value):
        T.buffer_store(stats, value, [stats_row, L_all])

    q8 = spec.int8_layers
    if spec.u8_events:
        from .u8_events import dot_rows, padded, quantize_events, sums_to_float
        scratch = (a["q_row"], a["q_word"], a["q_scale"])

        def u8_product(rows, events, n_out, off):
            """acc[off:off + n_out] = (the uint8 events . rows) * their scale (`u8_events.py`)."""
            quantize_events(*events, *scratch)
            dot_rows(rows, padded(n_out), scratch[0], scratch[1], events[2][0], a["i_sum"])
            sums_to_float(n_out, a["i_sum"], scratch[2], acc, off)
    for l, (n_in, h) in enumerate(zip(spec.input_sizes, spec.hidden_sizes)):
        acc, b = a[f"acc{l}"], a[f"b{l}"]
        if l == 0 and spec.embed_mode == "table":
            tab = a["tab"]
            with tir.loop("o", 3 * h) as o:
                T.buffer_store(acc, tab[tk, o] if q8 or spec.table_bias else b[o] + tab[tk, o], [o])
            with tir.loop("o_g", 3 * h if q8 else h) as o:
                T.buffer_store(acc, T.float32(0.0) if q8 else b[3 * h + o], [3 * h + o])
        elif spec.u8_events and l > 0:
            ev_in = (a[f"ei{l - 1}"], a[f"ev{l - 1}"], a[f"en{l - 1}"])
            if stats_row is not None:
                tir.fanout_count(a[f"w{l}_ptr"], ev_in[0], ev_in[2], macs, add_macs)
            u8_product(a[f"w{l}_rows"], ev_in, 3 * h, 0)
        else:
            with tir.loop("o", spec.acc_size(l)) as o:
                T.buffer_store(acc, T.float32(0.0) if q8 else b[o], [o])
            w = (a[f"w{l}_ptr"], a[f"w{l}_idx"], a[f"w{l}_val"])
            if l == 0:
                tir.scatter_dense(*w, acc, a["emb"], n_in, spec.interleave, row=tk)
            else:
                ev_in = (a[f"ei{l - 1}"], a[f"ev{l - 1}"], a[f"en{l - 1}"])
                if stats_row is not None:
                    tir.fanout_count(w[0], ev_in[0], ev_in[2], macs, add_macs)
                tir.scatter_events(*w, acc, *ev_in, spec.interleave, prefetch=spec.prefetch)
        ev_own = (a[f"ei{l}"], a[f"ev{l}"], a[f"en{l}"])
        if stats_row is not None:
            tir.fanout_count(a[f"r{l}_ptr"], ev_own[0], ev_own[2], macs, add_macs)
        if spec.u8_events:
            u8_product(a[f"r{l}_rows"], ev_own, 3 * h, 3 * h)
        else:
            r = (a[f"r{l}_ptr"], a[f"r{l}_idx"], a[f"r{l}_val"])
            tir.scatter_events(*r, acc, *ev_own, spec.interleave, prefetch=spec.prefetch)
        if q8:
            tir.update_scaled(h, acc, b, a[f"s{l}"], a[f"thr{l}"], a[f"c{l}"], a[f"y{l}"], fast)
        else:
            tir.update_packed(h, acc, a[f"thr{l}"], a[f"c{l}"], a[f"y{l}"], fast)
        tir.compress(h, a[f"y{l}"], *ev_own)
        if stats_row is not None:
            T.buffer_store(stats, ev_own[2][0], [stats_row, l])
    last = L_all - 1

    def load(v):
        return logits[logits_at(v)]

    def store(v, value):
        T.buffer_store(logits, value, logits_at(v))

    if with_decoder and spec.projection:       # a(P · y_last + p), event-driven, then the decoder
        relu = spec.projection_activation == "relu"
        tir.projection(spec.embedding_size, a["p_ptr"], a["p_idx"], a["p_val"], a["pbias"], a["pacc"],
                       a[f"ei{last}"], a[f"ev{last}"], a[f"en{last}"], a["pei"], a["pev"], a["pen"],
                       spec.interleave, relu=relu)
        # relu: the event decoder over the non-zeros; identity: graded, signed output -> every row (dense)
        tir.decoder(spec if relu else replace(spec, decoder_mode="dense"), a["dbias"], a["dwt"], a["pei"],
                    a["pev"], a["pen"], a["pacc"], load, store, a.get("dscale"))
    elif with_decoder and spec.u8_decoder:     # int8 rows . uint8 events, then scale and bias per row
        ev_last = (a[f"ei{last}"], a[f"ev{last}"], a[f"en{last}"])
        quantize_events(*ev_last, *scratch)
        dot_rows(a["dwt"], padded(V), scratch[0], scratch[1], ev_last[2][0], a["i_sum"])
        s = tir.let("dq", scratch[2][0])
        with tir.loop("dv", V) as v:
            store(v, a["dbias"][v] + a["dscale"][v] * (T.Cast("float32", a["i_sum"][v]) * s))
    elif with_decoder:
        tir.decoder(spec, a["dbias"], a["dwt"], a[f"ei{last}"], a[f"ev{last}"], a[f"en{last}"], a[f"y{last}"],
                    load, store, a.get("dscale"))
    else:                          # the layer loop only; one store keeps the logits argument used
        store(0, a["dbias"][0])


def step_functions(spec: EGRUKernelSpec, with_decoder: bool = True) -> dict:
    """{name: PrimFunc} of ``egru_step`` and ``egru_run`` (``with_decoder=False``: the layers only, logits
    untouched but for element 0 — a benchmark scope)."""
    from tvm.script import tirx as T
    from tvm.script.ir_builder import IRBuilder
    from tvm.tirx.script.builder import ir as TB
    from . import tir
    funcs = {}
    for kind in ("step", "run", "score") if with_decoder else ("step", "run"):
        name = f"egru_{kind}"
        with IRBuilder() as ib:
            with TB.prim_func():
                T.func_name(name)
                T.func_attr({"global_symbol": name, "tir.noalias": True})
                a = _declare_args(spec, kind)
                if kind == "run":
                    with tir.loop("t", a["K"]) as t:
                        _step_body(spec, a, a["tokens"][t], lambda v, t=t: [t, v], stats_row=t,
                                   with_decoder=with_decoder)
                elif kind == "score":      # the step's logits stay in one [V] row, scored in place
                    with tir.loop("t", a["K"]) as t:
                        _step_body(spec, a, a["tokens"][t], lambda v: [v], stats_row=t)
                        tir.nll(spec.vocab_size, a["logits"], a["targets"][t], a["red"], NLL_LANES,
                                lambda value, t=t: T.buffer_store(a["nll"], value, [t]))
                else:
                    _step_body(spec, a, a["token"], lambda v: [v], with_decoder=with_decoder)
        funcs[name] = ib.get()
    return funcs


def build_egru_step(spec: EGRUKernelSpec, target=None, with_decoder: bool = True, streams: bool = False):
    """Compile the fused whole-step kernels for ``spec``.

    Returns a ``tvm.runtime.Executable`` with two packed functions (argument order = :func:`step_arg_names`):

    * ``egru_step(token:int32, <weights/states/scratch...>, logits f32[V])``
    * ``egru_run(tokens int32[K], <same...>, logits f32[K, V], stats int32[K, L+1])`` (states carried across
      the K tokens; ``stats[t, l]`` active units of layer l, ``stats[t, L]`` event-gated MACs of step t)
    * ``egru_score(tokens int32[K], targets int32[K], <same...>, logits f32[V], red f64[16], nll f64[K],
      stats)``: egru_run without handing the logits back: each step's logits row (scratch, stays in cache) is
      reduced right after the decoder to ``nll[t] = logsumexp(logits) - logits[targets[t]]`` (`tir.nll`)

    With `streams` (not with a projection decoder), also the batched ``egru_streams_run`` /
    ``egru_streams_score`` of `streams.py`.
    """
    import tvm
    funcs = step_functions(spec, with_decoder)
    if streams and not spec.projection and spec.decoder_mode == "event":
        from .streams import streams_functions
        funcs.update(streams_functions(spec))
    return tvm.compile(tvm.IRModule(funcs), resolve_target(target))
