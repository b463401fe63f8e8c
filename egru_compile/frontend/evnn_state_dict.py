"""The EvNN LanguageModel state_dict reader: its config read off the weight shapes
(`evnn_config_from_state_dict`) and the model built from the keys EvNN's inference uses (`_load_evnn`)."""
from __future__ import annotations

import re
import warnings

import torch

from ..data import Vocabulary
from ..model import DEFAULT_PROJECTION_ACTIVATION, EGRUConfig, EGRULanguageModel
from .source_model import CheckpointError
from .state_dict_model import _build


_EVNN_LAYER = re.compile(r"^rnns\.(\d+)\.(kernel|recurrent_kernel|bias|recurrent_bias|thr)(_orig|_mask)?$")
_EVNN_PROJECTION = re.compile(r"^decoder\.projection\.(weight|bias)(_orig|_mask)?$")


def evnn_config_from_state_dict(sd: dict, path: str, projection_activation: str | None = None) -> EGRUConfig:
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
                          projection=projection,
                          projection_activation=projection_activation or DEFAULT_PROJECTION_ACTIVATION)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _load_evnn(sd: dict, path: str, vocab: Vocabulary | None,
               projection_activation: str | None = None) -> EGRULanguageModel:
    config = evnn_config_from_state_dict(sd, path, projection_activation)
    if config.projection and projection_activation is None:
        warnings.warn(f"{path}: EvNN decoder projection read as identity (EvNN >= 0.2.0); "
                      "--projection-activation relu for EvNN's 2023 code", stacklevel=3)
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
