"""A throwaway hps on this machine: the service on a temporary SQLite file, and local workers.

``hps gate --local`` runs a study this way in CI: nothing to set up beforehand, nothing left
behind. The service writes its admin token into the temporary directory; the workers read it
from there, like any local client.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hps.client import Client

HPS = [sys.executable, "-m", "hps"]


class LocalServiceError(Exception):
    """The local service did not come up; the message says why and where its log is."""


@dataclass(frozen=True)
class LocalService:
    url: str
    token: str
    directory: Path
    server: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]

    def check(self) -> None:
        """Raise LocalServiceError when the service, or every worker, has exited."""
        if self.server.poll() is not None:
            raise LocalServiceError(f"the service exited ({self.server.returncode}){self._tail()}")
        if self.workers and all(w.poll() is not None for w in self.workers):
            codes = ", ".join(str(w.returncode) for w in self.workers)
            raise LocalServiceError(f"every worker exited (codes {codes}){self._tail()}")

    def _tail(self) -> str:
        log = (self.directory / "hps.log").read_text(errors="replace")[-2000:]
        return f"; the log ends:\n{log}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def await_health(url: str, server: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Return once ``url`` answers its health check; raise if the server exits or never does."""
    with Client(url, retries=0) as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise LocalServiceError(
                    f"the service exited with code {server.returncode} (port in use?)"
                )
            if client.health():
                return
            time.sleep(0.2)
    raise LocalServiceError(f"the service did not answer at {url} within {timeout_s:g} s")


def stop(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each child, newest first, so workers report their trial while the API still runs."""
    for child in reversed(children):
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@contextlib.contextmanager
def local_service(*, workers: int, threads: int | None = None) -> Iterator[LocalService]:
    """Start the service and ``workers`` worker processes; stop them all and delete the files."""
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    with tempfile.TemporaryDirectory(prefix="hps-local-") as tmp:
        directory = Path(tmp)
        token_file = directory / "hps.token"
        env = {
            **os.environ,
            "HPS_DATABASE_URL": f"sqlite:///{directory / 'hps.db'}",
            "HPS_TOKEN_FILE": str(token_file),
        }
        env.pop("HPS_TOKEN", None)  # the local service's own token, not one for another service
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (directory / "hps.log").open("wb")
        children: list[subprocess.Popen[bytes]] = []
        try:
            serve = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
            server = subprocess.Popen(serve, env=env, cwd=tmp, stdout=log, stderr=log)
            children.append(server)
            try:
                await_health(url, server)
            except LocalServiceError as error:
                tail = (directory / "hps.log").read_text(errors="replace")[-2000:]
                raise LocalServiceError(f"{error}; its log ends:\n{tail}") from None
            worker = [*HPS, "worker", "--url", url, "--threads", str(threads), "--poll", "0.5"]
            started = [
                subprocess.Popen(worker, env=env, stdout=log, stderr=log) for _ in range(workers)
            ]
            children += started
            yield LocalService(url, token_file.read_text().strip(), directory, server, started)
        finally:
            stop(children)
            log.close()
