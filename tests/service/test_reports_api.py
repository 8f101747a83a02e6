"""Issue 16: a study's answer is bounded and cached, and its headline figure is in the note.

The analysis and the report cost seconds of CPU each: a few at once are allowed, beyond that a
clear 503 with Retry-After; a finished study's answer is computed once. The note embeds the
headline figure as a same-origin link that the dashboard's login cookie may read.
"""

from __future__ import annotations

import re
import threading

import pytest

from service.reports import Reports
from tests.service.conftest import Api
from tests.service.test_dashboard import anonymous, log_in
from tests.service.test_notes import GRID, dashboard_study, run_grid

PNG = b"\x89PNG\r\n\x1a\n"


def reports(api: Api) -> Reports:
    found: Reports = api.client.app.state.reports  # type: ignore[attr-defined]
    return found


def test_the_note_embeds_the_headline_figure_which_the_login_cookie_may_load(api: Api) -> None:
    study = run_grid(api)
    assert api.client.post(f"/v1/studies/{study['id']}/note").status_code == 200
    note = dashboard_study(api, study["id"])["note"]["body"]
    (link,) = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", note)
    assert link == f"/v1/studies/{study['id']}/figures/estimands.png"
    reader = api.mint("read", name="note-reader")
    anonymous(api)
    assert api.client.get(link).status_code == 401  # not without a login
    assert log_in(api, reader).status_code == 303
    response = api.client.get(link)  # as the browser showing the note fetches it: the cookie
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG)


def test_every_figure_comes_as_png_and_svg_and_a_wrong_name_is_a_clear_error(api: Api) -> None:
    study = run_grid(api)
    base = f"/v1/studies/{study['id']}/figures"
    svg = api.client.get(f"{base}/stable.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content
    unknown = api.client.get(f"{base}/nonsense.png")
    assert unknown.status_code == 404 and "estimands" in unknown.json()["message"]
    assert api.client.get(f"{base}/estimands.gif").status_code == 422
    assert api.client.get("/v1/studies/999/figures/estimands.png").status_code == 404


def test_a_finished_studys_answer_is_computed_once(api: Api) -> None:
    study = run_grid(api)
    first = reports(api).analysis(study["id"])
    assert reports(api).analysis(study["id"]) is first
    page = api.client.get(f"/v1/studies/{study['id']}/report").text
    assert api.client.get(f"/v1/studies/{study['id']}/report").text == page
    assert reports(api).page(study["id"]) is reports(api).page(study["id"])


def test_a_running_studys_answer_follows_its_trials(api: Api) -> None:
    study = api.create(name="running", **GRID)
    assignment = api.lease()
    assert assignment is not None
    before = reports(api).analysis(study["id"])
    assert api.complete(assignment, 1.0).status_code == 200
    after = reports(api).analysis(study["id"])
    assert after is not before
    assert sum(w.counts.completed for w in after.workloads) == 1 + sum(
        w.counts.completed for w in before.workloads
    )


@pytest.mark.parametrize("path", ["analysis", "report", "figures/estimands.png"])
def test_when_every_slot_is_taken_a_request_gets_a_503_to_retry_not_a_queue(
    api: Api, path: str
) -> None:
    study = api.create(name="busy", **GRID)
    app = api.client.app
    app.state.reports = Reports(app.state.studies, concurrency=1, wait_s=0.05)  # type: ignore[attr-defined]
    slots = app.state.reports._slots  # type: ignore[attr-defined]
    assert slots.acquire(timeout=1)  # as a long report in another request holds it
    try:
        busy = api.client.get(f"/v1/studies/{study['id']}/{path}")
    finally:
        slots.release()
    assert busy.status_code == 503 and busy.json()["error"] == "busy"
    assert busy.headers["retry-after"] == "5"
    assert api.client.get(f"/v1/studies/{study['id']}/{path}").status_code == 200


def test_the_background_note_writer_waits_for_a_slot_instead_of_losing_the_note(
    api: Api,
) -> None:
    study = run_grid(api)
    app = api.client.app
    held = Reports(app.state.studies, concurrency=1, wait_s=0.05)
    app.state.notes._reports = held  # type: ignore[attr-defined]
    assert held._slots.acquire(timeout=1)
    written: list[list[int]] = []
    writer = threading.Thread(target=lambda: written.append(app.state.notes.write_finished()))  # type: ignore[attr-defined]
    writer.start()
    writer.join(timeout=0.5)
    assert writer.is_alive(), "it waits while the slot is taken"
    held._slots.release()
    writer.join(timeout=30)
    assert written == [[study["id"]]]
    assert "Verdict:" in dashboard_study(api, study["id"])["note"]["body"]
