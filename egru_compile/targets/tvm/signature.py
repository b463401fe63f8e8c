"""The argument lists of the TVM kernels, shared by the builders (`step.py`, `streams.py`) and the runner
(`step_runner.py`): :func:`kernel_params` gives (name, shape, dtype) of every argument of ``egru_step`` /
``egru_run`` / ``egru_score`` in order; the batched streams take the same weights (:func:`weight_arg_names`)
and batched states (:func:`stream_state_params`)."""
from __future__ import annotations

from .layout import TIR_DTYPES
from .spec import EGRUKernelSpec
from .u8_events import padded

#: vector lanes of the in-kernel log-softmax reductions (egru_score's ``red`` scratch holds 2 x this many f64)
NLL_LANES = 8
#: batched per-layer state / scratch arguments (besides the weights): name -> (size in units of h / A, dtype)
STREAM_STATE = ("c", "y", "ei", "ev", "en", "acc")


def kernel_params(spec: EGRUKernelSpec, kind: str) -> list[tuple[str, tuple, str]]:
    """(name, shape, dtype) of every argument in order; a str dimension is a size known only at call time
    (the argument is then a handle matched to a buffer of that symbolic size)."""
    V, E = spec.vocab_size, spec.embedding_size
    multi = kind != "step"
    out: list[tuple[str, tuple, str]] = [("tokens", ("K",), "int32") if multi else ("token", (), "int32")]
    if kind == "score":
        out.append(("targets", ("K",), "int32"))
    h0 = spec.hidden_sizes[0]
    out.append(("tab", (V, 3 * h0), "float32") if spec.embed_mode == "table" else ("emb", (V, E), "float32"))
    vdt = TIR_DTYPES[spec.weight_dtype]
    for l, (n_in, h) in enumerate(zip(spec.input_sizes, spec.hidden_sizes)):
        idt = spec.layer_index_dtype(l)
        A = spec.acc_size(l)
        if spec.u8_events:          # block-permuted dense int8 rows (`u8_events.py`); ptr: fan-outs for stats
            width = padded(3 * h)
            if l > 0:
                out += [(f"w{l}_ptr", (n_in + 1,), "int32"), (f"w{l}_rows", (n_in, width), "int8")]
            elif spec.embed_mode != "table":
                out += [("w0_ptr", (n_in + 1,), "int32"), ("w0_idx", ("nw0",), idt), ("w0_val", ("nw0",), vdt)]
            out += [(f"r{l}_ptr", (h + 1,), "int32"), (f"r{l}_rows", (h, width), "int8"), (f"b{l}", (A,), "float32")]
        else:
            if not (l == 0 and spec.embed_mode == "table"):
                out += [(f"w{l}_ptr", (n_in + 1,), "int32"), (f"w{l}_idx", (f"nw{l}",), idt),
                        (f"w{l}_val", (f"nw{l}",), vdt)]
            out += [(f"r{l}_ptr", (h + 1,), "int32"), (f"r{l}_idx", (f"nr{l}",), idt),
                    (f"r{l}_val", (f"nr{l}",), vdt), (f"b{l}", (A,), "float32")]
        if spec.int8_layers:
            out.append((f"s{l}", (A,), "float32"))
        out += [(f"thr{l}", (h,), "float32"), (f"c{l}", (h,), "float32"),
                (f"y{l}", (h,), "float32"), (f"ei{l}", (h,), "int32"), (f"ev{l}", (h,), "float32"),
                (f"en{l}", (1,), "int32"), (f"acc{l}", (A,), "float32")]
    if spec.projection:
        H = spec.hidden_sizes[-1]
        out += [("p_ptr", (H + 1,), "int32"), ("p_idx", ("np",), "int32"), ("p_val", ("np",), "float32"),
                ("pbias", (E,), "float32"), ("pacc", (E,), "float32"), ("pei", (E,), "int32"),
                ("pev", (E,), "float32"), ("pen", (1,), "int32")]
    if spec.u8_events:              # scratch of the uint8 events and their int32 sums
        Q = spec.quant_capacity
        out += [("q_row", (Q,), "int32"), ("q_word", (Q // 4,), "int32"), ("q_scale", (1,), "float32"),
                ("i_sum", (spec.sum_capacity,), "int32")]
    D = (spec.decoder_input_size, padded(V)) if spec.u8_decoder else (spec.decoder_input_size, V)
    out += [("dwt", D, TIR_DTYPES[spec.decoder_dtype]), ("dbias", (V,), "float32")]
    if spec.decoder_dtype == "int8":
        out.append(("dscale", (V,), "float32"))
    if kind == "run":
        out += [("logits", ("K", V), "float32"), ("stats", ("K", len(spec.hidden_sizes) + 1), "int32")]
    elif kind == "score":
        out += [("logits", (V,), "float32"), ("red", (2 * NLL_LANES,), "float64"), ("nll", ("K",), "float64"),
                ("stats", ("K", len(spec.hidden_sizes) + 1), "int32")]
    else:
        out += [("logits", (V,), "float32")]
    return out


def step_arg_names(spec: EGRUKernelSpec) -> list[str]:
    """Names of the weight/state/scratch arguments between the token and the logits (same order for
    egru_step and egru_run)."""
    return [name for name, _, _ in kernel_params(spec, "step")[1:-1]]


def weight_arg_names(spec: EGRUKernelSpec) -> list[str]:
    """The weight arguments of the fused step (same packing), in order."""
    state = {f"{k}{l}" for l in range(len(spec.hidden_sizes)) for k in STREAM_STATE}
    return [n for n, _, _ in kernel_params(spec, "step")[1:-1] if n not in state]


def stream_state_params(spec: EGRUKernelSpec) -> list[tuple[str, tuple, str]]:
    out = []
    for l in range(len(spec.hidden_sizes)):
        out += [(f"c{l}", (f"BH{l}",), "float32"), (f"y{l}", (f"BH{l}",), "float32"),
                (f"ei{l}", (f"BH{l}",), "int32"), (f"ev{l}", (f"BH{l}",), "float32"), (f"en{l}", ("B",), "int32"),
                (f"acc{l}", (f"BA{l}",), "float32")]
    return out


def stream_arg_names(spec: EGRUKernelSpec) -> list[str]:
    """Weights, then the batched states (:func:`stream_state_params`), between the tokens and the outputs."""
    return weight_arg_names(spec) + [n for n, _, _ in stream_state_params(spec)]
