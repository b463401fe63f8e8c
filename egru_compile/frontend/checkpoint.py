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
  only) are ignored. Vocabulary from ``--vocab``. The projection's activation is not in the state_dict:
  ``projection_activation`` ("identity", EvNN >= 0.2.0 and the default, or "relu", EvNN's 2023 code).
* **torch.export program** (``.pt2``) of an EGRU step (see `trace.export_step` for the signature).

``torch.load`` always runs with ``weights_only=True``; a pickled module is refused unless ``trust=True``.

The pieces: `source_model` (`SourceModel`, the errors), `state_dict_model` (the weight checks and the
model built from a state_dict), `evnn_state_dict` (the EvNN reader); this module saves project checkpoints
and detects and loads every source (`load_source`). Their public names are re-exported here.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import torch

from ..artifact import file_sha256
from ..data import Vocabulary
from ..fsio import atomic_write
from ..model import PROJECTION_ACTIVATIONS, EGRUConfig, EGRULanguageModel
from .evnn_state_dict import _EVNN_LAYER, _load_evnn, evnn_config_from_state_dict  # noqa: F401
from .source_model import BaselineCheckpointError, CheckpointError, SourceModel  # noqa: F401
from .state_dict_model import (  # noqa: F401
    _build, _check_config_dict, _check_finite, check_preactivation_range, validate_state_dict,
)

FORMAT_TAG = "egru-compile/checkpoint"
FORMAT_VERSION = 1


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


def _not_a_checkpoint(path: str) -> str | None:
    """What `path` looks like when its first bytes are neither a zip (torch.save's format) nor a pickle stream
    (the legacy format starts with protocol byte 0x80): "an ONNX model", "JSON", "text" or "binary data";
    None for a file torch.load may read."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return None
    if path.lower().endswith(".onnx") or (head[:1] == b"\x08" and b"\x12" in head[:8]):
        return "an ONNX model"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "JSON"
    try:
        head.decode("utf-8")
        return "text" if head else "empty"
    except UnicodeDecodeError:
        return "binary data"


def _torch_load(path: str, trust: bool):
    kind = _not_a_checkpoint(path)
    if kind is not None:
        hint = (f"; an artifact is its folder ({os.path.dirname(path) or '.'})" if kind == "an ONNX model" else
                "; a model is a .pt checkpoint or EvNN state_dict, a .pt2 export or an IR text")
        raise CheckpointError(f"{path} is {kind}, not a PyTorch checkpoint, torch.export program or IR file{hint}")
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



def _no_activation_for(path: str, what: str, value: str | None) -> None:
    if value is not None:
        raise CheckpointError(f"{path} is {what}, whose decoder is part of its graph: --projection-activation "
                              "applies to state_dicts only")

def check_projection_activation(value: str | None) -> str | None:
    if value is not None and value not in PROJECTION_ACTIVATIONS:
        raise CheckpointError(f"projection activation must be one of {', '.join(PROJECTION_ACTIVATIONS)}, "
                              f"got {value!r}")
    return value


def _set_projection_activation(model: EGRULanguageModel, value: str | None, path: str) -> None:
    """Apply an explicit ``projection_activation`` to a model whose config recorded one (a project checkpoint,
    a pickled module); a value that differs from the recorded one is said in one warning."""
    if value is None or not model.config.projection or value == model.config.projection_activation:
        return
    warnings.warn(f"{path}: projection activation {value} (the checkpoint records "
                  f"{model.config.projection_activation})", stacklevel=3)
    model.config.projection_activation = value
    model.decoder.projection_activation = value


def load_source(path: str | Path, trust: bool = False, vocab_file: str | Path | None = None,
                projection_activation: str | None = None) -> SourceModel:
    """Load any supported source; raises CheckpointError with a one-line reason (also for a
    `projection_activation` given for a model without a decoder projection). See `_load_source`."""
    source = _load_source(path, trust, vocab_file, projection_activation)
    if projection_activation is not None and getattr(source, "projection_activation", None) is None:
        raise CheckpointError(f"{path}: --projection-activation {projection_activation}: this model has no "
                              "decoder projection")
    return source


def _load_source(path: str | Path, trust: bool = False, vocab_file: str | Path | None = None,
                 projection_activation: str | None = None) -> SourceModel:
    """Load any supported source; raises CheckpointError with a one-line reason.

    `projection_activation` ("identity" | "relu" | None): the activation of EvNN's decoder projection, which
    a state_dict does not record (None: identity for an EvNN state_dict, the recorded one for a project
    checkpoint). An IR file or exported program states its decoder itself, so a value is refused there."""
    path = str(path)
    check_projection_activation(projection_activation)
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no such file or directory")       # the words of every loader
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: not a file")
    from .ir_source import is_ir_file, load_ir_source
    if is_ir_file(path):                    # IR text (`egru-compile --emit-ir`)
        _no_activation_for(path, "an IR file", projection_activation)
        return load_ir_source(path, vocab_file)
    sha = file_sha256(path)
    vocab = Vocabulary.from_train_file(vocab_file) if vocab_file else None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            _no_activation_for(path, "a torch.export program", projection_activation)
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
        _set_projection_activation(obj, projection_activation, path)
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
        _set_projection_activation(model, projection_activation, path)
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
        return SourceModel("evnn-state-dict", path, sha, model=_load_evnn(sd, path, vocab, projection_activation),
                           vocab=vocab)
    raise CheckpointError(f"{path}: not an egru-compile checkpoint, EvNN state_dict or exported program")
