"""``hps dashboard``: a running service's dashboard address, or a read-only one of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from hps.cli import app
from hps.local import free_port
from tests.live_server import live_service
from tests.service.conftest import study_spec

runner = CliRunner()


def test_it_prints_the_address_of_a_running_service_and_how_to_log_in(tmp_path: Path) -> None:
    with live_service(tmp_path) as service:
        result = runner.invoke(app, ["dashboard", "--url", service.url + "/"])
    assert result.exit_code == 0, result.output
    assert f"{service.url}/dashboard" in result.stdout
    assert "--scope read" in result.output


def test_without_a_service_it_says_how_to_start_one() -> None:
    result = runner.invoke(app, ["dashboard", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "hps serve" in result.output


def test_the_standalone_dashboard_listens_on_loopback_only() -> None:
    result = runner.invoke(app, ["dashboard", "--database-url", "sqlite://", "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "loopback only" in result.output


def test_the_standalone_dashboard_shows_a_database_read_only(tmp_path: Path) -> None:
    with live_service(tmp_path) as service, service.client() as admin:
        admin.submit(study_spec())
    port = free_port()
    cmd = [sys.executable, "-m", "hps", "dashboard", "--database-url", service.database_url]
    process = subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                studies = httpx.get(f"{base}/api/studies", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not come up"
                time.sleep(0.2)
        (summary,) = studies.json()["study_summaries"]
        assert summary["study_name"].startswith("warmup-check (")
        assert httpx.get(f"{base}/dashboard", follow_redirects=True).status_code == 200
        deleted = httpx.delete(f"{base}/api/studies/{summary['study_id']}")
        assert deleted.status_code == 405
        assert len(httpx.get(f"{base}/api/studies").json()["study_summaries"]) == 1
    finally:
        process.terminate()
        process.wait(timeout=20)
