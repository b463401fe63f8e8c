"""A checked `EGRULanguageModel` from a state_dict: the content checks a project checkpoint's or an EvNN
state_dict's weights pass (dtypes and layouts, sizes against the config before anything is allocated, tied
decoder, finite values, float32 pre-activation range, thresholds clamped to [0, 1]) and `_build`, which
runs them and applies ``torch.nn.utils.prune`` masks."""
from __future__ import annotations

import math
import re
import warnings

import torch
from torch.nn.utils import prune

from ..model import EGRUConfig, EGRULanguageModel
from .source_model import CheckpointError


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
