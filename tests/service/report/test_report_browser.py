"""The report opens in a real browser (headless Chromium) with every figure loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.report import FIGURES
from tests.service.conftest import Api
from tests.service.test_analysis_api import run_study


def test_the_report_opens_with_its_figures_in_chromium(
    api: Api, tmp_path: Path, browser: Any
) -> None:
    study = run_study(api, seeds_per_trial=4, analysis={"margin": 0.1})
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
    assert len(images) == len(FIGURES)
    for alt, width, height in images:
        assert width > 0 and height > 0, f"figure {alt!r} did not load"
    header = browser.find_element("css selector", "header h1").text
    assert header.startswith("REMOVES")
    findings = browser.find_element("css selector", "#findings").text
    assert "Liu et al." in findings and "reproduced" in findings
