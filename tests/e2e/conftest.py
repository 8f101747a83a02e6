"""Real processes: the hps service under uvicorn on a free port, and hps worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hps.client import Client

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    database: Path
    process: subprocess.Popen[bytes]
    log: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database}"

    def client(self) -> Client:
        return Client(self.url, retries=2)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.log.with_name(f"worker{len(self.workers)}.log").open("wb")
        cmd = [sys.executable, "-m", "hps", "worker", "--url", self.url, "--threads", "1"]
        worker = subprocess.Popen([*cmd, "--poll", "0.2", *args], stdout=log, stderr=log)
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
def service(tmp_path: Path) -> Iterator[Service]:
    """``hps serve`` on a fresh SQLite file; stops it and every worker it started afterwards."""
    port = free_port()
    database = tmp_path / "hps.db"
    log = tmp_path / "service.log"
    env = {**os.environ, "HPS_DATABASE_URL": f"sqlite:///{database}", "HPS_REAPER_INTERVAL_S": "1"}
    cmd = [sys.executable, "-m", "hps", "serve", "--port", str(port), "--log-level", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=tmp_path)
    svc = Service(f"http://127.0.0.1:{port}", database, process, log)
    with svc.client() as client:
        deadline = time.monotonic() + 60
        while not client.health():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.1)
    yield svc
    for worker in svc.workers:
        _stop(worker)
    _stop(process)
