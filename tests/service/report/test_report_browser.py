"""The report opens in a real browser (headless Chromium) with every figure loaded."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.conftest import Api
from tests.service.test_analysis_api import run_study

CHROMIUM = next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
)
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("headless Chromium not found: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(DRIVER))
    yield driver
    driver.quit()


def test_the_report_opens_with_its_figures_in_chromium(
    api: Api, tmp_path: Path, browser: Any
) -> None:
    study = run_study(api, seeds_per_trial=4)
    page = tmp_path / "report.html"
    page.write_text(api.client.get(f"/v1/studies/{study['id']}/report").text, encoding="utf-8")

    browser.get(page.as_uri())
    # Wait for every image to finish decoding, then read what the browser made of them.
    images = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        Promise.all([...document.images].map(i => i.decode().catch(() => null))).then(() =>
          done([...document.images].map(i => [i.alt, i.naturalWidth, i.naturalHeight])));
        """
    )
    assert len(images) == 4
    for alt, width, height in images:
        assert width > 0 and height > 0, f"figure {alt!r} did not load"
    header = browser.find_element("css selector", "header h1").text
    assert header.startswith("REMOVES")
