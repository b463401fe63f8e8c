"""What a fused step kernel is compiled for: :class:`EGRUKernelSpec` (model sizes and kernel options) and the
LLVM target of this CPU. ``tvm`` is imported only by the target functions."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .layout import WEIGHT_DTYPES, choose_index_dtype

__all__ = ["EGRUKernelSpec", "INDEX_DTYPES", "EVENT_DTYPES", "default_target", "resolve_target", "has_vnni"]

INDEX_DTYPES = ("auto", "int16", "uint16", "int32")
EVENT_DTYPES = ("f32", "u8")


@dataclass(frozen=True)
class EGRUKernelSpec:
    """Shape of the model the fused step is compiled for (validated at construction: it comes from manifests too).

    embed_mode: "csc" (scatter the dense embedding row through W0, no extra memory), "table" (the embedding
        folded into layer 0's input product: ``E @ W0`` [V, 3h0] float32 built at load time, one row read per
        token instead of a dense-input matvec, costs V*3h0*4 bytes) or "auto" (table when it needs <=
        table_limit_mb, resolved at construction: the fold-embedding pass's rule, `passes.fold_embedding`; the
        tvm target decides by that pass and its ``fold_embedding`` / ``fold_max_mb`` options).
    table_bias: the f32 / f16 table holds layer 0's z, r, g_x bias too (added in float64 before the table's one
        rounding, `layout.fold_table`); False: the kernel adds it (the libraries of artifacts compiled before
        the table held it: a manifest spec without this key). int8 layers add the bias after the scale.
    decoder_mode: "event" (walk the active units of y_last over rows of D^T) or "dense" (all rows,
        same vectorised code; for comparison).
    index_dtype: "auto" (int16 if 4h <= 32767, uint16 if <= 65535, else int32), or explicit.
    fast_math: polynomial exp (max rel. error ~1e-7) so the gate update vectorises; False uses
        TVM's sigmoid/tanh (libm expf calls).
    decoder_chunk: V-chunk of the event decoder (0 = whole rows: best when D^T is not cache resident).
    decoder_unroll: active units handled per pass over the logits (more concurrent row streams).
    interleave: number of sparse columns walked in lock step by the scatter loops (1 = off, the default: the
        columns are added in order, which the shared-read batched kernels of `shared.py` reproduce bit for bit;
        B-stream runs of a spec with interleave > 1 fall back to each stream's batch-1 code, `streams.py`).
    projection: EvNN's projection decoder ``logits = D · a(P · y_last + p) + b``: an event-driven scatter of
        the last layer's active units through P (input-major CSR, int32 indices), then the decoder (D^T is
        [E, V]). ``projection_activation`` a: "relu" (EvNN's 2023 code): ReLU, compression of its non-zeros,
        the event decoder over those; "identity" (EvNN >= 0.2.0): the output is graded and signed, so the
        decoder reads all E rows (dense mode's code).
    prefetch: with interleave 1, the batch-1 scatter loops prefetch the values and indices of the event column
        this many columns ahead (software prefetch: the rows of random columns are short — a few KiB, one or
        two pages — so the hardware prefetchers start each one late); 0 = off. The arithmetic and its order are
        unchanged (results bit for bit the same). The shared-read batched kernels do not use it.
    weight_dtype: value dtype of the layers' W and R ("f32", "f16": float16 widened in the kernel, "int8":
        quantize-int8's int8 values with the per-output scale applied after the sum — `layout.py`).
    decoder_dtype: value dtype of the decoder rows D^T (same choices; int8: per-vocabulary-row scale applied
        after the sum). The projection (EvNN) stays float32.
    event_dtype: "f32" (the event values enter the products as float32) or "u8" (int8 layers only: every event
        list is quantized to uint8 with one scale per list and step where a product reads it, and the products
        are exact int32 VNNI dot products over dense int8 rows — `u8_events.py`; the decoder too when its rows
        are int8 and it reads the last layer's events). Batched streams run one at a time."""

    vocab_size: int
    embedding_size: int
    hidden_sizes: tuple[int, ...]
    index_dtype: str = "auto"
    embed_mode: str = "auto"
    decoder_mode: str = "event"
    fast_math: bool = True
    decoder_chunk: int = 0
    decoder_unroll: int = 8
    interleave: int = 1
    table_limit_mb: float = 256.0            # = passes.fold_embedding.FOLD_MAX_MB
    table_bias: bool = True
    prefetch: int = 1
    projection: bool = False
    projection_activation: str = "identity"
    weight_dtype: str = "f32"
    decoder_dtype: str = "f32"
    event_dtype: str = "f32"

    def __post_init__(self):
        for name, least in (("vocab_size", 1), ("embedding_size", 1), ("decoder_chunk", 0), ("decoder_unroll", 0),
                            ("interleave", 0), ("prefetch", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        if not self.hidden_sizes:
            raise ValueError("need at least one layer")
        if min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden sizes must be positive, got {list(self.hidden_sizes)}")
        if self.index_dtype not in INDEX_DTYPES:
            raise ValueError(f"index_dtype must be one of {INDEX_DTYPES}, got {self.index_dtype!r}")
        if self.embed_mode == "auto":
            table_mb = self.vocab_size * 3 * self.hidden_sizes[0] * 4 / 2 ** 20
            object.__setattr__(self, "embed_mode", "table" if table_mb <= self.table_limit_mb else "csc")
        if not isinstance(self.table_bias, bool):
            raise ValueError(f"table_bias must be true or false, got {self.table_bias!r}")
        if self.embed_mode not in ("csc", "table"):
            raise ValueError("embed_mode must be 'csc' or 'table'")
        if self.decoder_mode not in ("event", "dense"):
            raise ValueError("decoder_mode must be 'event' or 'dense'")
        if self.projection_activation not in ("identity", "relu"):
            raise ValueError(f"projection_activation must be 'identity' or 'relu', got {self.projection_activation!r}")
        for name in ("weight_dtype", "decoder_dtype"):
            if getattr(self, name) not in WEIGHT_DTYPES:
                raise ValueError(f"{name} must be one of {WEIGHT_DTYPES}, got {getattr(self, name)!r}")
        if self.event_dtype not in EVENT_DTYPES:
            raise ValueError(f"event_dtype must be one of {EVENT_DTYPES}, got {self.event_dtype!r}")
        if self.event_dtype == "u8" and self.weight_dtype != "int8":
            raise ValueError("event_dtype 'u8' needs int8 weights (weight_dtype 'int8')")

    @property
    def decoder_input_size(self) -> int:
        """Rows of D^T: the embedding size behind a projection, else the last layer's size."""
        return self.embedding_size if self.projection else self.hidden_sizes[-1]

    @property
    def input_sizes(self) -> tuple[int, ...]:
        return (self.embedding_size,) + self.hidden_sizes[:-1]

    @property
    def int8_layers(self) -> bool:
        return self.weight_dtype == "int8"

    @property
    def u8_events(self) -> bool:
        return self.event_dtype == "u8"

    @property
    def u8_decoder(self) -> bool:
        """The decoder's product runs on uint8 events too (int8 rows, the last layer's events, no projection)."""
        return self.u8_events and self.decoder_dtype == "int8" and not self.projection and \
            self.decoder_mode == "event"

    @property
    def quant_capacity(self) -> int:
        """Entries of the uint8 event scratch (``q_row``): the longest event list, padded to whole passes."""
        from .u8_events import padded_events
        return padded_events(max(max(self.hidden_sizes), self.decoder_input_size))

    @property
    def sum_capacity(self) -> int:
        """Entries of the int32 sum scratch (``i_sum``): the longest padded dense row."""
        from .u8_events import padded
        return max([padded(3 * h) for h in self.hidden_sizes] + ([padded(self.vocab_size)] if self.u8_decoder
                                                                  else []))

    def acc_size(self, l: int) -> int:
        """Accumulator length of layer l: 4h (f32 / f16 packed layout) or 6h (int8: W and R sums apart)."""
        return (6 if self.int8_layers else 4) * self.hidden_sizes[l]

    def layer_index_dtype(self, l: int) -> str:
        return choose_index_dtype(self.acc_size(l), self.index_dtype)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EGRUKernelSpec":
        d = dict(d)
        if d.get("projection") and "projection_activation" not in d:
            d["projection_activation"] = "relu"      # a spec written before the activation was recorded
        d.setdefault("table_bias", False)            # written before the folded table held the bias
        d.setdefault("prefetch", 0)                  # ... and before the step kernels prefetched
        return cls(**d)


def default_target():
    """LLVM target for this CPU (dict form: flags in target strings are rejected in 0.27)."""
    import tvm
    return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})


def resolve_target(target):
    """None -> :func:`default_target`; a dict or string -> ``tvm.target.Target``; a Target as is."""
    import tvm
    if target is None:
        return default_target()
    if isinstance(target, (dict, str)):
        return tvm.target.Target(target)
    return target


def has_vnni(target=None) -> bool:
    """Whether the LLVM target (default: this CPU) has AVX512-VNNI, which the uint8-event kernels
    (``event_dtype`` u8, `u8_events.py`) need."""
    import tvm
    return bool(tvm.target.codegen.target_has_features("avx512vnni", resolve_target(target)))
