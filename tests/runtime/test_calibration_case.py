"""`--calib-data` folds case like `eval` and `generate` do: a capitalised calibration text of an all-lower-case
vocabulary (PTB's) calibrates exactly as its lower-cased copy, folded here with str.lower()."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from egru_compile.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ptb-egru-small" / "model.pt"


def test_calibration_text_is_case_folded(tmp_path):
    text = "The company said it would sell The shares\nPrices rose in New York trading\n" * 5
    (tmp_path / "upper.txt").write_text(text)
    (tmp_path / "lower.txt").write_text(text.lower())
    reports = []
    for name in ("upper", "lower"):
        res = CliRunner().invoke(main, [str(EXAMPLE), "--calib-data", str(tmp_path / f"{name}.txt"),
                                        "--passes", "default", "--report", str(tmp_path / f"{name}.json")])
        assert res.exit_code == 0, res.output
        reports.append(json.loads((tmp_path / f"{name}.json").read_text()))
    assert reports[0]["macs_per_token"] == reports[1]["macs_per_token"]
    assert reports[0]["macs_per_token"]["dynamic"] > 0
