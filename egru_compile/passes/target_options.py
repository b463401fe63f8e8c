"""How a target-specific pass reads its target's options.

A target that needs passes of its own (the ONNX target: ``select-gating``, ``fold-embedding``,
``weight-precision``) runs them with a `PassOptions` that carries a ``target_options`` mapping (the target's
options by field name, e.g. ``OnnxOptions.to_dict()``). Run by name without one (``--passes``,
`PassManager`), such a pass uses its defaults.
"""
from __future__ import annotations

from collections.abc import Mapping


def target_option(options, key: str, default):
    """``options.target_options[key]`` when present and not None, else `default`."""
    opts = getattr(options, "target_options", None)
    if isinstance(opts, Mapping):
        value = opts.get(key)
    else:
        value = getattr(opts, key, None) if opts is not None else None
    return default if value is None else value
