"""``hps token`` and the auth options of the other commands: help, errors, exit codes.

The commands against a real service run in tests/e2e/test_auth.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hps.cli import app

runner = CliRunner()
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens there


@pytest.mark.parametrize(
    "command", [["token"], ["token", "create"], ["token", "list"], ["token", "revoke"]]
)
def test_token_commands_have_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_create_needs_a_scope() -> None:
    result = runner.invoke(app, ["token", "create", "--name", "ci", "--url", UNREACHABLE])
    assert result.exit_code == 2
    assert "--scope" in result.output


def test_create_rejects_an_unknown_scope() -> None:
    args = ["token", "create", "--scope", "root", "--name", "ci", "--url", UNREACHABLE]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "'root' is not one of" in result.output


def test_help_never_shows_the_token_from_the_environment() -> None:
    secret = "hps_do-not-print-me"
    for command in (["submit"], ["worker"], ["token", "create"]):
        result = runner.invoke(app, [*command, "--help"], env={"HPS_TOKEN": secret})
        assert result.exit_code == 0
        assert "HPS_TOKEN" in result.output and secret not in result.output


def test_a_missing_token_file_that_was_asked_for_is_a_clear_error(tmp_path: Path) -> None:
    env = {"HPS_TOKEN_FILE": str(tmp_path / "nope"), "HPS_TOKEN": ""}
    for command in (["status", "1"], ["token", "list"]):
        result = runner.invoke(app, [*command, "--url", UNREACHABLE], env=env)
        assert result.exit_code == 2
        assert "no such file" in result.output


def test_serve_refuses_no_auth_on_a_public_address() -> None:
    result = runner.invoke(app, ["serve", "--no-auth", "--host", "0.0.0.0", "--port", "9"])
    assert result.exit_code == 2
    assert "refusing to start without authentication on 0.0.0.0" in result.output
    assert "HPS_AUTH" in result.output and "HPS_HOST" in result.output
