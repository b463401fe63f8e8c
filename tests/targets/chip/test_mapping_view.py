"""Looking at the mapping (issue 24 item 4): mapping.png (red chip boundaries, colour scale from 0) and
mapping.html in a real headless browser (Debian's chromium + chromedriver through selenium): loads with no
JavaScript error and no network request, one element per core carrying mapping.json's core number, and a click
shows that core's figures as mapping.json has them. Decoder cores (magenta) and fan-in split parts (cyan) are
marked in both views; which cores they are is recounted from program.npz (the decoder's output rows' cores, the
split's source-range → core map), not from mapping.json."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import random_lm
from egru_compile.cli import main
from egru_compile.targets.chip import load_program
from egru_compile.targets.chip.profile import PROFILE_DIR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A multi-core model with its decoder on chip, on two chips (RNN cores then decoder cores)."""
    d, _ = random_lm(tmp_path_factory, "view", vocab=60, emb=32, hidden=(300, 32), sparsity=0.8, seed=4,
                     thr=(0.05, 0.3), text="calib.txt", lines=3, words_per_line=9, text_seed=2)
    out = d / "out"
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--target", "loihi-like", "-o", str(out), "--decoder", "chip",
                                    "--calib-data", str(d / "calib.txt")])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "mapping.json").read_text())


@pytest.fixture(scope="module")
def split_artifact(tmp_path_factory):
    """A fan-in split (loihi2-like with 40 input axons a core: every layer's fan-in is over the limit)."""
    d, _ = random_lm(tmp_path_factory, "viewsplit", vocab=60, emb=16, hidden=(48, 16), sparsity=0.8, seed=5,
                     thr=(0.05, 0.3), text=None)
    text = (PROFILE_DIR / "loihi2-like.toml").read_text()
    (d / "split.toml").write_text(text.replace("compartments = 8192 ", "compartments = 24 ")
                                  .replace("input_axons = 8192 ", "input_axons = 40 "))
    out = d / "out"
    res = CliRunner().invoke(main, [str(d / "m.pt"), "--profile", str(d / "split.toml"), "-o", str(out)])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "mapping.json").read_text())


def _pixels(png):
    """(red, magenta, cyan) pixel masks of a rendered PNG: the chip outline and the two role marks (none of
    these colours is in viridis)."""
    import matplotlib.image as mpimg
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return (r > 0.9) & (g < 0.15) & (b < 0.15), (r > 0.85) & (g < 0.2) & (b > 0.85), (r < 0.2) & (g > 0.85) & (b > 0.85)


def _decoder_cores(out) -> set[int]:
    _, cm, dec_core_of = load_program(out / "program.npz", with_decoder=True)
    return {int(c) for c in np.unique(dec_core_of)}


def _split_parts(out) -> set[int]:
    """Cores holding a remote source range (range >= 1) of a split layer, from program.npz's split map."""
    _, cm = load_program(out / "program.npz")
    parts = set()
    for sp in cm.splits or []:
        if sp is not None:
            pc = sp.part_core[:, 1:]
            parts |= {int(c) for c in np.unique(pc[pc >= 0])}
    return parts - _home_cores(cm)


def _home_cores(cm) -> set[int]:
    return {int(c) for sp in (cm.splits or []) if sp is not None for c in np.unique(sp.part_core[:, 0])}


def test_mapping_png(artifact):
    out, m = artifact
    red, magenta, cyan = _pixels(out / "mapping.png")
    assert red.sum() > 200                                  # the chip outline
    n_dec = len(_decoder_cores(out))
    assert n_dec > 0 and magenta.sum() > 40 * n_dec         # every decoder core hatched and outlined in magenta
    assert cyan.sum() == 0                                  # no split here


def test_mapping_png_marks_split_parts(split_artifact):
    out, m = split_artifact
    parts = _split_parts(out)
    assert parts and len(parts) < len(m["cores"])
    red, magenta, cyan = _pixels(out / "mapping.png")
    assert red.sum() > 200 and magenta.sum() == 0           # decoder on the host: nothing magenta
    assert cyan.sum() > 40 * len(parts)


def _page_cores(out) -> list[dict]:
    html = (out / "mapping.html").read_text()
    data = re.search(r'<script type="application/json" id="mapping-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(data.replace("<\\/", "</"))["cores"]


def test_mapping_html_roles(artifact, split_artifact):
    """The page's cores carry their role: exactly the recounted decoder cores / split parts, and a split core
    names its layer and source range."""
    out, _ = artifact
    cores = _page_cores(out)
    assert {c["core"] for c in cores if c["role"] == "decoder"} == _decoder_cores(out)
    assert not any(c["role"] == "split part" for c in cores)
    out, m = split_artifact
    cores = _page_cores(out)
    assert {c["core"] for c in cores if c["role"] == "split part"} == _split_parts(out)
    assert not any(c["role"] == "decoder" for c in cores)
    for c in cores:
        if c["role"] == "split part":
            assert re.fullmatch(r"layer \d+, source range [1-9]\d* of \d+ \(sources \d+-\d+; sends partial sums\)",
                                c["split"]), c["split"]


def test_mapping_png_at_8000_cores(tmp_path):
    """8,000 cores (63 loihi-like chips, the last 100 cores a decoder, 400 split parts) stay drawable: the image
    is bounded, each core cell is several pixels wide, both marks and the chip outlines show."""
    import time

    from egru_compile.targets.chip.mapping_png import mesh_layout, plot_mapping
    from egru_compile.targets.chip.profile import load_profile
    prof = load_profile("loihi-like")
    n, n_dec, cores_per_chip = 8000, 100, prof.chip.cores
    rnn = [{"core": k, "chip": k // cores_per_chip, "slot": k % cores_per_chip, "synops_estimated": float(k % 97)}
           for k in range(n - n_dec)]
    dec = [{"core": k, "slot": k, "outputs": 10, "synops_estimated": 50.0} for k in range(n - n_dec, n)]
    split = {"layers": [{"layer": 0, "source_ranges": [[0, 40], [40, 80]],
                         "cores_of_range": [list(range(0, 400)), list(range(400, 800))]}]}
    m = {"chips": -(-n // cores_per_chip), "cores": rnn, "decoder": {"cores": dec}, "split": split,
         "simulated": None, "totals": {"messages_out": 0.0, "hops_out": 0.0}}
    t0 = time.perf_counter()
    plot_mapping(m, None, prof, tmp_path / "big.png")
    assert time.perf_counter() - t0 < 60
    red, magenta, cyan = _pixels(tmp_path / "big.png")
    import matplotlib.image as mpimg
    h, w = mpimg.imread(tmp_path / "big.png").shape[:2]
    assert w <= 3000 and h <= 3000
    lay = mesh_layout(prof, m["chips"])
    cells_across = lay["per_row"] * (lay["chip_w"] + lay["gap"])
    assert 0.7 * w / cells_across >= 8                      # a core cell is >= 8 px wide on the mesh
    assert red.sum() > 1000 and magenta.sum() > 5 * n_dec and cyan.sum() > 5 * 400


def _all_cores(m):
    return m["cores"] + (m.get("decoder") or {}).get("cores", [])


def test_mapping_html_is_self_contained(artifact):
    out, m = artifact
    html = (out / "mapping.html").read_text()
    # no external resource: no src/href attribute at all, no URL but the SVG namespace
    assert " src=" not in html and " href=" not in html and "@import" not in html
    assert html.replace("http://www.w3.org/2000/svg", "").count("http") == 0


def _driver():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    o = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,800"):
        o.add_argument(a)
    o.binary_location = CHROMIUM
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=o)


def _num(text: str) -> float:
    return float(text.replace(",", "").replace("[A]", "").strip())


def test_mapping_html_in_headless_browser(artifact):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    out, m = artifact
    cores = _all_cores(m)
    assert m["chips"] >= 1 and len(m["decoder"]["cores"]) > 0
    d = _driver()
    try:
        d.get((out / "mapping.html").resolve().as_uri())
        assert d.execute_script("return window.__errors") == []
        severe = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
        # nothing fetched: the page is the only document, no resource entries
        assert d.execute_script("return performance.getEntriesByType('resource').length") == 0
        els = d.find_elements(By.CSS_SELECTOR, "[data-core]")
        assert sorted(int(e.get_attribute("data-core")) for e in els) == sorted(c["core"] for c in cores)
        assert len(els) == len(cores)
        by = {int(e.get_attribute("data-core")): e for e in els}
        dec = _decoder_cores(out)                           # decoder cores drawn as such (magenta outline)
        assert {k for k, e in by.items() if e.get_attribute("data-role") == "decoder"} == dec
        assert all("dec" in by[k].get_attribute("class").split() for k in dec)
        for row in (m["cores"][0], m["cores"][-1], m["decoder"]["cores"][-1]):
            by[row["core"]].click()
            title = d.find_element(By.ID, "core-title").text
            assert title.startswith(f"core {row['core']} ")
            fields = {e.get_attribute("data-field"): e.text for e in d.find_elements(By.CSS_SELECTOR, "#info td.v")}
            for k in ("synapses", "memory_bytes", "input_axons"):
                assert _num(fields[k]) == row[k], k
            assert _num(fields["units"]) == row.get("units", row.get("outputs"))
            assert _num(fields["memory use %"]) == pytest.approx(100 * row["memory_bytes"] / row["memory_limit_bytes"],
                                                                 abs=1e-3)
            sim = m["simulated"]["cores"][row["core"]]
            assert _num(fields["simulated energy_pj"]) == pytest.approx(sim["energy_pj"], rel=1e-3, abs=1)
            assert _num(fields["messages_in"]) == pytest.approx(row["messages_in"], rel=1e-3, abs=1e-3)
            if "layers" in row:
                assert fields["layers"] == ",".join(str(x) for x in row["layers"])
        # colour by energy: fills follow the simulated per-core energy (the largest gets the top colour)
        Select(d.find_element(By.ID, "metric")).select_by_value("energy_pj")
        top = max(m["simulated"]["cores"], key=lambda c: c["energy_pj"])["core"]
        assert by[top].get_attribute("fill") == "rgb(253,231,37)"
        # zoom changes the view box; the page keeps one element per core
        vb = d.find_element(By.ID, "mesh").get_dom_attribute("viewBox")
        d.find_element(By.ID, "zin").click()
        assert d.find_element(By.ID, "mesh").get_dom_attribute("viewBox") != vb
        assert d.execute_script("return window.__errors") == []
    finally:
        d.quit()
