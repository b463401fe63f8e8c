"""Compilation targets. Each target is a function ``compile(graph, source, out_dir, options) -> dict`` in
its own subpackage; it writes into `out_dir` (a fresh temporary directory the CLI renames into place)."""
from __future__ import annotations

import importlib

from ..artifact import seal
from ..errors import EgruError

#: target name -> "module:function" of its compile entry point.
TARGETS = {
    "onnx": "egru_compile.targets.onnx:compile_onnx",
    "tvm": "egru_compile.targets.tvm:compile_tvm",
    "loihi-like": "egru_compile.targets.chip:compile_loihi_like",
    "spinnaker2-like": "egru_compile.targets.chip:compile_spinnaker2_like",
}


class TargetError(EgruError):
    pass


def get_target(name: str):
    """The compile function of target `name` — ``fn(graph, source, out_dir, options) -> dict`` — which seals
    the artifact (`artifact.seal`) after the target wrote it; TargetError if unknown."""
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r} (known: {', '.join(TARGETS)})")
    mod_name, fn_name = TARGETS[name].split(":")
    compile_fn = getattr(importlib.import_module(mod_name), fn_name)

    def compile_and_seal(graph, source, out_dir, options):
        result = compile_fn(graph, source, out_dir, options)
        seal(out_dir)
        return result
    return compile_and_seal
