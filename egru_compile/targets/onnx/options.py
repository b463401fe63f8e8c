"""Options and results of the ONNX target: `OnnxOptions` (the target's options), `IOSpec` (one step
input/output), `Lowered` (the lowered model with its I/O description), the dtype maps and the ``ai.egru``
domain's name and versions (`functions`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import onnx
from onnx import TensorProto

from ...errors import EgruError, UsageError

#: the compiler's ONNX function domain, its version and the standard opset of the models and function bodies
DOMAIN = "ai.egru"
DOMAIN_VERSION = 1
OPSET = 21

ONNX_DTYPES = {"f32": TensorProto.FLOAT, "f64": TensorProto.DOUBLE, "i64": TensorProto.INT64,
               "i32": TensorProto.INT32, "i16": TensorProto.INT16, "i8": TensorProto.INT8,
               "bool": TensorProto.BOOL}
NP_NAMES = {"f32": "float32", "f64": "float64", "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8",
            "bool": "bool"}


class OnnxLoweringError(EgruError):
    pass


class OnnxOptionError(OnnxLoweringError, UsageError):
    """An onnx option value out of its range (NaN slips through click's FloatRange): a usage error (exit 2)."""


@dataclass
class OnnxOptions:
    """Options of the ONNX target (keys of the compile `options` dict; others are ignored)."""

    #: runtime dtype of event-gated weight rows: "auto" (int8 rows + scale for the IR's int8 matrices —
    #: exact —, f32 otherwise), "f32" (everything dequantized to f32), "f16" (half the bytes, ~1e-3 relative),
    #: "int8" (as auto, but an error unless quantize-int8 ran: a quarter of the f32 bytes)
    weight_dtype: str = "auto"
    #: gate matrix-vector products of event tensors (False: every product is a dense MatMul)
    event_gating: bool = True
    #: also gate the decoder (its input is the last layer's events)
    event_decoder: bool = True
    #: rows of the gated decoder (`decoder`): "auto" (int8 — quantize-int8's rule, one scale per vocabulary row —
    #: when the layers gather int8 rows and the calibration perplexity changes by <= 0.1 %; else as the layers),
    #: "f32", "f16", "int8" (unchecked)
    decoder_dtype: str = "auto"
    #: lower an event tensor's products densely when its layer's activity measured by count-macs
    #: (``--calib-data``) exceeds this: gathering rows costs ~1.5-2x a dense read per byte
    gate_max_activity: float = 0.5
    #: fold embedding @ first input matrix into one [V, 3h] table at load time (None / "auto": when
    #: <= fold_max_mb; True / "on", False / "off"; `passes.fold_embedding.fold_mode`)
    fold_embedding: bool | str | None = None
    fold_max_mb: float = 256.0
    #: store 2-D weights as CSR initializers when smaller than dense
    sparse_storage: bool = True
    #: extra outputs events{l} and macs
    extras: bool = True
    #: the compile driver's calibration token ids and perplexity function (``decoder_dtype`` auto's check);
    #: not options of the artifact (left out of `to_dict`)
    calib_token_ids: object = field(default=None, repr=False, compare=False, metadata={"internal": True})
    perplexity: object = field(default=None, repr=False, compare=False, metadata={"internal": True})

    def __post_init__(self):
        from ...passes.fold_embedding import fold_mode
        try:
            self.fold_embedding = fold_mode(self.fold_embedding)
        except ValueError as e:
            raise OnnxLoweringError(f"onnx {e}") from None
        if not float(self.fold_max_mb) >= 0:
            raise OnnxOptionError(f"--fold-max-mb {self.fold_max_mb}: expected a number >= 0")
        if self.weight_dtype not in ("auto", "f32", "f16", "int8"):
            raise OnnxLoweringError(f"onnx weight_dtype must be 'auto', 'f32', 'f16' or 'int8', "
                                    f"not {self.weight_dtype!r}")
        if self.decoder_dtype not in ("auto", "f32", "f16", "int8"):
            raise OnnxLoweringError(f"onnx decoder_dtype must be 'auto', 'f32', 'f16' or 'int8', "
                                    f"not {self.decoder_dtype!r}")

    @classmethod
    def from_options(cls, options) -> "OnnxOptions":
        if options is None:
            return cls()
        if isinstance(options, OnnxOptions):
            return options
        if not isinstance(options, Mapping):
            raise OnnxLoweringError(f"compile options must be a dict, not {type(options).__name__}")
        known = {f.name for f in fields(cls)}
        kw = {}
        for k, v in options.items():
            key = k[len("onnx_"):] if isinstance(k, str) and k.startswith("onnx_") else k
            if key in known and v is not None:
                kw[key] = v
        return cls(**kw)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.metadata.get("internal")}


@dataclass
class IOSpec:
    name: str
    dtype: str                # numpy dtype name
    shape: list[int]
    role: str
    layer: int | None = None
    kind: str | None = None
    state_input: str | None = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "dtype": self.dtype, "shape": self.shape, "role": self.role}
        if self.layer is not None:
            d["layer"] = self.layer
        if self.kind is not None:
            d["kind"] = self.kind
        if self.state_input is not None:
            d["state_input"] = self.state_input
        return d


@dataclass
class Lowered:
    model: onnx.ModelProto
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    stats: dict
