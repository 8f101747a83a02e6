"""The real service under uvicorn, in a thread of the test process, on a temporary SQLite file
(or on the database a test passes, e.g. PostgreSQL from tests/postgres.py).

For tests that need real HTTP and real concurrency (the load test, workers against a service)
but not separate processes. Auth is on, as by default; ``mint`` makes tokens with the admin one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from api_schemas.tokens import Scope
from hps.client import Client
from hps.local import free_port
from service.app import create_app
from service.settings import Settings


class LogRecords(logging.Handler):
    """Keeps every record the service (and uvicorn) logs while the server runs."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def text(self) -> str:
        """Every record formatted with its traceback, one after the other."""
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        with self._lock_records:
            return "\n".join(formatter.format(r) for r in self.records)


@dataclass
class LiveService:
    url: str
    database: Path
    admin_token: str
    settings: Settings
    log: LogRecords = field(default_factory=LogRecords)

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def client(self, token: str | None = None, **options: Any) -> Client:
        """A client with ``token``, by default the admin token."""
        return Client(self.url, token=token or self.admin_token, **options)

    def mint(self, *scopes: Scope, name: str = "test") -> str:
        """A new token with ``scopes``; returns its secret."""
        with self.client() as admin:
            return admin.create_token(name, list(scopes)).token


@contextmanager
def live_service(
    directory: Path, database_url: str | None = None, **settings: Any
) -> Iterator[LiveService]:
    """Serve ``create_app(Settings(**settings))`` on a free port until the block ends, on
    ``database_url`` or else a SQLite file in ``directory``."""
    port = free_port()
    database = directory / "hps.db"
    config = Settings(
        database_url=database_url or f"sqlite:///{database}",
        token_file=directory / "hps.token",
        port=port,
        **settings,
    )
    app = create_app(config)
    records = LogRecords()
    loggers = [logging.getLogger(name) for name in ("hps", "uvicorn", "sqlalchemy", "optuna")]
    for logger in loggers:
        logger.addHandler(records)
    # log_config=None: leave the test process's logging alone (pytest captures it).
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the server failed to start"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        token = config.token_file.read_text().strip()
        yield LiveService(f"http://127.0.0.1:{port}", database, token, config, records)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for logger in loggers:
            logger.removeHandler(records)
