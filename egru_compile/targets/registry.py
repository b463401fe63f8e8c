"""The one registry of compilation targets, consulted by the CLI (options, `egru-compile targets`), the
runtime (which runner opens an artifact) and `inspect`.

A target is a `TargetSpec`: its name and one-line summary, an options dataclass (its fields become the
target's command-line options ``--field-name``, and ``--option field_name=VALUE`` reaches any registered
target's field, a plug-in's registered after the CLI was built included; `needs()` says which graph properties the pass pipeline must establish for
it, e.g. ``int8-weights``), where its compile function and runner live (``"module:attribute"``, imported on
first use so that listing targets stays cheap), and the manifest formats its runner opens.

Chip targets are data: every TOML file in ``targets/chip/profiles/`` is a chip target named by its ``name``
key (summary: its ``description``), compiled by the chip back-end with that profile — adding a built-in chip
is adding one file. A user's ``--profile FILE`` compiles with the same back-end, and its artifact opens
because runners are found by the manifest's ``format`` (``egru-compile/chip-program``), not by its name.
"""
from __future__ import annotations

import importlib
import math
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ..artifact import seal
from ..errors import EgruError, UsageError
from ..errors import option as spell_option
from .chip.objectives import DEFAULT_OBJECTIVE, OBJECTIVE_HELP, OBJECTIVES

PROFILE_DIR = Path(__file__).resolve().parent / "chip" / "profiles"
INT8_WEIGHTS = "int8-weights"


class TargetError(EgruError):
    pass


class UnknownTarget(TargetError, UsageError):
    """``--target`` names no registered target: a usage error (exit 2)."""


class OptionError(TargetError, UsageError):
    """A malformed ``--option KEY=VALUE`` (unknown key, value out of the field's type, choices or range): a usage
    error (exit 2), as the same value given as ``--field-name`` is to the CLI's parser."""


def option(default, help: str, choices: tuple[str, ...] | None = None, minimum=None, path: bool = False,
           aliases: tuple[str, ...] = ()):
    """A field of a target's options dataclass, with what the CLI needs to offer it as ``--field-name``
    (`path`: an existing file; `aliases`: further flags, e.g. an older name, given as ``--alias-name``)."""
    return field(default=default, metadata={"help": help, "choices": choices, "min": minimum, "path": path,
                                            "aliases": tuple(aliases)})


#: the embedding fold of the onnx and tvm targets (one rule: `passes.fold_embedding`)
FOLD_HELP = ("fold the embedding into layer 0's input product: a [vocab, 3 h0] float32 table built at load time, "
             "one row read per token instead of a matrix-vector product (auto: when the table is <= --fold-max-mb; "
             "its memory is the user's)")
FOLD_MAX_HELP = "largest folded embedding table (MiB) that --fold-embedding auto builds"


@dataclass(frozen=True)
class NoOptions:
    def needs(self) -> frozenset[str]:
        return frozenset()


@dataclass(frozen=True)
class OnnxTargetOptions:
    #: the generic name of the weight-row precision option (tvm takes it too: `TvmTargetOptions`)
    weight_dtype: str = option("auto", "dtype of the gathered weight rows (auto: f32, or int8 after "
                               "quantize-int8; int8 adds quantize-int8 — a quarter of the bytes, the fastest in "
                               "ORT)", choices=("auto", "f32", "f16", "int8"), aliases=("onnx_weight_dtype",))
    decoder_dtype: str = option("auto", "dtype of the gathered decoder rows (auto: int8 with int8 layer rows when "
                                "the calibration perplexity changes by <= 0.1 %, else as the layers)",
                                choices=("auto", "f32", "f16", "int8"))
    fold_embedding: str = option("auto", FOLD_HELP, choices=("auto", "on", "off"))
    fold_max_mb: float = option(256.0, FOLD_MAX_HELP, minimum=0)

    def needs(self) -> frozenset[str]:
        return frozenset({INT8_WEIGHTS} if self.weight_dtype == "int8" else ())


@dataclass(frozen=True)
class TvmTargetOptions:
    weight_dtype: str = option("auto", "dtype of the weight values the TVM kernels read (auto: f32, or int8 "
                               "after quantize-int8; int8 adds quantize-int8)", choices=("auto", "f32", "f16", "int8"))
    decoder_dtype: str = option("auto", "dtype of the TVM decoder rows (auto: int8 with --weight-dtype int8 when "
                                "the calibration perplexity changes by <= 0.1 %, f16 with f16, else f32)",
                                choices=("auto", "f32", "f16", "int8"))
    event_dtype: str = option("f32", "event values entering the int8 products: f32, or u8 (quantized per step to "
                              "uint8, one scale per event list, as ORT's quantize_dynamic; exact int32 AVX512-VNNI "
                              "dot products over dense int8 rows; implies --weight-dtype int8)", choices=("f32", "u8"))
    fold_embedding: str = option("auto", FOLD_HELP, choices=("auto", "on", "off"))
    fold_max_mb: float = option(256.0, FOLD_MAX_HELP, minimum=0)

    def needs(self) -> frozenset[str]:
        return frozenset({INT8_WEIGHTS} if self.weight_dtype == "int8" or self.event_dtype == "u8" else ())


@dataclass(frozen=True)
class ChipTargetOptions:
    profile: str | None = option(None, "chip profile TOML file (overrides the target's built-in profile; "
                                 "without --target it names the target)", path=True)
    max_chips: int = option(16, "most chips a placement may use", minimum=1)
    float_weights: bool = option(False, "keep float weights (no int8 quantization; = --weight-dtype f32)")
    weight_dtype: str = option("auto", "synaptic weights: int8 per-row (auto, the default), f16 (16-bit words; "
                               "the profile must hold 16-bit weights) or f32 (the float reference)",
                               choices=("auto", "f32", "f16", "int8"))
    placement_objective: str = option(DEFAULT_OBJECTIVE, OBJECTIVE_HELP, choices=tuple(OBJECTIVES))
    decoder: str = option("host", "run the decoder on the host (default: it is dense and its logits leave the "
                          "chip anyway) or place its synapses on cores", choices=("host", "chip"))

    def needs(self) -> frozenset[str]:
        int8 = self.weight_dtype == "int8" or (self.weight_dtype == "auto" and not self.float_weights)
        return frozenset({INT8_WEIGHTS}) if int8 else frozenset()


@dataclass(frozen=True)
class TargetSpec:
    name: str
    summary: str
    compile: str                                  # "module:function" (graph, source, out_dir, options, **params)
    runner: str                                   # "module:attribute" factory (path, manifest, **options)
    options: type = NoOptions
    formats: tuple[str, ...] = ()                 # manifest "format" values its runner opens
    params: dict[str, Any] = field(default_factory=dict)   # fixed keyword arguments of compile (e.g. the profile)
    family: str = ""                              # targets sharing a back-end ("chip")

    def make_options(self, values: dict):
        """The options dataclass from `values` (unknown keys ignored; None means the default; a field's
        ``aliases`` are accepted as keys too)."""
        kw = {}
        for f in fields(self.options):
            for key in (f.name, *f.metadata.get("aliases", ())):       # an alias counts when the name is unset
                if values.get(key) is not None:
                    kw[f.name] = values[key]
                    break
        return self.options(**kw)

    def compile_artifact(self, graph, source, out_dir, options: dict) -> dict:
        """Run the target's compile into `out_dir`, then seal the artifact (`artifact.seal`)."""
        result = _load(self.compile)(graph, source, out_dir, options, **self.params)
        seal(out_dir)
        return result

    def open_runner(self, path, manifest, **options):
        return _load(self.runner)(path, manifest, **options)


def _load(spec: str) -> Callable:
    mod, attr = spec.split(":")
    obj = importlib.import_module(mod)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


CHIP_FORMAT = "egru-compile/chip-program"

_BUILTIN = [
    TargetSpec("onnx", "ONNX model for stock onnxruntime (model-local functions, event-gated sparse products)",
               "egru_compile.targets.onnx:compile_onnx", "egru_compile.targets.onnx.runner:OnnxRunner.from_artifact",
               OnnxTargetOptions, ("egru-compile/onnx-model",)),
    TargetSpec("tvm", "native CPU code via Apache TVM (TIR kernels, event-driven, egru_step.so)",
               "egru_compile.targets.tvm:compile_tvm", "egru_compile.targets.tvm.runner:TVMRunner.from_artifact",
               TvmTargetOptions, ("egru-compile/tvm-step",)),
]

#: name -> TargetSpec; filled with the built-in targets, the chip profiles and `register_target` calls
_REGISTRY: dict[str, TargetSpec] = {}
_loaded = False


def chip_target(name: str, summary: str, profile: str) -> TargetSpec:
    """The chip back-end with `profile` (a built-in profile name or a TOML path) as its default profile."""
    return TargetSpec(name, summary, "egru_compile.targets.chip:compile_chip",
                      "egru_compile.targets.chip.runner:ChipRunner.from_artifact", ChipTargetOptions,
                      (CHIP_FORMAT,), {"default_profile": profile}, family="chip")


def _builtin_chips() -> list[TargetSpec]:
    specs = []
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise TargetError(f"built-in chip profile {path.name} is unreadable: {e}") from None
        name = str(data.get("name") or path.stem)
        specs.append(chip_target(name, str(data.get("description", "")).strip() or f"chip profile {name}",
                                 str(path)))
    return specs


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for spec in _BUILTIN + _builtin_chips():
            _REGISTRY.setdefault(spec.name, spec)


def register_target(spec: TargetSpec) -> None:
    """Add (or replace) a target; a plug-in outside this package calls this when imported."""
    _ensure_loaded()
    _REGISTRY[spec.name] = spec


def all_targets() -> list[TargetSpec]:
    _ensure_loaded()
    return list(_REGISTRY.values())


def target_names() -> list[str]:
    return [s.name for s in all_targets()]


def get(name: str) -> TargetSpec:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise UnknownTarget(f"unknown target {name!r} (known: {', '.join(_REGISTRY)}; or "
                          f"{spell_option('profile', 'FILE.toml')})")
    return _REGISTRY[name]


def for_manifest(manifest: dict) -> TargetSpec | None:
    """The target whose runner opens an artifact with this manifest: by name, else by its format."""
    _ensure_loaded()
    spec = _REGISTRY.get(manifest.get("target"))
    if spec is not None and (not spec.formats or manifest.get("format") in spec.formats
                             or manifest.get("format") is None):
        return spec
    fmt = manifest.get("format")
    return next((s for s in _REGISTRY.values() if fmt in s.formats), None)


def option_fields() -> list[tuple[str, Any, dict, list[str]]]:
    """Every target option once: (field name, default, metadata, names of the targets that take it)."""
    seen: dict[str, tuple[str, Any, dict, list[str]]] = {}
    for spec in all_targets():
        for f in fields(spec.options):
            if f.name not in seen:
                default = f.default if f.default is not MISSING else None
                seen[f.name] = (f.name, default, dict(f.metadata), [])
            seen[f.name][3].append(spec.name)
    return list(seen.values())


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``compile --option`` -> (field name, value typed as the field's default), checked
    against every registered target's options dataclass (KEY may use ``-`` or ``_``; an alias counts as its
    field). Whether the chosen target takes the field is checked later, with the other target options
    (`compile_driver.resolve_target`). Raises `OptionError` (one line, a usage error) on a malformed pair, an unknown key or
    a value out of the field's choices / range."""
    key, sep, value = str(text).partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise OptionError(f"--option {text!r}: expected KEY=VALUE (e.g. --option max_chips=4)")
    known: dict[str, tuple[str, Any, dict]] = {}
    for name, default, meta, _takers in option_fields():
        for k in (name, *meta.get("aliases", ())):
            known.setdefault(k, (name, default, meta))
    if key not in known:
        raise OptionError(f"--option {key}: no registered target has this option (known: "
                          f"{', '.join(sorted(n for n, *_ in option_fields()))})")
    name, default, meta = known[key]
    value = value.strip()
    if isinstance(default, bool):
        if value.lower() not in _TRUE + _FALSE:
            raise OptionError(f"--option {key}={value}: expected true or false")
        return name, value.lower() in _TRUE
    if meta.get("choices") and value not in meta["choices"]:
        raise OptionError(f"--option {key}={value}: expected one of {', '.join(meta['choices'])}")
    if meta.get("path") and not Path(value).is_file():
        raise OptionError(f"--option {key}={value}: no such file")
    if isinstance(default, int):
        try:
            number = int(value)
        except ValueError:
            raise OptionError(f"--option {key}={value}: expected an integer") from None
        if meta.get("min") is not None and number < meta["min"]:
            raise OptionError(f"--option {key}={value}: expected an integer >= {meta['min']}")
        return name, number
    if isinstance(default, float):
        try:
            number = float(value)
        except ValueError:
            raise OptionError(f"--option {key}={value}: expected a number") from None
        if not math.isfinite(number) or meta.get("min") is not None and number < meta["min"]:
            raise OptionError(f"--option {key}={value}: expected a finite number >= {meta.get('min', '-inf')}")
        return name, number
    return name, value
