"""The Optuna dashboard served by the service: its login form, its cookie, its guard.

The browser itself is in tests/e2e/test_dashboard.py; here the HTTP exchanges, in-process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from service.auth import COOKIE
from service.dashboard import LOGIN_PATH
from service.tokens import SESSION_TTL
from tests.service.conftest import Api


def anonymous(api: Api) -> Api:
    del api.client.headers["Authorization"]
    return api


def log_in(api: Api, token: str, **headers: str) -> Any:
    return api.client.post(
        LOGIN_PATH, data={"token": token}, headers=headers, follow_redirects=False
    )


def test_a_page_load_without_a_token_goes_to_the_login_form(api: Api) -> None:
    anonymous(api)
    response = api.client.get("/dashboard/", headers={"accept": "text/html"})
    assert response.url.path == LOGIN_PATH
    assert response.status_code == 200 and 'name="token"' in response.text
    # A script's call gets the API's 401, not a page.
    response = api.client.get("/api/studies")
    assert response.status_code == 401 and response.json()["error"] == "unauthenticated"


def test_logging_in_sets_a_strict_httponly_cookie_that_opens_the_dashboard(api: Api) -> None:
    api.create()
    reader = api.mint("read", name="reader")
    anonymous(api)
    response = log_in(api, reader)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=hps_session_")
    assert reader not in cookie, "the cookie holds a session, never the token"
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert f"Max-Age={int(SESSION_TTL.total_seconds())}" in cookie
    assert "Secure" not in cookie, "plain http: a Secure cookie would never come back"

    page = api.client.get("/dashboard/", headers={"accept": "text/html"})
    assert page.status_code == 200 and "Optuna Dashboard" in page.text
    (summary,) = api.client.get("/api/studies").json()["study_summaries"]
    assert summary["study_name"] == "warmup-check (2030-01-01 12:00:00)"


def test_the_form_refuses_a_bogus_token_and_one_without_read_scope(api: Api) -> None:
    worker = api.mint("worker", name="worker-only")
    anonymous(api)
    bogus = log_in(api, "hps_not-a-token")
    assert bogus.status_code == 401 and "not valid" in bogus.text
    assert "set-cookie" not in bogus.headers
    wrong = log_in(api, worker)
    assert wrong.status_code == 403 and "read scope" in wrong.text
    assert "set-cookie" not in wrong.headers
    assert log_in(api, "").status_code == 401


def test_a_revoked_token_in_the_cookie_no_longer_opens_it(api: Api) -> None:
    reader = api.mint("read", name="revoked-reader")
    (listed,) = [t for t in api.client.get("/v1/tokens").json() if t["name"] == "revoked-reader"]
    admin = api.client.headers.pop("Authorization")
    assert log_in(api, reader).status_code == 303
    assert api.client.get("/api/studies").status_code == 200

    revoked = api.client.delete(f"/v1/tokens/{listed['id']}", headers={"Authorization": admin})
    assert revoked.status_code == 200 and revoked.json()["revoked"], revoked.text
    assert api.client.get("/api/studies").status_code == 401


def test_the_cookie_opens_the_dashboard_only_not_the_api(api: Api) -> None:
    admin = api.client.headers["Authorization"].removeprefix("Bearer ")
    anonymous(api)
    assert log_in(api, admin).status_code == 303
    assert api.client.get("/api/studies").status_code == 200
    # The cookie rides on every request to the host, but /v1 wants the header: no CSRF there.
    assert api.client.get("/v1/studies").status_code == 401


def test_the_dashboard_is_read_only(api: Api) -> None:
    study = api.create()
    for method, path in (
        ("DELETE", "/api/studies/1"),
        ("POST", "/api/studies/1/rename"),
        ("POST", "/api/studies"),
    ):
        response = api.client.request(method, path, json={"study_name": "x"})
        assert response.status_code == 405, (method, path, response.text)
    assert api.study(study["id"])["name"] == "warmup-check"
    assert len(api.client.get("/api/studies").json()["study_summaries"]) == 1


def test_logging_out_forgets_the_cookie(api: Api) -> None:
    admin = api.client.headers["Authorization"].removeprefix("Bearer ")
    anonymous(api)
    log_in(api, admin)
    session = api.client.cookies[COOKIE]
    response = api.client.post("/dashboard/logout", follow_redirects=False)
    assert response.status_code == 303
    assert api.client.get("/api/studies").status_code == 401
    # The session ended on the server: a copy of the cookie opens nothing either.
    api.client.cookies[COOKIE] = session
    assert api.client.get("/api/studies").status_code == 401


def test_a_session_expires(api: Api) -> None:
    admin = api.client.headers["Authorization"].removeprefix("Bearer ")
    anonymous(api)
    assert log_in(api, admin).status_code == 303
    api.clock.advance(SESSION_TTL.total_seconds() - 60)
    assert api.client.get("/api/studies").status_code == 200
    api.clock.advance(120)
    assert api.client.get("/api/studies").status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site", "origin": "http://testserver"},
        {"origin": "https://evil.example", "x-forwarded-host": "hps.example"},
    ],
    ids=["origin", "sec-fetch-site", "sibling-site", "proxied-origin"],
)
def test_another_sites_form_cannot_log_a_browser_in(api: Api, headers: dict[str, str]) -> None:
    """Login CSRF: another site auto-posted its own token and replaced the victim's cookie."""
    admin = api.client.headers["Authorization"].removeprefix("Bearer ")
    anonymous(api)
    response = log_in(api, admin, **headers)
    assert response.status_code == 403 and "another site" in response.text
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "http://testserver", "sec-fetch-site": "same-origin"},
        {"origin": "http://testserver"},  # a browser without Sec-Fetch-Site
        # Behind a proxy that rewrites Host: the browser's own same-origin verdict stands.
        {"origin": "https://hps.example", "sec-fetch-site": "same-origin"},
        {"origin": "https://hps.example", "x-forwarded-host": "hps.example"},
    ],
    ids=["same-origin", "origin-only", "proxy-fetch-site", "proxy-forwarded-host"],
)
def test_the_dashboards_own_form_logs_in(api: Api, headers: dict[str, str]) -> None:
    admin = api.client.headers["Authorization"].removeprefix("Bearer ")
    anonymous(api)
    assert log_in(api, admin, **headers).status_code == 303


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "multipart/form-data"])
def test_the_login_takes_a_urlencoded_form_only(api: Api, content_type: str) -> None:
    admin = api.client.headers["Authorization"].removeprefix("Bearer ")
    anonymous(api)
    response = api.client.post(
        LOGIN_PATH, content=f"token={admin}", headers={"content-type": content_type}
    )
    assert response.status_code == 415
    assert "set-cookie" not in response.headers


def test_the_cookie_is_secure_behind_a_proxy_that_says_https(api: Api) -> None:
    admin = api.client.headers["Authorization"].removeprefix("Bearer ")
    anonymous(api)
    response = log_in(api, admin, **{"x-forwarded-proto": "https"})
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


def test_without_auth_the_dashboard_is_open(make_api: Callable[..., Api]) -> None:
    api = make_api(auth=False)
    assert "Authorization" not in api.client.headers
    assert api.client.get("/api/studies").status_code == 200
