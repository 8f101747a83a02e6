"""The hps command's help, errors and exit codes (the happy paths run in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hps.cli import app

runner = CliRunner()
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens there


COMMANDS = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]


def test_the_commands_are_all_listed() -> None:
    assert {"serve", "worker", "submit", "status", "up", "gate", "trials", "report"} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_submit_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


def test_submit_a_file_that_is_not_a_mapping(tmp_path: Path) -> None:
    spec = tmp_path / "list.yaml"
    spec.write_text("- just\n- a list\n")
    result = runner.invoke(app, ["submit", str(spec)])
    assert result.exit_code == 2
    assert "must hold a mapping" in result.output


def test_submit_invalid_yaml(tmp_path: Path) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: [unclosed\n")
    result = runner.invoke(app, ["submit", str(spec)])
    assert result.exit_code == 2
    assert "not valid YAML" in result.output


def test_status_without_a_service_says_how_to_start_one() -> None:
    result = runner.invoke(app, ["status", "1", "--url", UNREACHABLE])
    assert result.exit_code == 2
    assert "hps serve" in result.output


def test_worker_rejects_an_unknown_device() -> None:
    result = runner.invoke(app, ["worker", "--device", "tpu", "--url", UNREACHABLE])
    assert result.exit_code == 2
    assert "--device must be auto, cpu or cuda" in result.output


def test_a_submit_without_an_answer_says_the_study_may_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: a 6,000-cell grid took 31 s, the CLI gave up at 30 s and said "is the service
    running?", and a retry would have made a second study."""
    import httpx

    import hps.cli.common
    from hps.client import Client

    keys: list[str] = []

    def slow(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        raise httpx.ReadTimeout("timed out", request=request)

    def client(url: str, *, token: str | None, retries: int) -> Client:
        transport = httpx.MockTransport(slow)
        return Client(url, token=token, retries=retries, transport=transport, sleep=lambda _: None)

    monkeypatch.setattr(hps.cli.common, "Client", client)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\n")
    result = runner.invoke(app, ["submit", str(spec), "--url", UNREACHABLE, "--token", "t"])
    assert result.exit_code == 2
    assert "may have been created" in result.output
    assert f"--idempotency-key {keys[0]}" in result.output
    assert "Is the service running" not in result.output
    assert len(set(keys)) == 1 and len(keys) > 1  # retried, under one key

    keys.clear()
    again = ["submit", str(spec), "--url", UNREACHABLE, "--token", "t", "--idempotency-key", "k1"]
    assert runner.invoke(app, again).exit_code == 2
    assert set(keys) == {"k1"}
