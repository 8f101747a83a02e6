"""Which token the client sends: --token/HPS_TOKEN, else the token file; never in a repr."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from hps.client import Client
from hps.credentials import CredentialsError, resolve_token

SECRET = "hps_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HPS_TOKEN or HPS_TOKEN_FILE from the caller's shell; the working dir is empty."""
    monkeypatch.delenv("HPS_TOKEN", raising=False)
    monkeypatch.delenv("HPS_TOKEN_FILE", raising=False)
    monkeypatch.chdir(tmp_path)


def test_no_token_anywhere_is_none() -> None:
    assert resolve_token() is None


def test_the_token_file_in_the_working_dir_is_read(tmp_path: Path) -> None:
    (tmp_path / "hps.token").write_text(SECRET + "\n")
    assert resolve_token() == SECRET


def test_an_explicit_token_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "hps.token").write_text("hps_from-the-file\n")
    assert resolve_token(SECRET) == SECRET


def test_hps_token_file_names_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hps.token").write_text("hps_not-this-one\n")
    other = tmp_path / "elsewhere" / "token"
    other.parent.mkdir()
    other.write_text(SECRET)
    monkeypatch.setenv("HPS_TOKEN_FILE", str(other))
    assert resolve_token() == SECRET


def test_a_missing_file_named_by_hps_token_file_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPS_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(CredentialsError, match=r"HPS_TOKEN_FILE=.*missing: no such file"):
        resolve_token()


def _echo_authorization(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"seen": request.headers.get("authorization")})


def test_the_client_sends_its_token_as_a_bearer_header() -> None:
    transport = httpx.MockTransport(_echo_authorization)
    with Client("http://hps.test", token=SECRET, transport=transport) as client:
        assert client._call("GET", "/v1/studies") == {"seen": f"Bearer {SECRET}"}
    with Client("http://hps.test", transport=transport) as client:
        assert client._call("GET", "/v1/studies") == {"seen": None}


def test_no_repr_shows_the_token() -> None:
    with Client("http://hps.test", token=SECRET) as client:
        shown = [repr(client), str(client), repr(client._http.headers), repr(vars(client))]
    assert all(SECRET not in text for text in shown), shown
    assert repr(client) == "<Client http://hps.test with a token>"
