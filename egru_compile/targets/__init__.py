"""Compilation targets. Each target is a `registry.TargetSpec` (name, options, compile entry point, runner);
`get_target(name)` gives the function ``compile(graph, source, out_dir, options) -> dict`` that writes the
artifact into `out_dir` (a fresh temporary directory the CLI renames into place) and seals it."""
from __future__ import annotations

from .registry import TargetError, TargetSpec, all_targets, get, register_target, target_names

__all__ = ["TargetError", "TargetSpec", "all_targets", "get", "get_target", "register_target", "target_names"]


def get_target(name: str):
    """The compile-and-seal function of target `name`; TargetError if unknown."""
    return get(name).compile_artifact
