"""Real processes: the hps service under uvicorn on a free port, and hps worker processes.

Auth is on, as by default. The service writes its admin token to ``hps.token`` beside the test's
database; the test's client uses it, CLI commands find it through ``HPS_TOKEN_FILE``
(``cli_env``), and workers get a worker-scope token in ``HPS_TOKEN``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from api_schemas.tokens import Scope
from hps.client import Client
from hps.local import free_port

TINY_WORKLOAD = {
    "name": "postln_transformer",
    "config": {
        "seq_len": 8,
        "vocab": 8,
        "n_layers": 1,
        "d_model": 16,
        "n_heads": 2,
        "dim_feedforward": 32,
        "batch_size": 16,
        "steps": 40,
        "report_every": 10,
    },
}


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without the caller's hps credentials, plus ``variables``."""
    clean = {k: v for k, v in os.environ.items() if k not in ("HPS_TOKEN", "HPS_TOKEN_FILE")}
    return {**clean, **variables}


@dataclass
class Service:
    url: str
    database: Path
    """The SQLite file; on PostgreSQL unused, but the service's working directory is beside it."""
    process: subprocess.Popen[bytes]
    log: Path
    token_file: Path
    database_url: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker_token: str = ""
    env: dict[str, str] = field(default_factory=dict)
    """The service's environment, to start it again on the same database (tests/e2e/test_faults)."""

    @property
    def admin_token(self) -> str:
        return self.token_file.read_text().strip()

    @property
    def cli_env(self) -> dict[str, str]:
        """The environment for ``hps`` commands: they find the admin token in the token file."""
        return environment(HPS_TOKEN_FILE=str(self.token_file))

    def client(self, token: str | None = None) -> Client:
        """A client with ``token``, by default the admin token."""
        return Client(self.url, token=token or self.admin_token, retries=2)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.log.with_name(f"worker{len(self.workers)}.log").open("wb")
        cmd = [sys.executable, "-m", "hps", "worker", "--url", self.url, "--threads", "1"]
        worker = subprocess.Popen(
            [*cmd, "--poll", "0.2", *args],
            stdout=log,
            stderr=log,
            env=environment(HPS_TOKEN=self.worker_token),
        )
        self.workers.append(worker)
        return worker


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def service(tmp_path: Path, database_url: str, request: pytest.FixtureRequest) -> Iterator[Service]:
    """``hps serve`` on a fresh database; stops it and every worker it started afterwards.

    The database is a SQLite file, or in a module marked ``backends`` each of SQLite and
    PostgreSQL in turn (tests/postgres.py).

    Indirect parametrization adds to the service's environment, e.g.
    ``@pytest.mark.parametrize("service", [{"HPS_LEASE_SECONDS": "3"}], indirect=True)``.
    """
    port = free_port()
    database = tmp_path / "hps.db"
    log = tmp_path / "service.log"
    token_file = tmp_path / "hps.token"
    env = environment(
        HPS_DATABASE_URL=database_url,
        HPS_REAPER_INTERVAL_S="1",
        HPS_TOKEN_FILE=str(token_file),
        **getattr(request, "param", {}),
    )
    # Log level info: the access log and the service's own lines are in service.log, so that
    # tests can check what reaches the logs (never a token).
    cmd = [sys.executable, "-m", "hps", "serve", "--port", str(port), "--log-level", "info"]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    svc = Service(url, database, process, log, token_file, database_url, env=env)
    with Client(svc.url, retries=0) as probe:
        deadline = time.monotonic() + 60
        while not probe.health():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.1)
    # The token file is written before the service accepts its first connection.
    with svc.client() as admin:
        svc.worker_token = admin.create_token("e2e-workers", [Scope.WORKER]).token
    yield svc
    for worker in svc.workers:
        _stop(worker)
    _stop(svc.process)  # a test may have started the service again
