"""The Optuna dashboard in a real browser (headless Chromium), served by the real service.

A study runs to the end with a real worker; a person then opens /dashboard, is sent to the login
form, pastes a read token, and finds the study and its trials. The token must reach no log.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from api_schemas.tokens import Scope
from tests.e2e.conftest import TINY_WORKLOAD, Service

pytestmark = pytest.mark.e2e

RENDER_TIMEOUT_S = 30

STUDY: dict[str, Any] = {
    "name": "dashboard-check",
    "workload": TINY_WORKLOAD,
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "sampler": {"type": "random", "seed": 0},
    "n_trials": 3,
    "seeds_per_trial": 1,
}


def wait_for_text(browser: Any, text: str) -> None:
    """Wait until the page's rendered text contains ``text`` (the dashboard renders with JS)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def rendered(driver: Any) -> bool:
        return text in driver.find_element("tag name", "body").text

    try:
        # A page still navigating (the login's redirect) replaces its body under the reader.
        wait = WebDriverWait(
            browser, RENDER_TIMEOUT_S, ignored_exceptions=(StaleElementReferenceException,)
        )
        wait.until(rendered)
    except TimeoutException:
        body = browser.find_element("tag name", "body").text
        pytest.fail(f"{text!r} never appeared on {browser.current_url}; the page reads:\n{body}")


def test_a_person_logs_in_and_finds_the_study_and_its_trials(
    service: Service, browser: Any
) -> None:
    with service.client() as admin:
        study = admin.submit(STUDY)
        assert service.start_worker("--burst").wait(timeout=180) == 0
        assert admin.study(study.id).counts.completed == 3
        reader = admin.create_token("dashboard-reader", [Scope.READ]).token

    # Without a token the dashboard's API refuses, and a page load is sent to the form.
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{service.url}/api/studies", timeout=10)
    assert refused.value.code == 401

    browser.get(f"{service.url}/dashboard")
    assert browser.current_url == f"{service.url}/dashboard/login"
    browser.find_element("id", "token").send_keys(reader)
    browser.find_element("id", "login").click()

    # The study list: Optuna's study is named after the spec and when it was submitted.
    wait_for_text(browser, "dashboard-check (")
    browser.find_element("partial link text", "dashboard-check (").click()
    wait_for_text(browser, "History")
    browser.get(browser.current_url.rstrip("/") + "/trials")
    wait_for_text(browser, "3 Trials")
    # The first trial's details, with what the worker recorded.
    wait_for_text(browser, "Trial 0 (trial_id=")
    page = browser.find_element("tag name", "body").text
    for expected in ("Trial 1\nComplete", "Trial 2\nComplete", "optimizer", "device cpu"):
        assert expected in page, f"{expected!r} not on the trials page:\n{page}"

    # The browser sent the token once, in a POST body: it is in no log line.
    log = service.log.read_text()
    assert "POST /dashboard/login" in log and "GET /api/studies" in log, "no access log"
    assert reader not in log


VERDICT_STUDY: dict[str, Any] = {
    "name": "verdict-check",
    "workload": TINY_WORKLOAD,
    "search_space": {
        "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
        "lr": {"type": "categorical", "choices": [0.003, 0.03]},
        "warmup_steps": {"type": "categorical", "choices": [0, 10]},
    },
    "sampler": {"type": "grid"},
    "seeds_per_trial": 4,
    "analysis": {"margin": 0.05, "bootstrap": 100},
}


def log_in(service: Service, browser: Any, token: str) -> None:
    browser.get(f"{service.url}/dashboard/login")
    browser.find_element("id", "token").send_keys(token)
    browser.find_element("id", "login").click()


def test_the_studys_dashboard_note_shows_the_verdict(service: Service, browser: Any) -> None:
    """Issue 16: the verdict, the reason the study exists, was only on hps's own report page.
    The service writes it into the study's note when the study finishes."""
    with service.client() as admin:
        study = admin.submit(VERDICT_STUDY)
        assert service.start_worker("--burst").wait(timeout=240) == 0
        assert admin.study(study.id).state == "finished"
        outcome = admin.analysis(study.id).verdict
        reader = admin.create_token("verdict-reader", [Scope.READ]).token
    assert outcome is not None

    log_in(service, browser, reader)
    wait_for_text(browser, "verdict-check (")
    browser.find_element("partial link text", "verdict-check (").click()
    wait_for_text(browser, "held-out loss (mean over seeds)")  # the objective, named
    # The study's note, one click away in the dashboard's side bar (its "Note" page).
    note = browser.current_url.rstrip("/") + "/note"
    for _ in range(RENDER_TIMEOUT_S):  # written within a pass of the watcher (1 s here)
        browser.get(note)
        time.sleep(1)
        if "Verdict:" in browser.find_element("tag name", "body").text:
            break
    wait_for_text(browser, f"Verdict: {outcome.outcome.value}")
    page = browser.find_element("tag name", "body").text
    for expected in ("warmup regret", "adam", "radam", "paired seeds"):
        assert expected in page, f"{expected!r} not on the study's note:\n{page}"
    # The headline figure, fetched by the browser with its login cookie and drawn.
    figure = f"/v1/studies/{study.id}/figures/estimands.png"
    for _ in range(RENDER_TIMEOUT_S):
        drawn = browser.execute_script(
            "return [...document.images].filter(i => i.src.endsWith(arguments[0]))"
            ".map(i => i.complete && i.naturalWidth)",
            figure,
        )
        if drawn and all(drawn):
            break
        time.sleep(1)
    assert drawn and all(width > 100 for width in drawn), f"the note's figure: {drawn}"
