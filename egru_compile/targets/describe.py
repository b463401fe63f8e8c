"""`egru-compile inspect DIR`: describe a compiled artifact from the files its target wrote (chip targets:
``--core N`` one core's units, input axons and destinations; ``--links`` the busiest mesh links)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import EgruError, UsageError, option


def describe_artifact(path: Path, manifest: dict, core: int | None = None, links: bool = False) -> str:
    target = manifest.get("target", "?")
    lines = [f"artifact      {path}", f"target        {target}"]
    for key in ("source_sha256", "hidden_sizes", "vocab_size", "vocab", "decoder", "router"):
        if manifest.get(key) is not None:
            lines.append(f"{key:<13} {manifest[key]}")
    report = path / "report.txt"
    if manifest.get("projection_activation") and not (
            report.is_file() and re.search(r"^projection {4}", report.read_text(), re.M)):   # said once
        from ..model import projection_line
        lines.append(f"{'projection':<13} {projection_line(manifest['projection_activation'])}")
    text = "\n".join(lines) + "\n"
    mapping = path / "mapping.json"
    if mapping.is_file():
        try:
            m = json.loads(mapping.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise EgruError(f"{mapping} is unreadable: {e}") from None
        if not isinstance(m, dict):
            raise EgruError(f"{mapping} is not a JSON object")
        try:
            return text + _describe_mapping(path, manifest, m, core, links)
        except (TypeError, KeyError, ValueError, IndexError, AttributeError, ZeroDivisionError, OverflowError) as e:
            # a resealed mapping.json with fields of the wrong type or range (a report, not a program)
            raise EgruError(f"{mapping} is malformed ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})") from None
    if core is not None or links:
        raise UsageError(f"{option('core')}/{option('links')} apply to chip targets; {path} is "
                        f"{'an' if str(target)[:1].lower() in 'aeio' else 'a'} {target} artifact")
    report = path / "report.txt"
    if report.is_file():
        body = report.read_text()
        if _MATRIX_SHAPE.search(body):     # say which way round the weight shapes of the report are
            from ..ir.sparse import SHAPE_CONVENTION
            text += f"shapes        {SHAPE_CONVENTION}\n"
        text += body
    return text


#: a weight shape as the views print it (``768x128``; `ir.sparse.fmt_matrix_shape`)
_MATRIX_SHAPE = re.compile(r"(?<![\w.])\d+x\d+(?![\w.])")


def _describe_mapping(path: Path, manifest: dict, m: dict, core: int | None, links: bool) -> str:
    """The chip part of ``inspect`` from mapping.json `m` (``--core`` adds program.npz's details)."""
    from .chip.inspect_view import core_detail, links_detail
    from .chip.report import text_report
    if core is None and not links:
        return text_report(m)
    text = ""
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
