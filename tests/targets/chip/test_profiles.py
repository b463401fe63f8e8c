"""Chip profiles: every shipped profile is valid and compiles; a hostile or careless profile (nan, inf,
negative, wrong type, bool for int, missing or unknown section/key) is refused by the CLI with one `error:`
line naming the file and the key, exit != 0, no traceback and no output directory (issue 12, class 4)."""
from __future__ import annotations

import json
import math
import tomllib

import pytest
from click.testing import CliRunner

from conftest import random_lm
from egru_compile.cli import main
from egru_compile.targets.chip.profile import PROFILE_DIR, load_profile

SHIPPED = sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return random_lm(tmp_path_factory, "profiles", vocab=30, emb=8, hidden=(24, 8), sparsity=0.5, seed=3,
                     thr=(0.05, 0.3), text="calib.txt", lines=6, words_per_line=12, text_seed=1)[0]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    return str(v)


def dump_toml(data: dict) -> str:
    """Independent writer for the flat profile layout (top-level values, then one level of sections)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, sec in data.items():
        if isinstance(sec, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in sec.items()]
    return "\n".join(lines) + "\n"


def _base() -> dict:
    return tomllib.loads((PROFILE_DIR / "loihi-like.toml").read_text())


def _compile(d, profile_file, out, target=None):
    """Compile with --profile FILE (the documented form: the profile names the chip), --target too if given."""
    args = [str(d / "m.pt"), "-o", str(out), "--profile", str(profile_file), "--calib-data", str(d / "calib.txt")]
    return CliRunner().invoke(main, args + (["--target", target] if target else []))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_are_valid(name):
    p = load_profile(name)
    assert p.name == name
    for sec in (p.chip, p.core, p.memory, p.energy, p.spikes):
        for k, v in vars(sec).items():
            if k == "multicast":                         # the one flag of the schema
                assert isinstance(v, bool)
                continue
            assert not isinstance(v, bool) and math.isfinite(v) and v >= 0, (name, k, v)
    assert p.chip.tiles_x * p.chip.tiles_y * p.chip.cores_per_tile >= p.chip.cores
    assert p.units_per_core >= 1


def test_rewritten_profile_compiles(tiny, tmp_path):
    """The writer used below reproduces a valid profile: errors in the other tests come from the one bad key."""
    f = tmp_path / "same.toml"
    f.write_text(dump_toml(_base()))
    res = _compile(tiny, f, tmp_path / "o")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "mapping.json").read_text())
    assert m["profile"]["energy"] == _base()["energy"]


NAN, INF = float("nan"), float("inf")
BAD = [  # (section, key, value, words the message must contain)
    ("energy", "synop_pj", NAN, "finite"),
    ("energy", "barrier_ns", INF, "finite"),
    ("chip", "chip_hop_ns", -INF, "finite"),
    ("energy", "hop_ew_pj", -3.0, ">= 0"),
    ("energy", "neuron_active_ns", -1, ">= 0"),
    ("energy", "synop_pj", 1e300, "<= "),
    ("energy", "synop_pj", "23.6", "number"),
    ("energy", "spike_tile_pj", True, "number"),
    ("core", "compartments", "1024", "integer"),
    ("core", "input_axons", True, "integer"),
    ("core", "compartments", 1024.0, "integer"),
    ("core", "synapse_memory_bytes", -1, "positive"),
    ("core", "output_axons", 0, "positive"),
    ("core", "compartments_per_unit", 0, "positive"),
    ("chip", "tiles_x", 0, "positive"),
    ("chip", "cores", 10 ** 12, "<= "),
    ("memory", "weight_bits", 99, "<= 32"),
    ("memory", "weight_bits", 0, "positive"),
    ("memory", "index_bits", 65, "<= 64"),
    ("memory", "state_bits_per_unit", -8, ">= 0"),
    ("spikes", "payload_bits", -1, ">= 0"),
]


def _one_error_line(res, must: list[str], out, parent):
    assert res.exit_code not in (0, None), res.output
    assert isinstance(res.exception, SystemExit), repr(res.exception)     # no other exception escaped
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: chip profile "), res.output
    assert "Traceback" not in res.output
    for w in must:
        assert w in lines[0], (w, lines[0])
    assert not out.exists()
    assert sorted(p.name for p in parent.iterdir()) == ["bad.toml"]      # no temp dir left behind


@pytest.mark.parametrize("section,key,value,words", BAD, ids=[f"{s}.{k}={v!r}" for s, k, v, _ in BAD])
def test_bad_value_is_one_line_error_naming_key(tiny, tmp_path, section, key, value, words):
    data = _base()
    data.setdefault(section, {})[key] = value
    f = tmp_path / "bad.toml"
    f.write_text(dump_toml(data))
    res = _compile(tiny, f, tmp_path / "o")
    _one_error_line(res, ["bad.toml", f"[{section}] {key}", words], tmp_path / "o", tmp_path)


def _edited(edit):
    data = _base()
    edit(data)
    return data


STRUCTURE = [  # (id, edit, words)
    ("missing section", lambda d: d.pop("energy"), ["[energy]", "missing"]),
    ("missing key", lambda d: d["energy"].pop("synop_ns"), ["[energy]", "synop_ns"]),
    ("unknown key", lambda d: d["energy"].update(synop_uj=1.0), ["[energy]", "'synop_uj'", "unknown"]),
    ("unknown section", lambda d: d.update(energies={"x": 1}), ["'energies'", "unknown"]),
    ("unknown top-level key", lambda d: d.update(colour="blue"), ["'colour'", "unknown"]),
    ("section as value", lambda d: d.update(memory=3), ["memory", "section"]),
    ("name not a string", lambda d: d.update(name=7), ["name", "string"]),
    ("mesh too small", lambda d: d["chip"].update(tiles_x=2), ["[chip] cores", "tiles"]),
    ("unit does not fit a core", lambda d: d["core"].update(compartments=2), ["[core] compartments"]),
]


@pytest.mark.parametrize("edit,words", [s[1:] for s in STRUCTURE], ids=[s[0] for s in STRUCTURE])
def test_bad_structure_is_one_line_error(tiny, tmp_path, edit, words):
    f = tmp_path / "bad.toml"
    f.write_text(dump_toml(_edited(edit)))
    res = _compile(tiny, f, tmp_path / "o")
    _one_error_line(res, ["bad.toml", *words], tmp_path / "o", tmp_path)


def test_malformed_toml_is_one_line_error(tiny, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[energy\nsynop_pj = \n")
    res = _compile(tiny, f, tmp_path / "o")
    _one_error_line(res, ["bad.toml", "malformed TOML"], tmp_path / "o", tmp_path)


def _eval_json(path, data):
    res = CliRunner().invoke(main, ["eval", str(path), "--data", str(data), "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def test_loihi2_like_compiles_and_evaluates_like_pytorch(tiny, tmp_path):
    """The graded-spike profile compiles as a target of its own; its simulated artifact (float weights) gives
    PyTorch's perplexity and activity on the same text."""
    out = tmp_path / "l2"
    res = CliRunner().invoke(main, [str(tiny / "m.pt"), "--target", "loihi2-like", "-o", str(out),
                                    "--calib-data", str(tiny / "calib.txt"), "--float-weights"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "mapping.json").read_text())
    assert m["profile"]["name"] == "loihi2-like" and m["profile"]["spikes"]["payload_bits"] == 32
    assert m["profile"]["chip"]["cores"] == 128 and m["chips"] == 1
    assert json.loads((out / "manifest.json").read_text())["target"] == "loihi2-like"
    chip, ref = _eval_json(out, tiny / "calib.txt"), _eval_json(tiny / "m.pt", tiny / "calib.txt")
    assert chip["target"] == "loihi2-like" and ref["target"] == "torch"
    assert chip["perplexity"] == pytest.approx(ref["perplexity"], rel=1e-6)
    assert chip["activity"] == pytest.approx(ref["activity"], abs=1e-12)


def test_user_profile_with_own_name_evaluates(tiny, tmp_path):
    """A user profile with its own name compiles as a target of that name and its artifact opens; naming a
    different chip with --target as well is refused in one line (the artifact would name two chips)."""
    data = _base()
    data["name"] = "my-chip"
    f = tmp_path / "mine.toml"
    f.write_text(dump_toml(data))
    res = _compile(tiny, f, tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "mapping.json").read_text())["profile"]["name"] == "my-chip"
    r = _eval_json(tmp_path / "o", tiny / "calib.txt")
    assert r["target"] == "my-chip" and r["tokens"] > 0
    res = _compile(tiny, f, tmp_path / "o2", target="loihi-like")
    assert res.exit_code != 0 and not (tmp_path / "o2").exists()
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "--target loihi-like and --profile" in lines[0] and "my-chip" in lines[0], lines
    data["name"] = "loihi-like"                 # a copy of the target's own profile, edited: accepted
    f.write_text(dump_toml(data))
    assert _compile(tiny, f, tmp_path / "o3", target="loihi-like").exit_code == 0
