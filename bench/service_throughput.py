"""Service throughput: trial lifecycles per second, hps against raw Optuna and Optuna's gRPC proxy.

A lifecycle is what a worker does for one trial: get it, report 5 intermediate values, finish
it. The sides, each on its own fresh database of the backend, all set up before the first slice:

    raw      raw Optuna in this process: ask (+ 2 suggests) -> 5 x report -> tell, on a shared
             ``optuna.Study``, ``--clients`` threads (the baseline of every ratio)
    hps      the real ``hps serve`` (uvicorn, one process) over HTTP: lease one trial, 5 reports,
             complete; ``--clients`` threads, each with its own ``hps.client.Client``
    hps-b8   the same service with batches, as a worker that stacks ``--batch`` trials uses
             it: ``POST /v1/lease-batches`` of ``--batch`` trials, 5 ``POST /v1/reports`` (one
             per step, every trial's value in it), one ``POST /v1/completions`` for the batch
    grpc     Optuna's own scale-out answer (SQLite only): ``run_grpc_proxy_server`` over
             ``get_storage(url)`` in its own process, ``--clients`` threads each with its own
             ``GrpcStorageProxy`` doing what ``raw`` does (needs ``pip install -e ".[bench]"``)

The sides take turns in short slices (``--rounds`` rounds of ``--seconds`` each, the order
reversed every other round: raw hps grpc, grpc hps raw, ...), so that whatever else loads the
machine hits every side alike. Each ratio is a side's rate over raw Optuna's in the same round;
the summary is the median over rounds. A first, uncounted slice per side warms it up.

``--backend`` picks SQLite (fresh files), PostgreSQL (fresh databases on one server) or both,
SQLite first. The PostgreSQL server is, by default, a throw-away local one started the way the
tests start theirs (``tests/postgres.py``: loopback, trust auth, fsync and synchronous commit
off, so its absolute numbers are not a durable server's). ``--postgres-url`` uses an existing
server instead: the bench creates its databases there (the role needs CREATEDB) and drops them.
Without either, the PostgreSQL variant is skipped with the command that installs it.

Issue 13's targets: on SQLite hps >= 1.5x raw at one trial per lease and >= 3x with batch leases
of 8, and ahead of the gRPC proxy; on PostgreSQL >= 1x.

    python bench/service_throughput.py [--rounds 8] [--seconds 5] [--clients 4] [--backend both]
    python bench/service_throughput.py --backend postgresql \\
        --postgres-url postgresql+psycopg://user:password@host:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import URL, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError

from api_schemas import IntermediateReport, LeaseRequest, SeedResult, TrialResult
from api_schemas.tokens import Scope
from api_schemas.trials import (
    BatchCompletion,
    BatchLeaseRequest,
    BatchReport,
    BatchReportItem,
    BatchResultItem,
)
from hps.client import Client
from hps.local import HPS, await_health, free_port, stop

SPACE = {
    "optimizer": {"type": "categorical", "choices": ["adam", "radam"]},
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}
REPORTS = 5
ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"sqlite": {"hps": 1.5, "hps-b8": 3.0}, "postgresql": {"hps": 1.0, "hps-b8": 1.0}}
"""Issue 13: hps's lifecycles/s over raw Optuna's, per backend and side."""

Lifecycle = Callable[[int], int]
"""One client's step: given the client's index, do it and return the lifecycles it finished."""


class PostgresUnavailable(Exception):
    """No PostgreSQL to run on; the message says why and what to install."""


@dataclass
class Side:
    """One contender: a name and the step its client threads repeat."""

    name: str
    step: Lifecycle
    rates: list[float] = field(default_factory=list)


def run_slice(clients: int, seconds: float, step: Lifecycle) -> float:
    """Lifecycles/s of ``step`` repeated on ``clients`` threads for ``seconds``."""
    done = [0] * clients
    errors: list[BaseException] = []
    stop_at = time.monotonic() + seconds

    def loop(i: int) -> None:
        try:
            while time.monotonic() < stop_at:
                done[i] += step(i)
        except BaseException as error:  # report it after the slice; never hide a failure
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(done) / (time.monotonic() - start)


def optuna_lifecycle(study: optuna.Study) -> None:
    """Raw Optuna's lifecycle: what a worker does with the study in its own process."""
    trial = study.ask()
    trial.suggest_categorical("optimizer", ["adam", "radam"])
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    for step in range(REPORTS):
        trial.report(1.0 / (step + 1), step)
    study.tell(trial, 0.5)


def _wal(dbapi_connection: Any, _record: Any) -> None:
    """The SQLite settings the service gives its file (``service.store.make_engine``)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@contextlib.contextmanager
def raw_side(database_url: str, *, wal: bool = False) -> Iterator[Side]:
    """Raw Optuna on the (fresh) database at ``database_url``, one study shared by threads;
    with ``wal``, on SQLite in WAL mode without a sync per commit, as the service runs it."""
    storage = optuna.storages.RDBStorage(database_url)
    if wal:
        event.listen(storage.engine, "connect", _wal)
        storage.engine.dispose()  # the connections opened so far lack the pragmas
    try:
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))

        def step(_: int) -> int:
            optuna_lifecycle(study)
            return 1

        yield Side("raw-wal" if wal else "raw", step)
    finally:
        # Closes its connections, so that a PostgreSQL database can be dropped afterwards.
        storage.engine.dispose()


GRPC_SERVER = (
    "import sys, optuna\n"
    "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
    "storage = optuna.storages.get_storage(sys.argv[1])\n"
    "optuna.storages.run_grpc_proxy_server(storage, host='127.0.0.1', port=int(sys.argv[2]))\n"
)
"""The proxy as its documentation runs it: ``get_storage`` (RDBStorage with Optuna's cache)."""


@contextlib.contextmanager
def grpc_side(database_url: str, clients: int) -> Iterator[Side]:
    """Optuna's gRPC storage proxy in its own process on ``database_url``; one
    ``GrpcStorageProxy`` per client thread, as separate worker processes would each hold."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", GRPC_SERVER, database_url, str(port)])
    try:
        proxies = [optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)]
        proxies[0].wait_server_ready(timeout=60)
        name = f"grpc-{secrets.token_hex(4)}"
        optuna.create_study(
            study_name=name, storage=proxies[0], sampler=optuna.samplers.RandomSampler(seed=0)
        )
        proxies += [
            optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
            for _ in range(clients - 1)
        ]
        studies = [
            optuna.load_study(
                study_name=name, storage=p, sampler=optuna.samplers.RandomSampler(seed=i)
            )
            for i, p in enumerate(proxies)
        ]

        def step(i: int) -> int:
            optuna_lifecycle(studies[i])
            return 1

        yield Side("grpc", step)
        for proxy in proxies:
            proxy.close()
    finally:
        stop([server])


@contextlib.contextmanager
def hps_service(database_url: str) -> Iterator[tuple[str, str]]:
    """The real ``hps serve`` on the (fresh) database at ``database_url`` with one random
    study; yields its URL and a worker token."""
    with tempfile.TemporaryDirectory(prefix="hps-throughput-") as tmp:
        directory = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "HPS_DATABASE_URL": database_url,
            "HPS_TOKEN_FILE": str(directory / "hps.token"),
        }
        env.pop("HPS_TOKEN", None)
        serve = [*HPS, "serve", "--port", str(port), "--log-level", "warning"]
        server = subprocess.Popen(serve, env=env, cwd=directory)
        try:
            await_health(url, server)
            with Client(url, token=(directory / "hps.token").read_text().strip()) as admin:
                admin.submit(
                    {
                        "name": "throughput",
                        "workload": {"name": "postln_transformer"},
                        "n_trials": 100_000,
                        "seeds_per_trial": 1,
                        "sampler": {"type": "random", "seed": 0},
                        "search_space": SPACE,
                    }
                )
                token = admin.create_token("bench", [Scope.WORKER]).token
            yield url, token
        finally:
            stop([server])


def _reports(client: Client, trial_id: int, lease_token: str) -> list[SeedResult]:
    for step in range(REPORTS):
        report = IntermediateReport(lease_token=lease_token, step=step, value=1.0 / (step + 1))
        client.report(trial_id, report)
    return [SeedResult(seed=0, loss=0.5, diverged=False, steps=REPORTS)]


@contextlib.contextmanager
def hps_side(database_url: str, clients: int, batch: int) -> Iterator[Side]:
    """hps over HTTP: one trial per lease (``batch`` 1) or batch leases of ``batch``."""
    with hps_service(database_url) as (url, token), contextlib.ExitStack() as stack:
        pool = [stack.enter_context(Client(url, token=token)) for _ in range(clients)]

        def single(i: int) -> int:
            client = pool[i]
            assignment = client.lease(LeaseRequest(worker_id=f"bench-{i}"))
            assert assignment is not None
            seeds = _reports(client, assignment.trial_id, assignment.lease_token)
            result = TrialResult(lease_token=assignment.lease_token, state="completed", seeds=seeds)
            client.complete(assignment.trial_id, result)
            return 1

        def batched(i: int) -> int:
            client = pool[i]
            leased = client.lease_batch(BatchLeaseRequest(worker_id=f"bench-{i}", max_trials=batch))
            assert leased is not None and len(leased.trials) == batch
            for step in range(REPORTS):  # the batch trains as one stack: one report per step
                reports = [
                    BatchReportItem(
                        trial_id=a.trial_id,
                        lease_token=a.lease_token,
                        step=step,
                        value=1.0 / (step + 1),
                    )
                    for a in leased.trials
                ]
                reported = client.report_batch(BatchReport(reports=reports))
                assert all(outcome.status == 200 for outcome in reported.results), reported
            seeds = [SeedResult(seed=0, loss=0.5, diverged=False, steps=REPORTS)]
            results = [
                BatchResultItem(
                    trial_id=a.trial_id, lease_token=a.lease_token, state="completed", seeds=seeds
                )
                for a in leased.trials
            ]
            answer = client.complete_batch(BatchCompletion(results=results))
            assert all(outcome.status == 200 for outcome in answer.results), answer
            return len(results)

        yield Side("hps" if batch == 1 else f"hps-b{batch}", single if batch == 1 else batched)


def interleave(sides: list[Side], clients: int, rounds: int, seconds: float) -> None:
    """Warm every side up, then ``rounds`` rounds of one slice per side, ABC then CBA."""
    for side in sides:
        run_slice(clients, min(seconds, 2.0), side.step)
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            side.rates.append(run_slice(clients, seconds, side.step))
        load = os.getloadavg()[0]
        cells = "  ".join(f"{s.name} {s.rates[-1]:6.1f}" for s in sides)
        print(f"  round {r + 1}: {cells} /s  (load {load:.1f})", flush=True)


def summarise(backend: str, sides: list[Side]) -> None:
    """Per-round ratios of each side to each baseline and their medians, against the targets."""
    by_name = {s.name: s for s in sides}
    medians = ", ".join(f"{s.name} {statistics.median(s.rates):.1f}" for s in sides)
    print(f"{backend}: median lifecycles/s {medians}")
    for side in sides:
        for base in ("raw", "raw-wal", "grpc"):
            if side.name == base or base not in by_name or side.name.startswith("raw"):
                continue
            if base == "grpc" and not side.name.startswith("hps"):
                continue
            rates = zip(side.rates, by_name[base].rates, strict=True)
            ratios = [ours / theirs for ours, theirs in rates]
            target = TARGETS[backend].get(side.name) if base == "raw" else None
            wanted = f"  (target >= {target:g})" if target else ""
            wanted = "  (target > 1)" if base == "grpc" else wanted
            per_round = " ".join(f"{x:.2f}" for x in ratios)
            print(
                f"  {side.name} / {base}: median {statistics.median(ratios):.2f}{wanted}; "
                f"per round {per_round}"
            )
    print(flush=True)


def grpc_available() -> bool:
    return importlib.util.find_spec("grpc") is not None


def run_sqlite(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = f"sqlite:///{Path(tmp)}/{{}}.db".format
        sides = [stack.enter_context(raw_side(url("raw")))]
        sides.append(stack.enter_context(raw_side(url("raw-wal"), wal=True)))
        sides.append(stack.enter_context(hps_side(url("hps"), args.clients, 1)))
        if args.batch > 1:
            sides.append(stack.enter_context(hps_side(url("hps-b"), args.clients, args.batch)))
        if grpc_available():
            sides.append(stack.enter_context(grpc_side(url("grpc"), args.clients)))
        else:
            print('gRPC proxy side skipped: pip install -e ".[bench]" (grpcio, protobuf)')
        print(f"SQLite: {', '.join(s.name for s in sides)}", flush=True)
        interleave(sides, args.clients, args.rounds, args.seconds)
    summarise("sqlite", sides)


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


def run_postgresql(args: argparse.Namespace) -> None:
    """Every side on one PostgreSQL server; raises ``PostgresUnavailable`` if there is none."""
    with contextlib.ExitStack() as stack:
        admin_url = args.postgres_url or stack.enter_context(local_postgres())
        where = "existing server" if args.postgres_url else "throw-away local server"
        print(f"PostgreSQL: {where}, {describe(admin_url)}", flush=True)
        raw_url = stack.enter_context(fresh_database(admin_url, "raw"))
        sides = [stack.enter_context(raw_side(raw_url))]
        hps_url = stack.enter_context(fresh_database(admin_url, "hps"))
        sides.append(stack.enter_context(hps_side(hps_url, args.clients, 1)))
        if args.batch > 1:
            batch_url = stack.enter_context(fresh_database(admin_url, "hpsb"))
            sides.append(stack.enter_context(hps_side(batch_url, args.clients, args.batch)))
        print(f"PostgreSQL: {', '.join(s.name for s in sides)}", flush=True)
        interleave(sides, args.clients, args.rounds, args.seconds)
    summarise("postgresql", sides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="slices per side")
    parser.add_argument("--seconds", type=float, default=5.0, help="one slice of one side")
    parser.add_argument("--clients", type=int, default=4, help="concurrent workers / threads")
    parser.add_argument("--batch", type=int, default=8, help="trials per batch lease; 1: none")
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
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"{args.clients} clients; {args.rounds} rounds of {args.seconds:g} s per side; a "
        f"lifecycle is get + {REPORTS} reports + finish; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if args.backend in ("sqlite", "both"):
        run_sqlite(args)
    if args.backend in ("postgresql", "both"):
        try:
            run_postgresql(args)
        except PostgresUnavailable as error:
            if args.backend == "postgresql":
                sys.exit(f"PostgreSQL variant not run: {error}")
            print(f"PostgreSQL variant skipped: {error} (or pass --postgres-url)")


if __name__ == "__main__":
    main()
