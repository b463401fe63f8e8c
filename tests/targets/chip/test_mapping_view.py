"""Looking at the mapping (issue 24 item 4): mapping.png (red chip boundaries, colour scale from 0) and
mapping.html in a real headless browser (Debian's chromium + chromedriver through selenium): loads with no
JavaScript error and no network request, one element per core carrying mapping.json's core number, and a click
shows that core's figures as mapping.json has them."""
from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import random_lm
from egru_compile.cli import main

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


def test_mapping_png(artifact):
    import matplotlib.image as mpimg
    out, m = artifact
    img = mpimg.imread(out / "mapping.png")
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.15) & (img[..., 2] < 0.15)
    assert red.sum() > 200                                  # the chip outline


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
