"""`egru-compile inspect DIR`: describe a compiled artifact from the files its target wrote."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import EgruError


def describe_artifact(path: Path, manifest: dict, core: int | None = None) -> str:
    target = manifest.get("target", "?")
    lines = [f"artifact      {path}", f"target        {target}"]
    for key in ("source_sha256", "hidden_sizes", "vocab_size", "vocab"):
        if manifest.get(key) is not None:
            lines.append(f"{key:<13} {manifest[key]}")
    text = "\n".join(lines) + "\n"
    mapping = path / "mapping.json"
    if mapping.is_file():
        from .chip.report import core_detail, text_report
        try:
            m = json.loads(mapping.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EgruError(f"{mapping} is unreadable: {e}") from None
        if core is not None:
            return text + core_detail(m, core)
        return text + text_report(m)
    if core is not None:
        raise EgruError(f"--core applies to chip targets; {path} is a {target} artifact")
    report = path / "report.txt"
    if report.is_file():
        text += report.read_text()
    return text
