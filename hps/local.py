"""An hps on this machine: ``hps serve`` and local ``hps worker`` processes, started together
and stopped together.

``launch`` is the one launcher: ``hps up`` runs it on the user's port and database, and
``local_service`` (``hps gate --local``, for CI) runs it on a free port and a temporary SQLite
file, with nothing to set up beforehand and nothing left behind. Either way the service writes
its admin token to its token file and the workers read it from there, like any local client;
when the block ends, normally, on an error or on Ctrl-C, every process is stopped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from api_schemas.tokens import DEFAULT_TOKEN_FILE
from hps.client import Client
from hps.credentials import TOKEN_FILE_ENV

HPS = [sys.executable, "-m", "hps"]


class LocalServiceError(Exception):
    """The local service did not come up, or stopped; the message says why (and, with a log,
    how the log ends)."""


@dataclass(frozen=True)
class LocalService:
    """A running service and its workers, as ``launch`` started them."""

    url: str
    token_file: Path
    server: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]]
    threads: int
    """Each worker's torch threads."""
    log: Path | None = None
    """Where the service and workers write their output; None: this process's stdout/stderr."""

    @property
    def token(self) -> str:
        """The admin token the service wrote on start."""
        return self.token_file.read_text().strip()

    def check(self) -> None:
        """Raise LocalServiceError when the service, or every worker, has exited."""
        if self.server.poll() is not None:
            raise LocalServiceError(
                f"the service exited ({self.server.returncode}){_tail(self.log)}"
            )
        if self.workers and all(w.poll() is not None for w in self.workers):
            codes = ", ".join(str(w.returncode) for w in self.workers)
            raise LocalServiceError(f"every worker exited (codes {codes}){_tail(self.log)}")


def _tail(log: Path | None) -> str:
    """How ``log`` ends, to append to a message ("" without a log file)."""
    if log is None:
        return ""
    return f"; the log ends:\n{log.read_text(errors='replace')[-2000:]}"


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    """Whether something accepts connections on the loopback ``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


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


def worker_threads(workers: int) -> int:
    """Each local worker's share of this machine's cores (at least one thread)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@contextlib.contextmanager
def launch(
    *,
    port: int,
    workers: int,
    env: Mapping[str, str],
    poll_s: float,
    threads: int | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    health_timeout_s: float = 60.0,
) -> Iterator[LocalService]:
    """Start ``hps serve`` on ``port`` and, once it answers, ``workers`` workers polling every
    ``poll_s`` s with ``threads`` threads each (default: their share of the cores); stop them
    all, newest first, when the block ends, however it ends.

    ``env`` is every process's environment (``HPS_DATABASE_URL``, ``HPS_TOKEN_FILE``); ``cwd``
    their working directory (default: this one); ``log`` a file for their output (default:
    this process's). Raises LocalServiceError when the service does not come up.
    """
    threads = threads or worker_threads(workers)
    url = f"http://127.0.0.1:{port}"
    if _listening(port):
        # Checked first: another hps there would answer the health check for the new one,
        # which then fails to bind, and "hps is up" would be a lie about someone else's service.
        raise LocalServiceError(
            f"port {port} is taken: something (another hps?) already listens on it; stop it, "
            "or choose another port with --port"
        )
    token_file = Path(env.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE)
    if cwd is not None:
        token_file = cwd / token_file
    children: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as files:
        output: IO[bytes] | None = files.enter_context(log.open("ab")) if log else None
        try:
            serve = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
            server = subprocess.Popen(serve, env=env, cwd=cwd, stdout=output, stderr=output)
            children.append(server)
            try:
                await_health(url, server, health_timeout_s)
            except LocalServiceError as error:
                raise LocalServiceError(f"{error}{_tail(log)}") from None
            worker = [*HPS, "worker", "--url", url, "--threads", str(threads)]
            worker += ["--poll", f"{poll_s:g}"]
            for _ in range(workers):
                children.append(
                    subprocess.Popen(worker, env=env, cwd=cwd, stdout=output, stderr=output)
                )
            yield LocalService(url, token_file, server, children[1:], threads, log)
        finally:
            stop(children)


@contextlib.contextmanager
def local_service(*, workers: int, threads: int | None = None) -> Iterator[LocalService]:
    """``launch`` on a free port and a temporary SQLite file, with the output in a log beside
    it; the files are deleted when the block ends."""
    with tempfile.TemporaryDirectory(prefix="hps-local-") as tmp:
        directory = Path(tmp)
        env = {
            **os.environ,
            "HPS_DATABASE_URL": f"sqlite:///{directory / 'hps.db'}",
            TOKEN_FILE_ENV: str(directory / DEFAULT_TOKEN_FILE),
        }
        env.pop("HPS_TOKEN", None)  # the local service's own token, not one for another service
        with launch(
            port=free_port(),
            workers=workers,
            env=env,
            poll_s=0.5,
            threads=threads,
            cwd=directory,
            log=directory / "hps.log",
        ) as service:
            yield service
