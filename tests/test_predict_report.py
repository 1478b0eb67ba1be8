"""report.html's slice viewer and OUT/index.html, opened in headless Chromium through selenium.

One small phantom scan is predicted once (with a stand-in model whose "infection" is dark-ish
blobs in the lungs, so that the masks, the positive runs and Grad-CAM are not empty) and one
missing input fails; the browser tests drive its report and the batch's index like a user and
keep a screenshot each under their pytest output folder. They skip with the reason when selenium,
chromium or chromedriver are missing (CI installs ``chromium chromium-driver``, .ci/run).
docs/img/viewer.png is the screenshot viewer-overlays.png of
test_overlay_and_gradcam_toggles_change_the_pixels (made smaller: 256 colours).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lungmtl.data.phantom import make_phantom_volume
from lungmtl.data.preprocess import PreprocessConfig
from lungmtl.models import MultiTaskOutput
from lungmtl.predict import PredictOptions, Predictor, predict

N_SLICES, SIZE = 16, 160
MARGIN_L, MARGIN_R = 46, 58  # the plot's margins in viewer.js


class LesionMap(nn.Module):
    """Pixels of ground-glass brightness (-720..-230 HU in the model's window) in dark
    surroundings: the phantom's lesions, and some lung borders."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))  # Grad-CAM needs a parameter (its device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        band = torch.sigmoid(40 * (x - 0.2)) * torch.sigmoid(40 * (0.55 - x))
        return self.gain * band * torch.sigmoid(30 * (0.32 - F.avg_pool2d(x, 7, 1, 3)))


class StandIn(nn.Module):
    """Segments the lesion map; "infected" when it covers more than 1.15 % of the slice."""

    def __init__(self) -> None:
        super().__init__()
        self.lesions = LesionMap()
        self.explain_layer = self.lesions  # what Grad-CAM explains

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        m = self.lesions(x)
        score = 2000 * (m.mean(dim=(1, 2, 3)) - 0.0115)
        return MultiTaskOutput(20 * (m - 0.5), torch.stack([-score, score], dim=1))


@pytest.fixture(scope="module")
def predicted(tmp_path_factory) -> Path:
    """OUT of a batch: ``scan`` (a phantom with geometry) and ``missing`` (failed)."""
    root = tmp_path_factory.mktemp("viewer")
    hu = make_phantom_volume(3, N_SLICES, SIZE).hu  # canonical (z, rows, cols)
    stored = np.ascontiguousarray(np.transpose(hu, (2, 1, 0))[::-1, ::-1])  # (x: R->L... , z)
    affine = np.diag([-1.4, -1.4, 5.0, 1.0])
    affine[:3, 3] = [110.0, 110.0, -40.0]
    nib.save(nib.Nifti1Image(stored, affine), root / "scan.nii.gz")
    predictor = Predictor(StandIn(), PreprocessConfig(size=96), torch.device("cpu"), "stand-in")
    opts = PredictOptions(device="cpu", gradcam=2)
    results = predict(
        "unused", [root / "scan.nii.gz", root / "missing.nii.gz"], root / "out", opts,
        predictor=predictor,
    )  # fmt: skip
    assert [r.ok for r in results] == [True, False], [r.line() for r in results]
    return root / "out"


def _case(out: Path) -> tuple[dict, pd.DataFrame]:
    summary = json.loads((out / "scan" / "summary.json").read_text())
    return summary, pd.read_csv(out / "scan" / "slices.csv")


# ---------------------------------------------------------------- no browser


def test_report_and_index_fetch_nothing(predicted):
    for page in (predicted / "scan" / "report.html", predicted / "index.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text, page
        # every src/href is a data: URL, a fragment or a relative link, never another host
        for attr in re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", text, re.I):
            assert not re.match(r"(?:[a-z][a-z0-9+.-]*:)?//", attr, re.I), (page, attr)
            assert attr.startswith(("data:", "#")) or "://" not in attr, (page, attr)
        assert not re.search(r"<script\b[^>]*\bsrc\s*=", text, re.I), page  # inline only
        assert not re.search(r"<link\b|@import|url\(", text, re.I), page
        assert not re.search(r"\b(?:fetch|XMLHttpRequest|WebSocket|importScripts)\b", text)
    report = (predicted / "scan" / "report.html").read_text()
    assert report.count("data:image/jpeg;base64,") >= N_SLICES  # every slice, lung window


# ---------------------------------------------------------------- in the browser


def _browser_paths() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium not installed (pip install selenium)")
    chromium = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="lungmtl-chromium-")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, page: Path, fragment: str = "") -> None:
    driver.get("about:blank")  # a fresh page, even where only the #fragment differs
    driver.get_log("browser")  # start with an empty log (entries of earlier pages)
    driver.get(page.as_uri() + fragment)
    if page.name == "report.html":
        _wait(driver, lambda d: d.find_element("id", "view").get_attribute("data-slice"))


def _wait(driver, condition, timeout: float = 5.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)


def _shown(driver, k: int) -> None:
    """Wait until slice k is drawn, then check the caption names it."""
    _wait(driver, lambda d: d.find_element("id", "view").get_attribute("data-slice") == str(k))
    caption = driver.find_element("id", "caption").text
    assert caption.startswith(f"slice z={k} of 0"), caption


def _current(driver) -> int:
    return int(driver.find_element("id", "view").get_attribute("data-slice"))


def _finish(driver, tmp_path: Path, name: str, element: str = "") -> None:
    """No console errors, no request but data: URLs; a screenshot (of the page, or of the
    element with id ``element``) under the test's folder."""
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; })"
    )
    assert all(u.startswith(("data:", "file:")) for u in fetched), fetched
    shot = tmp_path / f"{name}.png"
    if element:
        target = driver.find_element("id", element)
        driver.execute_script("arguments[0].scrollIntoView()", target)
        target.screenshot(str(shot))
    else:
        driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 1000


_PIXELS = """
var c = document.getElementById('view'), d = c.getContext('2d').getImageData(0, 0, c.width,
    c.height).data, red = 0, sum = 0;
for (var i = 0; i < d.length; i += 4) {
  if (d[i] - d[i + 1] > 50) red++;
  sum += d[i] + 3 * d[i + 1] + 7 * d[i + 2];
}
return [red, sum];
"""


@pytest.mark.slow
def test_viewer_scrolls_with_wheel_keys_and_slider(browser, predicted, tmp_path):
    from selenium.webdriver import ActionChains, Keys
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

    summary, slices = _case(predicted)
    _open(browser, predicted / "scan" / "report.html")
    k = summary["most_affected_slices"][0]["z"]
    _shown(browser, k)  # opens on the most affected slice
    caption = browser.find_element("id", "caption").text
    assert f"P(infected) {slices['p_infected'][k]:.3f}" in caption
    assert f"({slices['infected_px'][k]} px)" in caption and "mm (S)" in caption
    view = browser.find_element("id", "view")
    wheel = ActionChains(browser)
    wheel.scroll_from_origin(ScrollOrigin.from_element(view), 0, 100).perform()
    _shown(browser, k - 1)  # wheel down: one slice down (towards the feet)
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(view), 0, -100).perform()
    _shown(browser, k)
    view.click()
    ActionChains(browser).send_keys(Keys.ARROW_UP).perform()
    _shown(browser, k + 1)
    ActionChains(browser).send_keys(Keys.ARROW_LEFT, Keys.ARROW_LEFT).perform()
    _shown(browser, k - 1)
    ActionChains(browser).send_keys(Keys.HOME).perform()
    _shown(browser, 0)
    ActionChains(browser).send_keys(Keys.PAGE_UP).perform()
    _shown(browser, 10)
    ActionChains(browser).send_keys(Keys.END).perform()
    _shown(browser, N_SLICES - 1)
    slider = browser.find_element("id", "slider")
    left = -slider.size["width"] // 2 + 2
    ActionChains(browser).move_to_element_with_offset(slider, left, 0).click().perform()
    _shown(browser, 0)
    ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()  # the slider's own step only
    _shown(browser, 1)
    assert slider.get_attribute("value") == "1"
    _finish(browser, tmp_path, "viewer-scrolled")


@pytest.mark.slow
def test_overlay_and_gradcam_toggles_change_the_pixels(browser, predicted, tmp_path):
    summary, slices = _case(predicted)
    k = summary["gradcam_slices"][0]
    assert slices["infected_px"][k] > 0
    _open(browser, predicted / "scan" / "report.html", f"#z={k}")
    _shown(browser, k)
    red, base = browser.execute_script(_PIXELS)
    assert red > 0.5 * slices["infected_px"][k]  # the mask, in red, over the CT
    overlay = browser.find_element("id", "show-infection")
    overlay.click()
    _wait(browser, lambda d: d.execute_script(_PIXELS)[0] < red)
    overlay.click()
    _wait(browser, lambda d: d.execute_script(_PIXELS) == [red, base])
    outline = browser.find_element("id", "show-outline")
    outline.click()
    _wait(browser, lambda d: d.execute_script(_PIXELS)[1] != base)
    outline.click()
    browser.execute_script(  # the opacity slider, as a drag would set it
        "var o = document.getElementById('opacity'); o.value = 90;"
        "o.dispatchEvent(new Event('input'));"
    )
    _wait(browser, lambda d: d.execute_script(_PIXELS)[1] != base)
    cam = browser.find_element("id", "show-cam")
    assert (
        cam.is_enabled()
        and "Grad-CAM computed on this slice" in browser.find_element("id", "caption").text
    )
    before = browser.execute_script(_PIXELS)
    cam.click()
    _wait(browser, lambda d: d.execute_script(_PIXELS) != before)
    windows = browser.find_element("id", "window")
    assert [o.get_attribute("value") for o in windows.find_elements("tag name", "option")] == [
        "lung",
        "mediastinal",
    ]
    _finish(browser, tmp_path, "viewer-overlays", element="viewer")  # docs/img/viewer.png
    windows.send_keys("m")  # the mediastinal window draws other pixels
    _wait(browser, lambda d: d.execute_script(_PIXELS) != before)
    _finish(browser, tmp_path, "viewer-mediastinal")


@pytest.mark.slow
def test_plot_links_and_table_rows_jump_to_the_slice(browser, predicted, tmp_path):
    from selenium.webdriver import ActionChains

    summary, _ = _case(predicted)
    _open(browser, predicted / "scan" / "report.html")
    plot = browser.find_element("id", "plot")
    width = plot.size["width"]
    for k in (2, N_SLICES - 3):
        x = MARGIN_L + (k + 0.5) / N_SLICES * (width - MARGIN_L - MARGIN_R)
        ActionChains(browser).move_to_element_with_offset(plot, int(x - width / 2), 0).click(
        ).perform()  # fmt: skip
        _shown(browser, k)
    links = browser.find_elements("css selector", "a[data-goto]")
    assert [int(a.get_attribute("data-goto")) for a in links] == [
        t["z"] for t in summary["most_affected_slices"]
    ]
    links[-1].click()
    _shown(browser, summary["most_affected_slices"][-1]["z"])
    rows = browser.find_elements("css selector", "#slice-table tbody tr")
    assert len(rows) == N_SLICES
    rows[5].click()
    _shown(browser, 5)
    assert "current" in rows[5].get_attribute("class")
    _finish(browser, tmp_path, "viewer-plot")


@pytest.mark.slow
def test_index_lists_cases_and_failures_and_links_to_reports(browser, predicted, tmp_path):
    summary, _ = _case(predicted)
    _open(browser, predicted / "index.html")
    row = browser.find_element("css selector", "#cases tr.case")
    assert "scan" in row.text and summary["verdict"] in row.text
    assert f"{summary['n_positive_slices']} / {summary['n_slices']}" in row.text
    failed = browser.find_element("css selector", "tr.failed").text
    assert "missing" in failed and "input not found" in failed
    thumb = row.find_element("css selector", "img.thumb")
    assert browser.execute_script("return arguments[0].naturalWidth", thumb) > 0
    _finish(browser, tmp_path, "index")
    thumb.click()  # to the report, at the most affected slice
    top = summary["most_affected_slices"][0]["z"]
    _shown(browser, top)
    assert browser.current_url.endswith(f"scan/report.html#z={top}")
    _finish(browser, tmp_path, "index-to-report")
