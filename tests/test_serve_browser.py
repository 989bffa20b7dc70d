"""The web page in a real browser: headless Chromium (Debian ``chromium`` + ``chromium-driver``, installed
by ``.ci/run``) driven by Selenium against a real ``safetynet serve`` on 127.0.0.1.

It picks a real RGB-D pair from the shared data in the two file inputs, submits, and reads the
verdict, score and threshold from the page; they must equal ``verify()`` on the same files. The
photo, the depth colour map and the patch overlay must have been drawn, and every resource the
page loaded must come from the server itself (it works offline). A screenshot is saved under
tmp_path; with ``SAFETYNET_SCREENSHOT=PATH`` also to PATH (how docs/images/sceneproof-page.png
was made). Missing selenium or chromium: skip, or fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import missing, require_module
from serve_support import pair, start_server

require_module("fastapi")
require_module("uvicorn")
webdriver = require_module("selenium.webdriver")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from safetynet.sceneproof.verify import verify  # noqa: E402


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        missing("headless Chromium not found (chromium + chromedriver); install the Debian packages "
                "chromium and chromium-driver (.ci/run does)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1800", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # The paper's CNN bundle: its per-patch evidence is what the page's overlay and table draw (the
    # default whole-frame feature model has no patches; tests/test_serve.py covers it).
    s = start_server(tmp_path_factory.mktemp("serve-page"), "--model", "cnn")
    yield s
    s.stop()


def _painted(drv, canvas_id: str) -> int:
    """How many pixels of a canvas are not transparent (0 for a canvas nobody drew on)."""
    return drv.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;", canvas_id)


def test_page_judges_a_real_pair_like_verify(browser, server, tmp_path):
    image, depth = pair("7scenes-jpg")
    want = verify(image, depth, "cnn")
    browser.get(server.url + "/")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=image]").is_displayed()
    browser.find_element(By.ID, "image").send_keys(str(image))
    browser.find_element(By.ID, "depth").send_keys(str(depth))
    WebDriverWait(browser, 60).until(lambda d: "m (dark blue)" in d.find_element(By.ID, "depth-caption").text)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 120).until(lambda d: d.find_element(By.ID, "verdict").text
                                      or "error" in d.find_element(By.ID, "status").get_attribute("class"))
    assert browser.find_element(By.ID, "verdict").text == want.verdict, browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "score").text == f"{want.real_score:.3f}"
    assert browser.find_element(By.ID, "threshold").text == f"{want.real_threshold:.3f}"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#patches tbody tr")) == want.n_patches
    h, w = want.image_size
    assert browser.execute_script("return [photo.width, photo.height]") == [w, h]
    assert _painted(browser, "photo") == w * h and _painted(browser, "depthview") == w * h
    assert 0 < _painted(browser, "overlay") < w * h  # the patch grid covers the centre of the photo
    hosts = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).host)")
    assert hosts and set(hosts) == {f"127.0.0.1:{server.port}"}, hosts  # no CDN: it works offline
    # what a person sees: the photo shows through the overlay (its corners, outside the patch grid, are not flat)
    stack = tmp_path / "photo.png"
    browser.find_element(By.CSS_SELECTOR, ".stack").screenshot(str(stack))
    with Image.open(stack) as im:
        corner = np.asarray(im.convert("L"), dtype=np.float64)[: im.height // 10, : im.width // 10]
    assert corner.std() > 5, "the photo is hidden under the overlay"
    shot = tmp_path / "sceneproof-page.png"
    browser.find_element(By.TAG_NAME, "body").screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("SAFETYNET_SCREENSHOT"):
        Path(os.environ["SAFETYNET_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["SAFETYNET_SCREENSHOT"])


def test_page_shows_a_bad_input_error(browser, server, tmp_path):
    image, _ = pair("7scenes-jpg")
    text = tmp_path / "depth.png"
    text.write_text("not a depth map\n")
    browser.get(server.url + "/")
    browser.find_element(By.ID, "image").send_keys(str(image))
    browser.find_element(By.ID, "depth").send_keys(str(text))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 60).until(lambda d: "Not verified" in d.find_element(By.ID, "status").text)
    assert "is not a PNG" in browser.find_element(By.ID, "status").text
    assert not browser.find_element(By.ID, "result").is_displayed()
