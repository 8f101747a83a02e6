"""A real PostgreSQL server for the tests, and the ``database_url`` fixture over both backends.

The server is Debian's ``postgresql`` package, run on loopback from a temporary data directory:
started on first use in a session, one fresh database per test, torn down at the end. PostgreSQL
refuses to run as root, so as root it runs as the ``postgres`` system user the package creates.
Where the binaries are missing, the PostgreSQL variants skip with the command that installs them.

A test module opts in to both backends with ``pytestmark = pytest.mark.backends``: its tests that
use ``database_url`` (directly or through the service fixtures) then run once on a SQLite file
and once on PostgreSQL, with ``[sqlite]`` / ``[postgresql]`` in their ids.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from hps.local import free_port
from service.store import Store

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]
MISSING = "PostgreSQL not installed: apt-get install postgresql"


def _bin_dir() -> Path | None:
    """The newest installed server's binaries (Debian keeps them off the PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_major)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


class PostgresServer:
    """One throw-away cluster: ``initdb`` with trust auth on loopback, started with ``pg_ctl``."""

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        self._root = Path(tempfile.mkdtemp(prefix="hps-pg-"))
        self._data = self._root / "data"
        self.port = free_port()
        self._names = itertools.count()
        self._template: str | None = None
        self._user: list[str] = []
        if os.geteuid() == 0:  # the server will not run as root
            self._user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self._root, "postgres")
        self._root.chmod(0o700)

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._user, *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        self._run(
            str(self._bin / "initdb"),
            "-D",
            str(self._data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        # Durability off: a test database is thrown away, and fsyncs would dominate test time.
        options = (
            f"-p {self.port} -k {self._root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=300"
        )
        log = str(self._root / "server.log")
        pg_ctl = str(self._bin / "pg_ctl")
        # Under pytest-xdist each worker starts its own server: a port picked free may be taken
        # by another before this one binds it, so try a fresh one.
        for attempt in range(3):
            try:
                self._run(pg_ctl, "-D", str(self._data), "-o", options, "-l", log, "-w", "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                options = options.replace(f"-p {self.port} ", f"-p {(port := free_port())} ")
                self.port = port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, *, empty: bool = False) -> str:
        """A new database with hps's and Optuna's tables (``empty``: without); returns its URL.

        The tables are cloned from a template made once: creating Optuna's tables and running
        the migrations costs about half a second a database, cloning a tenth of that.
        """
        if not empty and self._template is None:
            self._template = self._create(None)
            Store(self.url(self._template)).close()
        return self.url(self._create(None if empty else self._template))

    def _create(self, template: str | None) -> str:
        name = f"hps_test_{next(self._names)}"
        clone = "" if template is None else f" TEMPLATE {template}"
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}{clone}"))
        engine.dispose()
        return name

    def stop(self) -> None:
        try:
            self._run(str(self._bin / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server, started on first use; skips where none is installed."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip(MISSING)
    server = PostgresServer(bin_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's PostgreSQL server."""
    return postgres_server.create_database()


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test's database: a SQLite file in ``tmp_path``, or (when parametrized, see
    ``pytest_generate_tests``) a fresh PostgreSQL database."""
    backend = getattr(request, "param", "sqlite")
    if backend == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'hps.db'}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run tests marked ``backends`` that use ``database_url`` on both backends."""
    if "database_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "backends"
    ):
        metafunc.parametrize("database_url", BACKENDS, indirect=True)


def query(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """Read the database at ``url`` directly, not through the service (``:name`` parameters)."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(statement), params)]
    finally:
        engine.dispose()
