"""Chip reports a researcher can trust (issue 24 item 3): whole-configuration totals with the decoder on chip,
every placement objective x every built-in profile, the uncalibrated bound said first, profile ASSUMPTIONs
marked wherever a figure resting on them is printed, the baseline comparison, one name per quantity."""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import random_lm
from egru_compile.cli import main
from egru_compile.targets.chip.placement import OBJECTIVES
from egru_compile.targets.chip.profile import PROFILE_DIR

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "ptb-egru-small" / "model.pt"
PROFILES = sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """A small model that needs several cores on every built-in profile, and a short calibration text."""
    return random_lm(tmp_path_factory, "chiprep", vocab=60, emb=32, hidden=(400, 300, 32), sparsity=0.8, seed=3,
                     thr=(0.05, 0.3), text="calib.txt", lines=3, words_per_line=9, text_seed=1)[0]


def _compile(src, out, *extra):
    res = CliRunner().invoke(main, [str(src), "-o", str(out), "--force", *extra])
    assert res.exit_code == 0, res.output
    return res.output, json.loads((out / "mapping.json").read_text())


def _artifact(multi, profile, objective, src):
    """The matrix's artifact (compiled here when a test runs alone): the example uncalibrated, the multi-core
    model on its calibration text."""
    out = multi / f"o_{profile}_{objective}_{src.stem}"
    if not (out / "mapping.json").is_file():
        extra = () if src == EXAMPLE else ("--calib-data", str(multi / "calib.txt"))
        _compile(src, out, "--target", profile, "--placement-objective", objective, *extra)
    return out, json.loads((out / "mapping.json").read_text())


@pytest.mark.parametrize("profile", PROFILES)
def test_every_objective_and_profile_compiles(multi, profile):
    """No traceback for any objective on any profile: the bundled example (uncalibrated; a latency placement
    sends no message off its cores on some profiles) and a multi-core model (calibrated)."""
    for objective in OBJECTIVES:
        for src, extra in ((EXAMPLE, ()), (multi / "m.pt", ("--calib-data", str(multi / "calib.txt")))):
            out = multi / f"o_{profile}_{objective}_{src.stem}"
            text, m = _compile(src, out, "--target", profile, "--placement-objective", objective, *extra)
            assert "Traceback" not in text and m["placement_objective"] == objective
            for f in ("mapping.json", "report.txt", "mapping.png", "mapping.html"):
                assert (out / f).stat().st_size > 0, f
            if src != EXAMPLE:
                assert m["totals"]["cores_used"] > 1


def test_decoder_chip_totals_are_the_simulated_whole_configuration(multi):
    out = multi / "dec"
    text, m = _compile(multi / "m.pt", out, "--target", "loihi-like", "--decoder", "chip",
                       "--calib-data", str(multi / "calib.txt"))
    sim, t = m["simulated"], m["totals"]
    dec = m["decoder"]["cores"]
    # recount from the simulator's own per-core counters (every core, RNN and decoder)
    n = len(sim["cores"])
    assert t["cores_used"] == n == len(m["cores"]) + len(dec) and len(dec) > 0
    assert sorted(c["core"] for c in m["cores"] + dec) == list(range(n))
    # simulated synops name the whole (a core's, the configuration's); rnn_synops / decoder_synops are parts
    st = sim["totals"]
    assert st["synops"] == pytest.approx(st["rnn_synops"] + st["decoder_synops"], rel=1e-9)
    assert st["decoder_synops"] > 0
    assert st["decoder_synops"] == pytest.approx(sum(c["decoder_synops"] for c in sim["cores"]), rel=1e-9)
    assert st["rnn_synops"] == pytest.approx(sum(c["synops"] for c in sim["cores"] if c["role"] == "rnn"), rel=1e-9)
    recount = {"synops_estimated": sum(c["synops"] for c in sim["cores"]),
               "messages_out": sum(c["messages_out"] for c in sim["cores"]),
               "messages_in": sum(c["messages_in"] for c in sim["cores"]),
               "hops_out": sum(c["hops_out"] for c in sim["cores"]),
               "energy_pj": sum(c["energy_pj"] for c in sim["cores"])}
    for k, v in recount.items():
        assert t[k] == pytest.approx(v, rel=1e-6), k      # unicast, one chip: estimate = simulation
    # the decoder cores' share is in: the RNN-only subtotal is strictly smaller and labelled as such
    r = m["rnn_totals"]
    assert r["cores_used"] == len(m["cores"]) and "RNN cores only" in r["scope"]
    assert r["energy_pj"] < t["energy_pj"] and r["synops_estimated"] < t["synops_estimated"]
    assert t["memory_bytes"] == sum(c["memory_bytes"] for c in m["cores"] + dec)
    # the estimated phases carry their barrier, as the simulated ones: they add up to the latency
    for tt in (t, r):
        assert sum(tt["layer_phase_ns"]) == pytest.approx(tt["latency_ns"], rel=1e-12)
    st = sim["totals"]
    assert len(t["layer_phase_ns"]) == len(st["layer_phase_ns"]) and sum(st["layer_phase_ns"]) == \
        pytest.approx(st["latency_ns"], rel=1e-12)
    assert json.loads((out / "mapping.json").read_text())["profile"]["source"] == \
        "egru_compile/targets/chip/profiles/loihi-like.toml"                 # no machine path in the artifact
    # headline lines and report.txt say the whole configuration
    report = (out / "report.txt").read_text()
    first = report.splitlines()[0]
    assert f"{n} cores used" in first and f"{n} cores used" in text
    assert f"energy/token {t['energy_pj'] / 1e6:.3f} uJ" in report
    assert f"simulated on the calibration tokens: energy/token {sum(c['energy_pj'] for c in sim['cores']) / 1e6:.3f}" \
        in report
    assert "RNN cores only (subtotal)" in report
    # one synaptic-memory figure per scope: the whole configuration's in the manifest, the RNN cores' labelled
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["synaptic_memory_bytes"] == t["memory_bytes"]
    assert manifest["rnn_synaptic_memory_bytes"] == sum(c["memory_bytes"] for c in m["cores"]) < t["memory_bytes"]
    assert f"RNN cores' synaptic memory (the {len(dec)} decoder cores not included)" in report
    # eval on the calibration text: the same whole configuration
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(multi / "calib.txt"), "--json"])
    assert res.exit_code == 0, res.output
    chip = json.loads(res.output.strip().splitlines()[-1])["chip"]
    assert chip["totals"]["cores_used"] == n
    assert chip["totals"]["decoder_synops"] > 0
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(multi / "calib.txt")])
    assert f"{n} cores" in res.output and "whole configuration" in res.output


def test_uncalibrated_first_line_says_bound(multi):
    text, m = _compile(multi / "m.pt", multi / "uncal", "--target", "loihi-like")
    first = (multi / "uncal" / "report.txt").read_text().splitlines()[0]
    assert "every-unit-fires" in first and "--calib-data" in first
    assert m["calibrated"] is False
    # the bound: every synapse fires once per token (recount from the per-core rows)
    assert m["totals"]["synops_static"] == sum(c["synapses"] for c in m["cores"])
    assert first in text


def _assumed_keys(profile: str) -> set[str]:
    """Independent reading of the profile file: keys whose line or section comment says ASSUMPTION."""
    text = (PROFILE_DIR / f"{profile}.toml").read_text()
    data = tomllib.loads(text)
    keys, section, blanket = set(), None, False
    for line in text.splitlines():
        if line.startswith("["):
            section, blanket = line.strip("[] \n"), False
        elif section and line.lstrip().startswith("#") and "ASSUMPTION" in line:
            blanket = True
        elif section and "=" in line and not line.lstrip().startswith("#"):
            k = line.split("=")[0].strip()
            assert k in data[section]
            if blanket or "ASSUMPTION" in line.split("#", 1)[-1] and "#" in line:
                keys.add(f"{section}.{k}")
    return keys


def test_assumption_flags_everywhere(multi):
    """spinnaker2-like's energy figures are placeholders: marked in report, JSON, eval and inspect; loihi-like's
    per-event energy is sourced: its energy line carries no mark."""
    out, m = _artifact(multi, "spinnaker2-like", "traffic", multi / "m.pt")
    assert set(m["assumptions"]["keys"]) == _assumed_keys("spinnaker2-like")
    assert "energy.synop_pj" in m["assumptions"]["figures"]["energy_pj"]
    report = (out / "report.txt").read_text()
    assert re.search(r"energy/token [\d.]+ uJ \[A\]", report) and "[A] rests on" in report
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(multi / "calib.txt")])
    assert re.search(r"energy/token +[\d.]+ uJ \[A\]", res.output) and "ASSUMPTION" in res.output
    res = CliRunner().invoke(main, ["inspect", str(out), "--core", "0"])
    assert re.search(r"energy_pj +[\d.,]+ \[A\]", res.output) and "ASSUMPTION" in res.output
    html = (out / "mapping.html").read_text()
    assert "ASSUMPTION" in html and "energy.synop_pj" in html
    out, m = _artifact(multi, "loihi-like", "traffic", multi / "m.pt")
    assert set(m["assumptions"]["keys"]) == _assumed_keys("loihi-like")
    assert "energy_pj" not in m["assumptions"]["figures"]
    assert re.search(r"energy/token [\d.]+ uJ,", (out / "report.txt").read_text())


def test_report_compares_with_baseline_and_names_better_objective(multi):
    for objective in OBJECTIVES:
        out, m = _artifact(multi, "loihi-like", objective, EXAMPLE)
        t, b = m["totals"], m["baseline"]["totals"]
        report = (out / "report.txt").read_text()
        assert "vs sequential baseline" in report
        worse_lat = t["latency_ns"] > b["latency_ns"] * 1.005
        worse_hops = t["hops_out"] > b["hops_out"] * 1.005 + 1e-9
        assert ("WARNING" in report) == (worse_lat or worse_hops)
        if worse_lat and objective != "latency":
            assert "--placement-objective latency" in report
        if worse_hops and objective != "traffic":
            assert "--placement-objective traffic" in report


def test_zero_hops_sentence_says_why(multi):
    """0 hops with messages between cores (cores sharing a tile) must not read 'no message leaves a core'; that
    sentence is kept for a configuration whose cores send nothing to each other (recounted from mapping.json's
    per-core messages)."""
    seen = set()
    for objective in OBJECTIVES:
        for src in (EXAMPLE, multi / "m.pt"):
            out, m = _artifact(multi, "loihi-like", objective, src)
            report = (out / "report.txt").read_text()
            sent = sum(c["messages_out"] for c in m["cores"])
            hops = sum(c["hops_out"] for c in m["cores"])
            if hops == 0 and sent > 0:
                seen.add("tile")
                assert "no message leaves a core" not in report and "sender's own tile" in report
            if sent == 0:
                seen.add("none")
                assert "no message leaves a core" in report
    assert "tile" in seen            # the example on loihi-like: 2 cores on one tile


def test_one_name_per_quantity(multi):
    """Estimated rows use the simulator's names (synops, messages, hops); 'spikes' means unit firings only."""
    out, m = _artifact(multi, "loihi-like", "traffic", multi / "m.pt")
    for row in m["cores"]:
        assert not {k for k in row if k.startswith("mac") or k.startswith("spike")}, row.keys()
        assert {"synops_estimated", "messages_in", "messages_out", "hops_out"} <= set(row)
    texts = [(out / "report.txt").read_text(),
             CliRunner().invoke(main, ["inspect", str(out), "--core", "0"]).output]
    for text in texts:
        assert "spike-hops" not in text and "macs_estimated" not in text and "spikes_in" not in text
    # simulated spikes_out = unit firings: never more than the messages they cause (unicast, >= 1 destination)
    s = m["simulated"]["totals"]
    assert 0 < s["spikes_out"] <= s["messages_out"]
    # one name per quantity: the simulated totals use the estimate's names
    assert {"messages_out", "hops_out", "cores_used", "layer_phase_ns"} <= set(s) <= set(s) | set(m["totals"])
    assert not {"messages", "hops", "cores", "phase_ns"} & set(s)


def test_phase_model_estimate_is_reported_beside_the_serial_one(multi):
    """mapping.json totals carry the phase-model latency estimate; on the calibration text it lies within 10 %
    of the simulator's latency (independent: the event-driven run), and the report prints it in the
    estimated-vs-simulated table; decoder-on-chip totals leave it to the RNN subtotal."""
    for objective in OBJECTIVES:
        out, m = _artifact(multi, "loihi-like", objective, multi / "m.pt")
        t, st = m["totals"], m["simulated"]["totals"]
        assert t["latency_phase_model_ns"] == pytest.approx(st["latency_ns"], rel=0.10), objective
        assert re.search(r"phase model \(us\)\s+" + re.escape(f"{t['latency_phase_model_ns'] / 1e3:,.2f}"),
                         (out / "report.txt").read_text())
    m = json.loads((multi / "dec" / "mapping.json").read_text()) if (multi / "dec").is_dir() else None
    if m is not None:
        assert m["totals"]["latency_phase_model_ns"] is None and m["rnn_totals"]["latency_phase_model_ns"] > 0


def test_multicast_packets_are_not_called_messages(multi):
    """A multicast packet reaches several cores: a *message* stays one delivery to one core. The report sets
    the estimated messages beside the simulated deliveries (recounted from the simulator's per-core
    messages_in) and the packets on a row of their own; eval calls the packets packets."""
    out, m = _artifact(multi, "spinnaker2-like", "traffic", multi / "m.pt")
    s = m["simulated"]
    assert s["router"] == "multicast"
    deliveries = sum(c["messages_in"] for c in s["cores"])
    packets = sum(c["messages_out"] for c in s["cores"])
    assert packets < deliveries                          # the point of multicast on this model
    report = (out / "report.txt").read_text()
    row = re.search(r"messages \(deliveries\)\s+([\d,.]+)\s+([\d,.]+)", report)
    assert row and float(row.group(2).replace(",", "")) == pytest.approx(deliveries, abs=0.06)
    assert float(row.group(1).replace(",", "")) == pytest.approx(m["totals"]["messages_out"], abs=0.06)
    assert re.search(r"packets \(multicast\)\s+-\s+" + re.escape(f"{packets:,.1f}"), report)
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(multi / "calib.txt"), "--json"])
    ev = json.loads(res.output.strip().splitlines()[-1])["chip"]
    ev_packets = sum(c["messages_out"] for c in ev["cores"])
    ev_deliveries = sum(c["messages_in"] for c in ev["cores"])
    res = CliRunner().invoke(main, ["eval", str(out), "--data", str(multi / "calib.txt")])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("packets"))
    assert f"{ev_packets:,.1f}/token" in line and f"{ev_deliveries:,.1f} messages/token at their destination" in line
    assert not any(ln.startswith("messages") for ln in res.output.splitlines())


def test_old_mapping_json_is_refused_in_one_line(multi, tmp_path):
    import shutil
    src, _ = _artifact(multi, "loihi-like", "traffic", multi / "m.pt")
    out = tmp_path / "old"
    shutil.copytree(src, out)
    m = json.loads((out / "mapping.json").read_text())
    m["version"] = 1
    (out / "mapping.json").write_text(json.dumps(m))
    # as an older egru-compile signed it: the manifest's checksums match the files
    from egru_compile.artifact import _manifest_digest, file_sha256
    mf = json.loads((out / "manifest.json").read_text())
    mf["files"]["mapping.json"].update(size=(out / "mapping.json").stat().st_size,
                                       sha256=file_sha256(out / "mapping.json"))
    mf["manifest_sha256"] = _manifest_digest(mf)
    (out / "manifest.json").write_text(json.dumps(mf))
    for extra in ((), ("--core", "0")):
        res = CliRunner().invoke(main, ["inspect", str(out), *extra])
        assert res.exit_code != 0 and "Traceback" not in res.output
        assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1
        assert "compile the model again" in res.output
