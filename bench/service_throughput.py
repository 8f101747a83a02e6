"""Service throughput: full trial lifecycles per second through hps vs raw Optuna, per backend.

A lifecycle is what a worker does for one trial: lease, report 5 intermediate values, complete.
hps: the real ``hps serve`` (uvicorn, one process) on a fresh database, driven over HTTP by
``--clients`` threads, each with its own connection pool and worker token. The baseline: raw
Optuna in this process on another fresh database of the same backend, ask -> 5 x report -> tell,
with the same search space, by the same number of threads. Both run for ``--seconds`` in this
invocation, so each backend's ratio compares like with like on whatever machine runs it (the
issue's target: >= 3x raw).

``--backend`` picks SQLite (two fresh files), PostgreSQL (two fresh databases on one server:
raw Optuna's ``RDBStorage`` and the service's ``HPS_DATABASE_URL``, both ``postgresql+psycopg``)
or both, SQLite first. The PostgreSQL server is, by default, a throw-away local one started the
way the tests start theirs (``tests/postgres.py``: loopback, trust auth, fsync and synchronous
commit off, so its absolute numbers are not a durable server's; it runs as the ``postgres``
user when this runs as root). ``--postgres-url`` uses an existing server instead: the bench
creates its two databases there (the role needs CREATEDB) and drops them at the end. Without
``--postgres-url`` and without PostgreSQL installed, the PostgreSQL variant is skipped with the
command that installs it (an error with ``--backend postgresql``).

    python bench/service_throughput.py [--seconds 20] [--clients 4] [--backend both]
    python bench/service_throughput.py --backend postgresql \\
        --postgres-url postgresql+psycopg://user:password@host:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from sqlalchemy import URL, create_engine, make_url, text
from sqlalchemy.exc import ArgumentError

from api_schemas import IntermediateReport, LeaseRequest, SeedResult, TrialResult
from api_schemas.tokens import Scope
from hps.client import Client
from hps.local import HPS, await_health, free_port, stop

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}
REPORTS = 5
ROOT = Path(__file__).resolve().parent.parent


class PostgresUnavailable(Exception):
    """No PostgreSQL to run on; the message says why and what to install."""


def _run_threads(clients: int, seconds: float, lifecycle: Callable[[], None]) -> tuple[int, float]:
    """Run ``lifecycle`` in a loop on ``clients`` threads; (lifecycles done, seconds)."""
    done = [0] * clients
    errors: list[BaseException] = []
    stop_at = time.monotonic() + seconds

    def loop(i: int) -> None:
        try:
            while time.monotonic() < stop_at:
                lifecycle()
                done[i] += 1
        except BaseException as error:  # report it after the run; never hide a failure
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(done), time.monotonic() - start


def raw_optuna(database_url: str, clients: int, seconds: float) -> float:
    """Lifecycles/s of raw Optuna ask/report/tell on the (fresh) database at ``database_url``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(database_url)
    try:
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))

        def lifecycle() -> None:
            trial = study.ask()
            trial.suggest_categorical("optimizer", ["adam", "radam"])
            trial.suggest_float("lr", 1e-4, 1e-1, log=True)
            for step in range(REPORTS):
                trial.report(1.0 / (step + 1), step)
            study.tell(trial, 0.5)

        done, elapsed = _run_threads(clients, seconds, lifecycle)
        return done / elapsed
    finally:
        # Closes its connections, so that a PostgreSQL database can be dropped afterwards.
        storage.engine.dispose()


def through_hps(database_url: str, directory: Path, clients: int, seconds: float) -> float:
    """Lifecycles/s through the real service, on the (fresh) database at ``database_url``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "HPS_DATABASE_URL": database_url,
        "HPS_TOKEN_FILE": str(directory / "hps.token"),
    }
    serve = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(serve, env=env, cwd=directory)
    try:
        await_health(url, server)
        admin = Client(url, token=(directory / "hps.token").read_text().strip())
        study = admin.submit(
            {
                "name": "throughput",
                "workload": {"name": "postln_transformer"},
                "n_trials": 100_000,
                "seeds_per_trial": 1,
                "sampler": {"type": "random", "seed": 0},
                "search_space": SPACE,
            }
        )
        worker_token = admin.create_token("bench", [Scope.WORKER]).token
        local = threading.local()

        def lifecycle() -> None:
            if not hasattr(local, "client"):
                local.client = Client(url, token=worker_token)
            client: Client = local.client
            assignment = client.lease(LeaseRequest(worker_id=threading.current_thread().name))
            assert assignment is not None and assignment.study_id == study.id
            token = assignment.lease_token
            for step in range(REPORTS):
                report = IntermediateReport(lease_token=token, step=step, value=1.0 / (step + 1))
                client.report(assignment.trial_id, report)
            seeds = [SeedResult(seed=0, loss=0.5, diverged=False, steps=REPORTS)]
            client.complete(
                assignment.trial_id,
                TrialResult(lease_token=token, state="completed", seeds=seeds),
            )

        done, elapsed = _run_threads(clients, seconds, lifecycle)
        return done / elapsed
    finally:
        stop([server])


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """A throw-away local PostgreSQL server, as the tests start it; yields its admin URL."""
    # tests.postgres lives in the checkout, not in the installed package: find it from the
    # repository root when this runs as ``python bench/service_throughput.py``.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        from tests.postgres import MISSING, PostgresServer, _bin_dir
    except ImportError as error:  # tests/postgres.py needs pytest, a dev dependency
        raise PostgresUnavailable(f"cannot import tests.postgres ({error})") from error
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable(MISSING)
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server.url()
    finally:
        server.stop()  # also removes its data directory


def _psycopg(url: str) -> URL:
    """``url`` with the driver the service uses, so that both sides use the same one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed!r}")
    return parsed.set(drivername="postgresql+psycopg")


@contextlib.contextmanager
def fresh_database(admin_url: str, side: str) -> Iterator[str]:
    """A new, empty database on ``admin_url``'s server, dropped afterwards; yields its URL."""
    url = _psycopg(admin_url)
    name = f"hps_bench_{side}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                # FORCE (PostgreSQL 13+): a connection the side left open must not keep it.
                connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    finally:
        admin.dispose()


def describe(admin_url: str) -> str:
    """The server's version and durability settings, which the absolute numbers depend on."""
    engine = create_engine(_psycopg(admin_url))
    try:
        with engine.connect() as connection:
            version, fsync, commit = (
                connection.execute(text(f"SHOW {name}")).scalar_one()
                for name in ("server_version", "fsync", "synchronous_commit")
            )
    finally:
        engine.dispose()
    return f"PostgreSQL {version.split()[0]}, fsync {fsync}, synchronous_commit {commit}"


def print_result(backend: str, raw: float, ours: float) -> None:
    print(f"raw Optuna on {backend:<12}  {raw:8.1f} lifecycles/s")
    print(f"hps over HTTP, {backend:<11}  {ours:8.1f} lifecycles/s")
    print(f"ratio hps / raw Optuna      {ours / raw:8.2f}  (target >= 3)", flush=True)


def run_sqlite(clients: int, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_optuna(f"sqlite:///{Path(tmp) / 'raw.db'}", clients, seconds)
        ours = through_hps(f"sqlite:///{Path(tmp) / 'hps.db'}", Path(tmp), clients, seconds)
    print_result("SQLite", raw, ours)


def run_postgresql(postgres_url: str | None, clients: int, seconds: float) -> None:
    """Both sides on one PostgreSQL server; raises ``PostgresUnavailable`` if there is none."""
    with contextlib.ExitStack() as stack:
        admin_url = postgres_url or stack.enter_context(local_postgres())
        where = "existing server" if postgres_url else "throw-away local server"
        print(f"PostgreSQL: {where}, {describe(admin_url)}", flush=True)
        with fresh_database(admin_url, "raw") as database_url:
            raw = raw_optuna(database_url, clients, seconds)
        with fresh_database(admin_url, "hps") as database_url, tempfile.TemporaryDirectory() as tmp:
            ours = through_hps(database_url, Path(tmp), clients, seconds)
    print_result("PostgreSQL", raw, ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per side and backend")
    parser.add_argument("--clients", type=int, default=4, help="concurrent workers / threads")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql", "both"],
        default="both",
        help="database(s) to measure on; both: SQLite, then PostgreSQL (default)",
    )
    parser.add_argument(
        "--postgres-url",
        metavar="URL",
        help="an existing PostgreSQL server to create the bench's databases on "
        "(default: start a throw-away local one)",
    )
    args = parser.parse_args()
    if args.postgres_url is not None:  # before minutes of SQLite, not after
        if args.backend == "sqlite":
            parser.error("--postgres-url needs --backend postgresql or both")
        try:
            _psycopg(args.postgres_url)
        except (ValueError, ArgumentError) as error:
            parser.error(f"--postgres-url: {error}")
    lifecycle = f"lease + {REPORTS} reports + complete"
    print(f"{args.clients} clients, {args.seconds:g} s each side; a lifecycle is {lifecycle}")
    if args.backend in ("sqlite", "both"):
        run_sqlite(args.clients, args.seconds)
    if args.backend in ("postgresql", "both"):
        try:
            run_postgresql(args.postgres_url, args.clients, args.seconds)
        except PostgresUnavailable as error:
            if args.backend == "postgresql":
                sys.exit(f"PostgreSQL variant not run: {error}")
            print(f"PostgreSQL variant skipped: {error} (or pass --postgres-url)")


if __name__ == "__main__":
    main()
