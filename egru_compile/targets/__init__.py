"""Compilation targets. Each target is a function ``compile(graph, source, out_dir, options) -> dict`` in
its own subpackage; it writes into `out_dir` (a fresh temporary directory the CLI renames into place)."""
from __future__ import annotations

import importlib

from ..errors import EgruError

#: target name -> "module:function" of its compile entry point.
TARGETS = {
    "onnx": "egru_compile.targets.onnx:compile_onnx",
    "tvm": "egru_compile.targets.tvm:compile_tvm",
    "loihi-like": "egru_compile.targets.chip:compile_loihi_like",
    "spinnaker2-like": "egru_compile.targets.chip:compile_spinnaker2_like",
    "loihi2-like": "egru_compile.targets.chip:compile_loihi2_like",
}


class TargetError(EgruError):
    pass


def get_target(name: str):
    """The compile function of target `name`; TargetError if unknown."""
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
    mod_name, fn_name = TARGETS[name].split(":")
    return getattr(importlib.import_module(mod_name), fn_name)
