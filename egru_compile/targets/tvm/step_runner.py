"""In-process executor of the fused step: :class:`TVMStepRunner` packs the weights (`layout.py`), holds weights,
states and scratch in TVM tensors and calls ``egru_step`` / ``egru_run`` (`step.py`)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .layout import NP_DTYPES, _as_csr, _check_csr, fold_table, pack_layer, quantize_dense_rows
from .spec import EGRUKernelSpec
from .cache import load_step_module, load_streams_module
from .signature import step_arg_names
from .u8_events import dense_event_rows, permute_dense_rows

__all__ = ["TVMStepRunner"]


def _function(module, name: str):
    """module[name], or None when the library has no such function (compiled without it / by an older
    release)."""
    try:
        return module[name]
    except Exception:  # noqa: BLE001 - TVM raises its own error types
        return None


def _folded_bias(b, br, h: int) -> np.ndarray:
    """The bias the f32 / f16 kernels start layer 0's z, r and g_x sums from, in float64: b + br for z and r
    (they share gx and gh), b for g_x (the packed ``bias4[:3h]``, summed without float32 rounding)."""
    b = np.asarray(b, np.float64).reshape(-1)
    br = np.asarray(br, np.float64).reshape(-1)
    return np.concatenate([b[:2 * h] + br[:2 * h], b[2 * h:3 * h]])


class TVMStepRunner:
    """Holds packed weights, states and scratch in TVM tensors and calls the fused step.

    Parameters
    ----------
    embedding: [V, E] float32.
    layers: list of dicts with W ([n_in, 3h] dense or input-major CSR triple), R ([h, 3h] or triple),
        b [3h], br [3h], thr [h] (used as given: clamp it yourself if the model does); with
        ``weight_dtype="int8"`` optionally W_scale / R_scale [3h] of int8 triples (float weights are quantized
        with quantize-int8's rule).
    dec_bias: [V]; dec_weight: [V, H_last] (default: the embedding, tied decoder; [V, E] with a projection);
        dec_scale: [V] per-row scale of an int8 dec_weight (``decoder_dtype="int8"``; float rows are quantized).
    projection: EvNN's decoder projection ``(P, p)``: P as dense ``[h_last, E]`` (kernel layout, = the math
        matrix transposed) or input-major CSR triple, p [E]; the decoder then reads ``a(P · y_last + p)``
        (a: ``spec.projection_activation``).
    spec / spec_kw: an :class:`EGRUKernelSpec`, or its options (index_dtype, embed_mode, decoder_mode,
        fast_math, decoder_chunk, decoder_unroll, interleave, table_limit_mb) as keywords.
    module: an already compiled/loaded module for the same spec (skips compilation).

    States (c, y and y's event list per layer) live in TVM tensors and are carried across
    :meth:`step` / :meth:`run`; :attr:`views` are zero-copy numpy views of every tensor.
    """

    def __init__(self, embedding, layers: Sequence[dict], dec_bias, dec_weight=None, *, target=None,
                 module=None, spec: EGRUKernelSpec | None = None, projection=None, dec_scale=None,
                 streams: bool = False, **spec_kw):
        emb = np.ascontiguousarray(embedding, dtype=np.float32)
        V, E = emb.shape
        hs = [int(np.asarray(L["thr"]).reshape(-1).shape[0]) for L in layers]
        if spec is None:
            spec = EGRUKernelSpec(V, E, tuple(hs), projection=projection is not None, **spec_kw)
        if spec.vocab_size != V or spec.embedding_size != E or tuple(spec.hidden_sizes) != tuple(hs) \
                or spec.projection != (projection is not None):
            raise ValueError("spec does not match the weights")
        self.spec = spec
        dw = emb if dec_weight is None else np.asarray(dec_weight)
        if dw.dtype != np.int8:
            dw = np.ascontiguousarray(dw, dtype=np.float32)
        if dw.shape != (V, spec.decoder_input_size):
            raise ValueError(f"decoder weight must be [V, {'E' if spec.projection else 'H_last'}] = "
                             f"{(V, spec.decoder_input_size)}, got {dw.shape} "
                             "(a tied decoder needs hidden_sizes[-1] == embedding size, or a projection)")
        arrays: dict[str, np.ndarray] = {}
        if projection is not None:
            P, pb = projection
            pp, pi, pv = _as_csr(P, E, np.int64)
            if len(pp) != hs[-1] + 1:
                raise ValueError(f"projection has {len(pp) - 1} inputs, expected h_last={hs[-1]}")
            _check_csr(pp, pi, pv, E, "projection")
            arrays.update(p_ptr=pp, p_idx=pi.astype(np.int32), p_val=pv,
                          pbias=np.ascontiguousarray(pb, dtype=np.float32).reshape(-1),
                          pacc=np.zeros(E, np.float32), pei=np.zeros(E, np.int32), pev=np.zeros(E, np.float32),
                          pen=np.zeros(1, np.int32))
            if arrays["pbias"].shape != (E,):
                raise ValueError(f"projection bias must be [E] = {(E,)}, got {arrays['pbias'].shape}")
        q8 = spec.weight_dtype == "int8"
        for l, L in enumerate(layers):
            p = pack_layer(L["W"], L["R"], L["b"], L["br"], L["thr"], spec.index_dtype, spec.weight_dtype,
                           L.get("W_scale"), L.get("R_scale"))
            if l == 0 and spec.embed_mode == "table":
                # E @ W0 (+ the packed z, r, g_x bias: b + br for z, r, b for g) in float64, rounded once;
                # int8: E @ the integer values, the scale and the bias come after the sum in the kernel
                fb = _folded_bias(L["b"], L["br"], hs[0]) if spec.table_bias and not q8 else None
                arrays["tab"] = fold_table(emb, p["w_ptr"], p["w_idx"], p["w_val"], 3 * hs[0], fb)
            else:
                if l == 0:
                    arrays["emb"] = emb
                arrays[f"w{l}_ptr"], arrays[f"w{l}_idx"], arrays[f"w{l}_val"] = p["w_ptr"], p["w_idx"], p["w_val"]
            arrays[f"r{l}_ptr"], arrays[f"r{l}_idx"], arrays[f"r{l}_val"] = p["r_ptr"], p["r_idx"], p["r_val"]
            if spec.u8_events:          # dense rows for the uint8 event products (R's indices back to 0..3h)
                for m in ("w", "r") if l > 0 else ("r",):
                    idx = arrays.pop(f"{m}{l}_idx").astype(np.int64) - (3 * hs[l] if m == "r" else 0)
                    arrays[f"{m}{l}_rows"] = dense_event_rows(arrays[f"{m}{l}_ptr"], idx,
                                                              arrays.pop(f"{m}{l}_val"), 3 * hs[l])
            arrays[f"b{l}"], arrays[f"thr{l}"] = (p["bias6"] if q8 else p["bias4"]), p["thr"]
            if q8:
                arrays[f"s{l}"] = p["scale6"]
        arrays["dbias"] = np.ascontiguousarray(dec_bias, dtype=np.float32).reshape(-1)
        if spec.decoder_dtype == "int8":
            if dec_scale is None:
                dw, dec_scale = quantize_dense_rows(dw)
            elif dw.dtype != np.int8:
                raise ValueError("a decoder scale needs int8 decoder weights")
            arrays["dscale"] = np.ascontiguousarray(dec_scale, dtype=np.float32).reshape(-1)
        arrays["dwt"] = np.ascontiguousarray(dw.T.astype(NP_DTYPES[spec.decoder_dtype]))
        if spec.u8_events:
            if spec.u8_decoder:
                arrays["dwt"] = permute_dense_rows(arrays["dwt"])
            Q = spec.quant_capacity
            arrays.update(q_row=np.zeros(Q, np.int32), q_word=np.zeros(Q // 4, np.int32),
                          q_scale=np.zeros(1, np.float32), i_sum=np.zeros(spec.sum_capacity, np.int32))
        self._init_from_arrays(arrays, module, target, streams)

    # -- construction helpers --------------------------------------------------------------------
    def _init_from_arrays(self, arrays: dict, module, target, streams: bool = False):
        import tvm
        spec = self.spec
        self.module = module if module is not None else load_step_module(spec, target, streams=streams)
        self._step_fn = self.module["egru_step"]
        self._run_fn = self.module["egru_run"]
        self._score_fn = _function(self.module, "egru_score")
        self._streams_run_fn = _function(self.module, "egru_streams_run")
        self._streams_score_fn = _function(self.module, "egru_streams_score")
        self._target = target
        self.stream_batch = 0
        self.tensors: dict[str, Any] = {k: tvm.runtime.tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}
        for l, h in enumerate(spec.hidden_sizes):
            for k, dt in (("c", "float32"), ("y", "float32"), ("ei", "int32"), ("ev", "float32")):
                self.tensors[f"{k}{l}"] = tvm.runtime.tensor(np.zeros(h, dt))
            self.tensors[f"en{l}"] = tvm.runtime.tensor(np.zeros(1, "int32"))
            self.tensors[f"acc{l}"] = tvm.runtime.tensor(np.zeros(spec.acc_size(l), "float32"))
        self._logits = tvm.runtime.tensor(np.zeros(spec.vocab_size, "float32"))
        self._args = [self.tensors[n] for n in step_arg_names(spec)]
        # zero-copy numpy views of every tensor (Tensor.numpy() / copyfrom cost ~12 us each); writing
        # through a view (e.g. views["thr0"][:] = ...) changes what the next step sees
        self.views = {k: np.from_dlpack(v) for k, v in self.tensors.items()}
        self._logits_np = np.from_dlpack(self._logits)
        self._run_bufs: dict[int, tuple] = {}
        self._score_bufs: dict[int, tuple] = {}
        self._red = tvm.runtime.tensor(np.zeros(16, np.float64))

    @classmethod
    def from_model(cls, model, **kw) -> "TVMStepRunner":
        """From an ``egru_compile.model.EGRULanguageModel`` (thr clamped to [0, 1] like the model)."""
        import torch
        with torch.no_grad():
            emb = model.embeddings.weight.detach().cpu().numpy()
            layers = [dict(W=r.kernel.detach().cpu().numpy(), R=r.recurrent_kernel.detach().cpu().numpy(),
                           b=r.bias.detach().cpu().numpy(), br=r.recurrent_bias.detach().cpu().numpy(),
                           thr=r.thr.detach().clamp(0.0, 1.0).cpu().numpy()) for r in model.rnns]
            dec = model.decoder.decoder
            proj = getattr(model.decoder, "projection", None)
            if proj is not None:
                kw["projection"] = (proj.weight.detach().cpu().numpy().T, proj.bias.detach().cpu().numpy())
                if kw.get("spec") is None:
                    kw.setdefault("projection_activation", model.decoder.projection_activation)
            return cls(emb, layers, dec.bias.detach().cpu().numpy(), dec.weight.detach().cpu().numpy(), **kw)

    # -- state -----------------------------------------------------------------------------------
    def reset(self):
        """Zero all states (c, y and the event lists)."""
        for l in range(len(self.spec.hidden_sizes)):
            for k in ("c", "y", "ev", "ei", "en"):
                self.views[f"{k}{l}"][:] = 0
        if self.spec.projection:
            for k in ("pacc", "pei", "pev", "pen"):
                self.views[k][:] = 0

    def set_layer_state(self, l: int, c, y):
        c = np.asarray(c, dtype=np.float32).reshape(-1)
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        nz = np.flatnonzero(y)
        v = self.views
        v[f"c{l}"][:] = c
        v[f"y{l}"][:] = y
        v[f"ei{l}"][:] = 0
        v[f"ev{l}"][:] = 0
        v[f"ei{l}"][:len(nz)] = nz
        v[f"ev{l}"][:len(nz)] = y[nz]
        v[f"en{l}"][0] = len(nz)

    def set_state(self, state):
        """state: list of (c, y) per layer (y's event list is rebuilt)."""
        for l, (c, y) in enumerate(state):
            self.set_layer_state(l, c, y)

    def get_state(self):
        """Copies of (c, y) per layer."""
        return [(self.views[f"c{l}"].copy(), self.views[f"y{l}"].copy())
                for l in range(len(self.spec.hidden_sizes))]

    def activity(self) -> list[float]:
        """Fraction of active units per layer in the current y."""
        return [int(self.views[f"en{l}"][0]) / h for l, h in enumerate(self.spec.hidden_sizes)]

    # -- execution -------------------------------------------------------------------------------
    def step(self, token: int, copy: bool = True) -> np.ndarray:
        """One token -> logits [V] (copy=False returns a view that the next step overwrites)."""
        self._step_fn(int(token), *self._args, self._logits)
        return self._logits_np.copy() if copy else self._logits_np

    def run(self, tokens, copy: bool = True, with_stats: bool = False):
        """tokens [K] -> logits [K, V] in one packed call, states carried (copy=False: reused buffer).
        With `with_stats`, returns (logits, stats int32[K, L+1]): per step the active units of each layer and
        the event-gated MACs (excluding the dense first-layer input's constant MACs)."""
        import tvm
        tok = np.asarray(tokens).reshape(-1)
        K = tok.shape[0]
        bufs = self._run_bufs.get(K)
        if bufs is None:
            L = len(self.spec.hidden_sizes)
            t = tvm.runtime.tensor(np.zeros(K, np.int32))
            lg = tvm.runtime.tensor(np.zeros((K, self.spec.vocab_size), np.float32))
            st = tvm.runtime.tensor(np.zeros((K, L + 1), np.int32))
            bufs = (t, lg, st, np.from_dlpack(t), np.from_dlpack(lg), np.from_dlpack(st))
            self._run_bufs[K] = bufs            # one set per call size (streaming uses K = 1 and the chunk)
        bufs[3][:] = tok
        self._run_fn(bufs[0], *self._args, bufs[1], bufs[2])
        logits = bufs[4].copy() if copy else bufs[4]
        if with_stats:
            return logits, bufs[5].copy()
        return logits

    @property
    def has_score(self) -> bool:
        """Whether the library has the fused scoring entry point ``egru_score``."""
        return self._score_fn is not None

    def score(self, tokens, targets):
        """tokens, targets [K] -> (nll float64 [K], stats int32 [K, L+1]) in one ``egru_score`` call: the NLL of
        targets[k] after tokens[k], computed inside the library (the logits never leave it); states carried."""
        import tvm
        tok = np.asarray(tokens).reshape(-1)
        K = tok.shape[0]
        bufs = self._score_bufs.get(K)
        if bufs is None:
            L = len(self.spec.hidden_sizes)
            tensors = [tvm.runtime.tensor(np.zeros(K, np.int32)), tvm.runtime.tensor(np.zeros(K, np.int32)),
                       tvm.runtime.tensor(np.zeros(K, np.float64)), tvm.runtime.tensor(np.zeros((K, L + 1), np.int32))]
            bufs = (tensors, [np.from_dlpack(t) for t in tensors])
            self._score_bufs[K] = bufs
        (t_tok, t_tg, t_nll, t_st), (n_tok, n_tg, n_nll, n_st) = bufs
        n_tok[:] = tok
        n_tg[:] = np.asarray(targets).reshape(-1)
        self._score_fn(t_tok, t_tg, *self._args, self._logits, self._red, t_nll, t_st)
        return n_nll.copy(), n_st.copy()

    # -- batched streams (streams.py) ------------------------------------------------------------
    @property
    def has_streams(self) -> bool:
        """Whether B streams run natively: the library has the batched ``egru_streams_run`` /
        ``egru_streams_score``, or the spec allows them (event decoder, no projection) and they are compiled
        on the first :meth:`reset_streams` (through the compile cache), in a library of their own."""
        if self._streams_run_fn is not None and self._streams_score_fn is not None:
            return True
        return not self.spec.projection and self.spec.decoder_mode == "event" and not self.spec.u8_events

    @property
    def shared_streams(self) -> bool:
        """Whether B streams run the shared-read kernels (`shared.py`: each active column read once per step for
        every stream that needs it); else each stream runs its batch-1 code in turn (`streams.py`)."""
        from .shared import supports_shared
        return supports_shared(self.spec)

    @property
    def one_thread_reason(self) -> str | None:
        """Why B streams cannot be split over threads (None when the shared-read kernels run them)."""
        spec = self.spec
        if self.shared_streams:
            return None
        if spec.u8_events:
            return "uint8 events have no batched kernels"
        if spec.projection:
            return "EvNN's projection decoder has no batched kernels"
        if spec.decoder_mode != "event":
            return "the dense decoder mode has no batched kernels"
        return f"kernels compiled with interleave {spec.interleave} run each stream's batch-1 code"

    def _load_streams(self) -> None:
        """The batched kernels in their own library, compiled (or copied from the cache) on first use."""
        if self.shared_streams:
            if getattr(self, "_shared_module", None) is None:
                from .cache import load_shared_module
                self._shared_module = load_shared_module(self.spec, self._target)
            return
        if self._streams_run_fn is not None and self._streams_score_fn is not None:
            return
        self.streams_module = load_streams_module(self.spec, self._target)
        self._streams_run_fn = self.streams_module["egru_streams_run"]
        self._streams_score_fn = self.streams_module["egru_streams_score"]

    def reset_streams(self, batch: int, threads: int = 1) -> None:
        """Start `batch` streams from a zero state (batched state tensors, separate from the batch-1 state);
        `threads`: threads of the shared-read kernels (the per-stream kernels run on one)."""
        import tvm
        from .signature import stream_arg_names
        if not self.has_streams:
            raise ValueError("this library has no batched-stream kernels")
        B = int(batch)
        if B < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._load_streams()
        if self.shared_streams:
            sh = getattr(self, "_shared", None)
            if sh is None or sh.B != B or sh.threads != int(threads):
                from .shared_runner import SharedStreams
                self._shared = SharedStreams(self, self._shared_module, B, int(threads))
            self._shared.reset()
            self.stream_batch = B
            return
        if B != self.stream_batch:
            st = {}
            for l, h in enumerate(self.spec.hidden_sizes):
                A = self.spec.acc_size(l)
                for k, n, dt in (("c", B * h, "float32"), ("y", B * h, "float32"), ("ei", B * h, "int32"),
                                 ("ev", B * h, "float32"), ("en", B, "int32"), ("acc", B * A, "float32")):
                    st[f"{k}{l}"] = tvm.runtime.tensor(np.zeros(n, dt))
            self._stream_tensors = st
            self._stream_views = {k: np.from_dlpack(v) for k, v in st.items()}
            self._stream_args = [st[n] if n in st else self.tensors[n] for n in stream_arg_names(self.spec)]
            self._stream_logits = tvm.runtime.tensor(np.zeros(B * self.spec.vocab_size, np.float32))
            self._stream_logits_np = np.from_dlpack(self._stream_logits).reshape(B, self.spec.vocab_size)
            self._stream_bufs: dict = {}
            self.stream_batch = B
        for v in self._stream_views.values():
            v[...] = 0

    def _stream_io(self, T: int, score: bool):
        from .shared_runner import stream_io
        return stream_io(self._stream_bufs, T, self.stream_batch, len(self.spec.hidden_sizes), score)

    def step_streams(self, tokens):
        """tokens int [B] -> (logits float32 [B, V] (a view the next call overwrites), stats int32 [B, L+1])."""
        if self.shared_streams:
            return self._shared.step(tokens)
        (t_tok, t_st), (n_tok, n_st) = self._stream_io(1, False)
        n_tok[0] = np.asarray(tokens).reshape(-1)
        self._streams_run_fn(t_tok, *self._stream_args, self._stream_logits, t_st)
        return self._stream_logits_np, n_st[0].copy()

    def score_streams(self, tokens, targets):
        """tokens, targets int [T, B] -> (nll float64 [T, B], stats int32 [T, B, L+1]) in one call."""
        if self.shared_streams:
            return self._shared.score(tokens, targets)
        tok = np.asarray(tokens)
        (t_tok, t_tg, t_nll, t_st), (n_tok, n_tg, n_nll, n_st) = self._stream_io(tok.shape[0], True)
        n_tok[...] = tok
        n_tg[...] = np.asarray(targets)
        self._streams_score_fn(t_tok, t_tg, *self._stream_args, self._stream_logits, self._red, t_nll, t_st)
        return n_nll.copy(), n_st.copy()
