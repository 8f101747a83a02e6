"""Settings refuse unsafe values before anything starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_auth_may_be_off_on_loopback(host: str) -> None:
    assert is_loopback(host)
    assert Settings(auth=False, host=host).auth is False


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "hps.example.com"])
def test_auth_off_on_any_other_address_refuses_to_start(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ValidationError, match="refusing to start without authentication") as e:
        Settings(auth=False, host=host)
    assert "HPS_AUTH" in str(e.value) and "HPS_HOST" in str(e.value)


def test_the_rule_holds_for_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPS_AUTH", "false")
    monkeypatch.setenv("HPS_HOST", "0.0.0.0")
    with pytest.raises(ValidationError, match="refusing to start"):
        Settings()


def test_auth_is_on_by_default_on_every_address() -> None:
    assert Settings().auth is True
    assert Settings(host="0.0.0.0").auth is True
