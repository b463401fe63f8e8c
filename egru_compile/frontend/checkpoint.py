"""Checkpoint formats and loaders.

Supported sources (detected from content, not file name):

* **project checkpoint** — ``torch.save`` of a dict ``{"format": "egru-compile/checkpoint", "version": 1,
  "config": {...}, "vocab": [...], "state_dict": {...}, "meta": {...}}``. Weights may carry
  ``torch.nn.utils.prune`` masks (``<name>_orig`` + ``<name>_mask``).
* **EvNN LanguageModel state_dict** — keys ``embeddings.weight``, ``rnns.{l}.kernel``,
  ``rnns.{l}.recurrent_kernel``, ``rnns.{l}.bias``, ``rnns.{l}.recurrent_bias``, ``rnns.{l}.thr``,
  ``decoder.decoder.weight``, ``decoder.decoder.bias``, and with EvNN's ``--projection`` also
  ``decoder.projection.weight`` [emb, h_last] / ``decoder.projection.bias`` (then every layer may have any
  size); other buffers (``rnns.{l}.dampening_factor``, ``rnns.{l}.pseudo_derivative_support``: training
  only) are ignored. Vocabulary from ``--vocab``.
* **torch.export program** (``.pt2``) of an EGRU step (see `trace.export_step` for the signature).

``torch.load`` always runs with ``weights_only=True``; a pickled module is refused unless ``trust=True``.
"""
from __future__ import annotations

import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.utils import prune

from ..artifact import file_sha256
from ..data import Vocabulary
from ..errors import EgruError
from ..fsio import atomic_write
from ..model import EGRUConfig, EGRULanguageModel

FORMAT_TAG = "egru-compile/checkpoint"
FORMAT_VERSION = 1


class CheckpointError(EgruError):
    """A checkpoint cannot be loaded; the message says why in one line."""


class BaselineCheckpointError(CheckpointError):
    """A dense GRU / LSTM baseline (`train --model gru|lstm`): it evaluates (`runtime.baseline_runner`) but
    has no events to compile."""

    def __init__(self, path: str, cell: str):
        super().__init__(f"{path} is a dense {cell.upper()} baseline (train --model {cell}): it has no event "
                         "units to compile; `egru-compile eval` evaluates it for comparison")
        self.path, self.cell = path, cell


@dataclass
class SourceModel:
    """What a loader produced: a PyTorch model (or an exported program) plus its vocabulary."""

    kind: str                                   # "egru-checkpoint" | "evnn-state-dict" | "exported-program" | "pickled-module"
    path: str
    sha256: str
    model: EGRULanguageModel | None = None
    exported: torch.export.ExportedProgram | None = None
    vocab: Vocabulary | None = None
    meta: dict = field(default_factory=dict)

    @property
    def hidden_sizes(self) -> list[int]:
        if self.model is not None:
            return list(self.model.config.hidden_sizes)
        sig = self.exported.graph_signature
        vals = {n.name: n.meta.get("val") for n in self.exported.graph.nodes if n.op == "placeholder"}
        return [int(vals[name].shape[-1]) for name in sig.user_inputs[1::2]]

    def to_graph(self):
        """Trace into the IR (torch.export of the step, then ATen pattern matching); its constants and value
        bounds checked (`ir.content.check_graph_content`)."""
        from ..ir.content import ContentError, check_graph_content
        from ..ir.verify import VerificationError, verify_step
        from .trace import import_exported_program, trace_model
        graph = import_exported_program(self.exported) if self.exported is not None else trace_model(self.model)
        try:        # also what a pickled module or an exported program holds (not loaded through `_build`)
            verify_step(graph)
            check_graph_content(graph, self.path)
        except VerificationError as e:
            raise CheckpointError(f"{self.path}: {e}") from None
        except ContentError as e:
            raise CheckpointError(str(e)) from None
        return graph


# ---------------------------------------------------------------------------------------------- saving
def _atomic_torch_save(obj, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp), mkdir=True)


def save_checkpoint(path: str | Path, model: EGRULanguageModel, vocab: Vocabulary | list[str] | None,
                    meta: dict | None = None) -> None:
    """Write a project checkpoint (atomically). Prune masks present on the model are kept."""
    words = vocab.words if isinstance(vocab, Vocabulary) else (list(vocab) if vocab is not None else None)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_torch_save({"format": FORMAT_TAG, "version": FORMAT_VERSION, "config": model.config.to_dict(),
                        "vocab": words, "state_dict": sd, "meta": dict(meta or {})}, path)


# ---------------------------------------------------------------------------------------------- loading
def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:200] if s else type(e).__name__


def _torch_load(path: str, trust: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg or "Unsupported global" in msg:
            if not trust:
                raise CheckpointError(
                    f"{path} contains pickled Python objects, which could run arbitrary code when loaded; "
                    "refusing (re-run with --trust-checkpoint if you trust its author)") from None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return torch.load(path, map_location="cpu", weights_only=False)
            except Exception as e2:  # noqa: BLE001
                raise CheckpointError(f"cannot read {path}: {_first_line(e2)}") from e2
        raise CheckpointError(f"cannot read {path}: truncated or corrupt checkpoint ({_first_line(e)})") from e


def _apply_prune_masks(model: torch.nn.Module, state_dict: dict) -> dict:
    """Register `torch.nn.utils.prune` masks for every ``<name>_mask`` in `state_dict` (strict about shapes)."""
    for key in [k for k in state_dict if k.endswith("_mask")]:
        base = key[: -len("_mask")]
        if base + "_orig" not in state_dict:
            continue
        mod_path, _, pname = base.rpartition(".")
        try:
            module = model.get_submodule(mod_path)
        except AttributeError:
            raise CheckpointError(f"prune mask {key} names a module {mod_path!r} the model does not have") from None
        if not isinstance(getattr(module, pname, None), torch.nn.Parameter):
            raise CheckpointError(f"prune mask {key} names an unknown parameter")
        mask = state_dict[key]
        if mask.shape != getattr(module, pname).shape:
            raise CheckpointError(f"prune mask {key} has shape {tuple(mask.shape)}, weight has "
                                  f"{tuple(getattr(module, pname).shape)}")
        prune.custom_from_mask(module, pname, mask)
    return state_dict


_WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MASK_DTYPES = _WEIGHT_DTYPES + (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def validate_state_dict(sd, path: str) -> dict:
    """`sd` as a dict of string keys to dense (strided, unquantized) CPU tensors of a supported dtype
    (floating point for weights; masks may also be bool/integer); one-line CheckpointError otherwise."""
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: state_dict is a {type(sd).__name__}, not a dict")
    for k, v in sd.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: state_dict key {k!r} is not a string")
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: {k} is a {type(v).__name__}, not a tensor")
        if v.layout != torch.strided or v.is_quantized or v.is_nested:
            kind = "quantized" if v.is_quantized else str(v.layout).replace("torch.", "")
            raise CheckpointError(f"{path}: {k} is a {kind} tensor; only dense tensors are supported")
        allowed = _MASK_DTYPES if k.endswith("_mask") else _WEIGHT_DTYPES
        if v.dtype not in allowed:
            raise CheckpointError(f"{path}: {k} has dtype {str(v.dtype).replace('torch.', '')}; supported: "
                                  + ", ".join(str(d).replace("torch.", "") for d in allowed))
    return sd


_LAYER_KEY = re.compile(r"^rnns\.(\d{1,9})\.")


def _check_sizes(config: EGRUConfig, state_dict: dict, path: str) -> None:
    """Compare the shapes `config` declares with the stored tensors before anything of that size is allocated
    (the reference model is built on the meta device), so a small file cannot make the loader allocate a
    model far larger than the weights it holds. The layer count is compared first, on the keys alone: a
    config listing 200,000 layers is refused before a single layer (even a meta one) is built."""
    stored = {int(m.group(1)) for k in state_dict if isinstance(k, str) and (m := _LAYER_KEY.match(k))}
    n = len(config.hidden_sizes)
    if n != len(stored) or (stored and max(stored) != n - 1):
        raise CheckpointError(f"{path}: the config declares {n} layer(s), the weights hold {len(stored)}")
    with torch.device("meta"):
        ref = EGRULanguageModel(config).state_dict()
    missing = [k for k in ref if k not in state_dict and k + "_orig" not in state_dict]
    if missing:
        raise CheckpointError(f"{path}: missing weights {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    for k, t in ref.items():
        have = state_dict[k] if k in state_dict else state_dict[k + "_orig"]
        if tuple(have.shape) != tuple(t.shape):
            raise CheckpointError(f"{path}: {k} has shape {tuple(have.shape)}, but the config declares "
                                  f"{tuple(t.shape)}")


def _check_finite(model: torch.nn.Module, path: str) -> None:
    """Every stored value is finite in float32, the precision every target computes in (a float64 weight
    of 1e39 is finite as stored but infinite once cast)."""
    for k, v in model.state_dict().items():
        if torch.is_floating_point(v) and not torch.isfinite(v).all():
            raise CheckpointError(f"{path}: weight {k} contains NaN or Inf (in float32)")


def check_preactivation_range(model: EGRULanguageModel, path: str) -> None:
    """Refuse weights whose products can overflow float32: the content check every runner's weights go
    through (`ir.content.check_stack`, which gives the bound)."""
    from ..ir.content import ContentError, check_stack

    def np_(t):
        return t.detach().float().cpu().numpy()
    layers = [{"W": np_(L.kernel).T, "b": np_(L.bias), "R": np_(L.recurrent_kernel).T, "br": np_(L.recurrent_bias),
               "thr": np_(L.thr).clip(0.0, 1.0)} for L in model.rnns]
    proj = getattr(model.decoder, "projection", None)
    try:
        check_stack(path, np_(model.embeddings.weight), layers, np_(model.decoder.decoder.weight),
                    np_(model.decoder.decoder.bias), None if proj is None else np_(proj.weight),
                    None if proj is None else np_(proj.bias))
    except ContentError as e:
        raise CheckpointError(str(e)) from None


def _clamp_thresholds(model: EGRULanguageModel, path: str) -> None:
    with torch.no_grad():
        for i, layer in enumerate(model.rnns):
            thr = layer.thr
            if (thr < 0).any() or (thr > 1).any():
                warnings.warn(f"{path}: rnns.{i}.thr has values outside [0, 1]; clamped as EvNN does",
                              stacklevel=3)
                thr.clamp_(0.0, 1.0)


def _check_tied(state_dict: dict, path: str) -> None:
    """The decoder is the embedding table (tied): a checkpoint whose ``decoder.decoder.weight`` differs from
    its ``embeddings.weight`` is refused, never silently compiled with one of the two."""
    emb, dec = state_dict.get("embeddings.weight"), state_dict.get("decoder.decoder.weight")
    for key, t in (("embeddings.weight", emb), ("decoder.decoder.weight", dec)):
        if t is not None and torch.is_floating_point(t) and not torch.isfinite(t.float()).all():
            raise CheckpointError(f"{path}: weight {key} contains NaN or Inf (in float32)")
    if emb is not None and dec is not None and (emb.shape != dec.shape or not torch.equal(emb.float(), dec.float())):
        raise CheckpointError(f"{path}: decoder.decoder.weight differs from embeddings.weight; only tied decoders "
                              "(the decoder is the embedding table, EvNN's default) are supported")


def _check_config_dict(d: dict, path: str) -> None:
    """Types and ranges of a project checkpoint's config before anything is built from it."""
    def size(key, v):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= _MAX_SIZE:
            raise CheckpointError(f"{path}: bad config: {key} must be a whole number in [1, {_MAX_SIZE}], "
                                  f"got {_short(v)}")
    for key in ("vocab_size", "embedding_size"):
        if key not in d:
            raise CheckpointError(f"{path}: bad config: no {key}")
        size(key, d[key])
    hidden = d.get("hidden_sizes")
    if not isinstance(hidden, list) or not hidden:
        raise CheckpointError(f"{path}: bad config: hidden_sizes must be a non-empty list, got {_short(hidden)}")
    for h in hidden:
        size("hidden_sizes", h)
    for key in ("dampening", "support"):
        v = d.get(key, 1.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise CheckpointError(f"{path}: bad config: {key} must be a finite number >= 0, got {_short(v)}")
    if not isinstance(d.get("projection", False), bool):
        raise CheckpointError(f"{path}: bad config: projection must be true or false, got {_short(d['projection'])}")


#: largest vocabulary / layer size a config may declare (int32 indices everywhere downstream)
_MAX_SIZE = 2 ** 31 - 1


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _build(config: EGRUConfig, state_dict: dict, path: str) -> EGRULanguageModel:
    validate_state_dict(state_dict, path)
    _check_sizes(config, state_dict, path)
    _check_tied(state_dict, path)
    with torch.device("meta"):              # no random initialisation (every tensor is loaded below): the
        model = EGRULanguageModel(config)   # orthogonal init alone took ~25 s at hidden 4096
    model = model.to_empty(device="cpu")
    model.decoder.decoder.weight = model.embeddings.weight          # to_empty unties the tied decoder
    _apply_prune_masks(model, state_dict)
    expected = set(model.state_dict())
    missing = sorted(expected - set(state_dict))
    if missing:
        raise CheckpointError(f"{path}: missing weights {', '.join(missing[:4])}" + (" ..." if len(missing) > 4 else ""))
    extra = sorted(set(state_dict) - expected)
    if extra:
        warnings.warn(f"{path}: ignoring unknown keys {', '.join(extra[:4])}" + (" ..." if len(extra) > 4 else ""),
                      stacklevel=3)
    for k in expected:
        want = model.state_dict()[k].shape
        if state_dict[k].shape != want:
            raise CheckpointError(f"{path}: {k} has shape {tuple(state_dict[k].shape)}, expected {tuple(want)}")
    model.load_state_dict({k: state_dict[k].float() if torch.is_floating_point(state_dict[k]) else state_dict[k]
                           for k in expected})
    _check_finite(model, path)
    _refresh_pruned_weights(model)
    _clamp_thresholds(model, path)
    check_preactivation_range(model, path)
    model.eval()
    return model


def _refresh_pruned_weights(model: torch.nn.Module) -> None:
    """Recompute `<name> = <name>_orig * <name>_mask` (prune hooks only do it on the next forward)."""
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


_EVNN_LAYER = re.compile(r"^rnns\.(\d+)\.(kernel|recurrent_kernel|bias|recurrent_bias|thr)(_orig|_mask)?$")
_EVNN_PROJECTION = re.compile(r"^decoder\.projection\.(weight|bias)(_orig|_mask)?$")


def evnn_config_from_state_dict(sd: dict, path: str) -> EGRUConfig:
    if "embeddings.weight" not in sd:
        raise CheckpointError(f"{path}: EvNN state_dict lacks embeddings.weight")
    if sd["embeddings.weight"].dim() != 2:
        raise CheckpointError(f"{path}: embeddings.weight has shape {tuple(sd['embeddings.weight'].shape)}, "
                              "expected (vocabulary, embedding size)")
    vocab_size, emb = sd["embeddings.weight"].shape
    layers = sorted({int(m.group(1)) for k in sd if (m := _EVNN_LAYER.match(k))})
    if layers != list(range(len(layers))) or not layers:
        raise CheckpointError(f"{path}: EvNN state_dict has no or non-contiguous rnns.* layers")
    hidden = []
    prev = emb
    for l in layers:
        rk = sd.get(f"rnns.{l}.recurrent_kernel", sd.get(f"rnns.{l}.recurrent_kernel_orig"))
        k = sd.get(f"rnns.{l}.kernel", sd.get(f"rnns.{l}.kernel_orig"))
        if rk is None or k is None:
            raise CheckpointError(f"{path}: layer {l} lacks kernel or recurrent_kernel")
        if rk.dim() != 2 or k.dim() != 2:
            raise CheckpointError(f"{path}: rnns.{l} kernel {tuple(k.shape)} / recurrent_kernel {tuple(rk.shape)} "
                                  "are not matrices")
        h = rk.shape[0]
        if tuple(rk.shape) != (h, 3 * h):
            raise CheckpointError(f"{path}: rnns.{l}.recurrent_kernel has shape {tuple(rk.shape)}, expected (h, 3h)")
        if tuple(k.shape) != (prev, 3 * h):
            raise CheckpointError(f"{path}: rnns.{l}.kernel has shape {tuple(k.shape)}, expected ({prev}, {3 * h}) "
                                  "(input size must match the previous layer)")
        hidden.append(h)
        prev = h
    pw = sd.get("decoder.projection.weight", sd.get("decoder.projection.weight_orig"))
    projection = pw is not None
    if projection:
        if tuple(pw.shape) != (emb, prev):
            raise CheckpointError(f"{path}: decoder.projection.weight has shape {tuple(pw.shape)}, expected "
                                  f"({emb}, {prev}) (embedding size, last layer size)")
        if "decoder.projection.bias" not in sd and "decoder.projection.bias_orig" not in sd:
            raise CheckpointError(f"{path}: EvNN state_dict has decoder.projection.weight but no "
                                  "decoder.projection.bias")
    try:
        return EGRUConfig(vocab_size=int(vocab_size), embedding_size=int(emb), hidden_sizes=hidden,
                          projection=projection)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _load_evnn(sd: dict, path: str, vocab: Vocabulary | None) -> EGRULanguageModel:
    config = evnn_config_from_state_dict(sd, path)
    dec = sd.get("decoder.decoder.weight")
    if dec is not None and not torch.equal(dec, sd["embeddings.weight"]):
        raise CheckpointError(f"{path}: decoder.decoder.weight differs from embeddings.weight; "
                              "only tied decoders (EvNN default) are supported")
    keep = {}
    for k, v in sd.items():
        if k == "embeddings.weight" or k == "decoder.decoder.bias" or _EVNN_LAYER.match(k) \
                or _EVNN_PROJECTION.match(k):
            keep[k] = v
        elif k == "decoder.decoder.weight":
            keep[k] = v
    if "decoder.decoder.bias" not in keep:
        raise CheckpointError(f"{path}: EvNN state_dict lacks decoder.decoder.bias")
    if vocab is not None and len(vocab) != config.vocab_size:
        raise CheckpointError(f"{path}: model has {config.vocab_size} words, vocabulary file gives {len(vocab)}")
    return _build(config, keep, path)


def load_source(path: str | Path, trust: bool = False, vocab_file: str | Path | None = None) -> SourceModel:
    """Load any supported source; raises CheckpointError with a one-line reason."""
    path = str(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    from .ir_source import is_ir_file, load_ir_source
    if is_ir_file(path):                    # IR text (`egru-compile --emit-ir`)
        return load_ir_source(path, vocab_file)
    sha = file_sha256(path)
    vocab = Vocabulary.from_train_file(vocab_file) if vocab_file else None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            if not trust:
                raise CheckpointError(
                    f"{path} is a torch.export program: loading it unpickles its members, which could run "
                    "arbitrary code; refusing (re-run with --trust-checkpoint if you trust its author)")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ep = torch.export.load(path)
            except Exception as e:  # noqa: BLE001
                raise CheckpointError(f"cannot read exported program {path}: {_first_line(e)}") from e
            return SourceModel("exported-program", path, sha, exported=ep, vocab=vocab)
    obj = _torch_load(path, trust)
    if isinstance(obj, EGRULanguageModel):
        obj.eval()
        _check_finite(obj, path)                 # the content checks a project checkpoint's weights pass
        check_preactivation_range(obj, path)
        return SourceModel("pickled-module", path, sha, model=obj, vocab=vocab)
    if isinstance(obj, torch.nn.Module):
        raise CheckpointError(f"{path}: pickled module of type {type(obj).__name__} is not an EGRULanguageModel")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(obj).__name__}")
    if obj.get("format") == "egru-compile/baseline-checkpoint":      # train.baselines.BASELINE_FORMAT
        cfg = obj.get("config")
        raise BaselineCheckpointError(path, str(cfg.get("cell", "gru")) if isinstance(cfg, dict) else "gru")
    if obj.get("format") == FORMAT_TAG:
        if obj.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: checkpoint format version {obj.get('version')} is not supported "
                                  f"(this compiler reads version {FORMAT_VERSION})")
        for key in ("config", "state_dict"):
            if key not in obj:
                raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
        if not isinstance(obj["config"], dict):
            raise CheckpointError(f"{path}: config is a {type(obj['config']).__name__}, not a dict")
        _check_config_dict(obj["config"], path)
        try:
            config = EGRUConfig.from_dict(obj["config"])
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{path}: bad config: {_first_line(e)}") from None
        model = _build(config, dict(validate_state_dict(obj["state_dict"], path)), path)
        words = obj.get("vocab")
        if words is not None and (not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words)):
            raise CheckpointError(f"{path}: vocab must be a list of strings")
        if vocab is None and words:
            vocab = Vocabulary(words)
        if vocab is not None and len(vocab) != config.vocab_size:
            raise CheckpointError(f"{path}: model has {config.vocab_size} words, vocabulary has {len(vocab)}")
        meta = obj.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise CheckpointError(f"{path}: meta is a {type(meta).__name__}, not a dict")
        return SourceModel("egru-checkpoint", path, sha, model=model, vocab=vocab, meta=dict(meta or {}))
    sd = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
    if any(isinstance(k, str) and _EVNN_LAYER.match(k) for k in sd):
        validate_state_dict(sd, path)
        return SourceModel("evnn-state-dict", path, sha, model=_load_evnn(sd, path, vocab), vocab=vocab)
    raise CheckpointError(f"{path}: not an egru-compile checkpoint, EvNN state_dict or exported program")
