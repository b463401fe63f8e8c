"""`egru-compile inspect DIR`: describe a compiled artifact from the files its target wrote (chip targets:
``--core N`` one core's units, input axons and destinations; ``--links`` the busiest mesh links)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import EgruError


def describe_artifact(path: Path, manifest: dict, core: int | None = None, links: bool = False) -> str:
    target = manifest.get("target", "?")
    lines = [f"artifact      {path}", f"target        {target}"]
    for key in ("source_sha256", "hidden_sizes", "vocab_size", "vocab", "decoder", "router", "projection"):
        if manifest.get(key) is not None:
            lines.append(f"{key:<13} {manifest[key]}")
    text = "\n".join(lines) + "\n"
    mapping = path / "mapping.json"
    if mapping.is_file():
        from .chip.inspect_view import core_detail, links_detail
        from .chip.report import text_report
        try:
            m = json.loads(mapping.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EgruError(f"{mapping} is unreadable: {e}") from None
        if core is not None or links:
            if core is not None:
                program = None
                prog = path / manifest.get("program", "program.npz")
                if prog.is_file():
                    from .chip import load_program
                    try:
                        program = load_program(prog, with_decoder=True)
                    except (OSError, ValueError, KeyError) as e:
                        raise EgruError(f"{prog} is unreadable: {e}") from None
                text += core_detail(m, core, program)
            if links:
                text += links_detail(m)
            return text
        return text + text_report(m)
    if core is not None or links:
        raise EgruError(f"--core/--links apply to chip targets; {path} is a {target} artifact")
    report = path / "report.txt"
    if report.is_file():
        text += report.read_text()
    return text
