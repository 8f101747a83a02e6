"""Tokens: stored as hashes only, the admin token file (mode 0600), revocation, scopes, logs."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from api_schemas import ErrorBody
from api_schemas.tokens import Scope, TokenCreated, TokenRead, allows, granted
from service.tokens import AUTH_CACHE_TTL, LOCAL_ADMIN, write_secret
from tests.service.conftest import Api, bearer


def token_file(api: Api) -> Path:
    return api.database.with_name("hps.token")


def test_scopes_and_what_they_imply() -> None:
    assert granted([Scope.ADMIN]) == set(Scope)
    assert granted([Scope.SUBMIT]) == {Scope.SUBMIT, Scope.READ}
    assert granted([Scope.READ, Scope.WORKER]) == {Scope.READ, Scope.WORKER}
    assert not allows([Scope.READ], Scope.SUBMIT)
    assert not allows([Scope.WORKER], Scope.READ)
    assert not allows([Scope.SUBMIT, Scope.WORKER], Scope.ADMIN)


def test_created_token_works_and_its_secret_is_shown_once(api: Api) -> None:
    response = api.client.post("/v1/tokens", json={"name": "ci", "scopes": ["submit", "read"]})
    assert response.status_code == 201, response.text
    created = TokenCreated.model_validate(response.json())
    assert created.token.startswith("hps_") and len(created.token) > 40
    assert created.scopes == [Scope.READ, Scope.SUBMIT]

    listed = api.client.get("/v1/tokens")
    assert listed.status_code == 200
    assert created.token not in listed.text
    tokens = [TokenRead.model_validate(t) for t in listed.json()]
    assert [(t.name, t.scopes) for t in tokens] == [
        (LOCAL_ADMIN, [Scope.ADMIN]),
        ("ci", [Scope.READ, Scope.SUBMIT]),
    ]
    assert "token" not in listed.json()[1]

    mine = bearer(created.token)
    assert api.client.get("/v1/studies", headers=mine).status_code == 200
    assert api.client.get("/v1/tokens", headers=mine).status_code == 403


def test_the_database_holds_a_hash_never_a_secret(api: Api) -> None:
    secret = api.mint("read", name="reader")
    admin = token_file(api).read_text().strip()
    rows = api.sql("SELECT * FROM hps_tokens")
    assert len(rows) == 2
    for value in (v for row in rows for v in row):
        assert secret not in str(value) and admin not in str(value)
    hashes = {h for (h,) in api.sql("SELECT token_hash FROM hps_tokens")}
    assert hashes == {hashlib.sha256(s.encode()).hexdigest() for s in (secret, admin)}
    # Nor anywhere in the files: not in a page, not in the write-ahead log.
    for path in api.database.parent.glob("hps.db*"):
        content = path.read_bytes()
        assert secret.encode() not in content and admin.encode() not in content, path


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_the_token_file_is_private_even_under_a_permissive_umask(
    make_api: Callable[..., Api], permissive_umask: None
) -> None:
    api = make_api()
    path = token_file(api)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.glob(".hps.token.*")) == [], "no temporary file left behind"
    admin = bearer(path.read_text().strip())
    assert api.client.get("/v1/tokens", headers=admin).status_code == 200


def test_write_secret_replaces_a_file_and_never_writes_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    link = tmp_path / "hps.token"
    link.symlink_to(target)
    write_secret(link, "hps_secret")
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text() == "hps_secret\n"
    assert stat.S_IMODE(link.stat().st_mode) == 0o600


def test_a_restart_keeps_the_admin_token(make_api: Callable[..., Api]) -> None:
    first = make_api()
    secret = token_file(first).read_text()
    first.client.__exit__(None, None, None)
    second = make_api()
    assert token_file(second).read_text() == secret
    names = [t["name"] for t in second.client.get("/v1/tokens").json()]
    assert names == [LOCAL_ADMIN]


@pytest.mark.parametrize(
    "content", ["", "hps_not-a-token-of-this-database\n"], ids=["empty", "foreign"]
)
def test_a_token_file_without_a_live_admin_token_gets_a_new_one(
    make_api: Callable[..., Api], tmp_path: Path, content: str
) -> None:
    (tmp_path / "hps.token").write_text(content)
    api = make_api()
    secret = token_file(api).read_text().strip()
    assert secret != content.strip()
    assert api.client.get("/v1/tokens", headers=bearer(secret)).status_code == 200


def test_a_revoked_admin_token_in_the_file_is_replaced_on_restart(
    make_api: Callable[..., Api],
) -> None:
    first = make_api()
    old = token_file(first).read_text().strip()
    (admin,) = first.client.get("/v1/tokens").json()
    assert first.client.delete(f"/v1/tokens/{admin['id']}").status_code == 200
    first.client.__exit__(None, None, None)

    second = make_api()
    new = token_file(second).read_text().strip()
    assert new != old
    assert second.client.get("/v1/studies", headers=bearer(old)).status_code == 401
    assert second.client.get("/v1/studies", headers=bearer(new)).status_code == 200


def test_a_revoked_token_is_refused_and_revoking_is_idempotent(api: Api) -> None:
    secret = api.mint("read", name="leaving")
    (token,) = [t for t in api.client.get("/v1/tokens").json() if t["name"] == "leaving"]
    assert api.client.get("/v1/studies", headers=bearer(secret)).status_code == 200

    first = api.client.delete(f"/v1/tokens/{token['id']}")
    again = api.client.delete(f"/v1/tokens/{token['id']}")
    assert first.status_code == again.status_code == 200
    assert first.json()["revoked"] is True and again.json() == first.json()

    refused = api.client.get("/v1/studies", headers=bearer(secret))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "revoked" in ErrorBody.model_validate(refused.json()).message


def test_a_revocation_reaches_other_replicas_within_the_auth_cache_ttl(
    make_api: Callable[..., Api],
) -> None:
    # Two replicas on one database: each trusts a token it checked within AUTH_CACHE_TTL.
    here, there = make_api(), make_api()
    secret = here.mint("read", name="leaving")
    (token,) = [t for t in here.client.get("/v1/tokens").json() if t["name"] == "leaving"]
    assert there.client.get("/v1/studies", headers=bearer(secret)).status_code == 200

    assert here.client.delete(f"/v1/tokens/{token['id']}").status_code == 200
    assert here.client.get("/v1/studies", headers=bearer(secret)).status_code == 401  # at once
    assert there.client.get("/v1/studies", headers=bearer(secret)).status_code == 200  # cached
    there.clock.advance(AUTH_CACHE_TTL.total_seconds())
    assert there.client.get("/v1/studies", headers=bearer(secret)).status_code == 401


def test_revoking_an_unknown_token_is_404(api: Api) -> None:
    response = api.client.delete("/v1/tokens/4242")
    assert response.status_code == 404
    assert "token 4242" in response.json()["message"]


def test_last_used_at_is_kept_to_the_minute(api: Api) -> None:
    secret = api.mint("read", name="reader")

    def last_used() -> str | None:
        (token,) = [t for t in api.client.get("/v1/tokens").json() if t["name"] == "reader"]
        value: str | None = token["last_used_at"]
        return value

    assert last_used() is None
    api.client.get("/v1/studies", headers=bearer(secret))
    first = last_used()
    assert first is not None and first.startswith("2030-01-01T12:00:00")
    api.clock.advance(30)
    api.client.get("/v1/studies", headers=bearer(secret))
    assert last_used() == first  # not a write per request
    api.clock.advance(31)
    api.client.get("/v1/studies", headers=bearer(secret))
    assert last_used() != first and str(last_used()).startswith("2030-01-01T12:01:01")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ci", "scopes": []}, "scopes"),
        ({"name": "ci", "scopes": ["root"]}, "scopes[0]"),
        ({"name": "has space", "scopes": ["read"]}, "name"),
        ({"name": "ci"}, "scopes"),
    ],
    ids=["no-scope", "unknown-scope", "bad-name", "missing-scopes"],
)
def test_an_invalid_token_request_names_its_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    response = api.client.post("/v1/tokens", json=body)
    assert response.status_code == 422
    assert field in [e.field for e in ErrorBody.model_validate(response.json()).errors]


def test_with_auth_off_no_token_is_needed_and_no_file_is_written(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_api(auth=False)
    assert "Authorization" not in api.client.headers
    assert api.client.post("/v1/studies", json={}).status_code == 422  # past auth, to validation
    assert api.lease() is None
    assert not (tmp_path / "hps.token").exists()


def test_no_secret_reaches_the_logs(
    make_api: Callable[..., Api], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api()
    admin = token_file(api).read_text().strip()
    secret = api.mint("worker", name="gpu-box")
    api.client.get("/v1/studies", headers=bearer(secret))
    api.client.get("/v1/studies", headers=bearer(secret + "x"))
    api.client.post("/v1/leases", json={"worker_id": "w"}, headers=bearer(secret))

    assert caplog.records, "nothing was logged: this test would prove nothing"
    assert str(token_file(api).resolve()) in caplog.text  # the path is logged, not the secret
    assert admin not in caplog.text and secret not in caplog.text


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", "hps_abc", "Token hps_abc"]
)
def test_a_malformed_authorization_header_is_401(api: Api, header: str) -> None:
    response = api.client.get("/v1/studies", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
