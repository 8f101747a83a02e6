"""The application factory: ``create_app(settings)`` builds everything; import connects nothing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

import optuna
from fastapi import APIRouter, Depends, FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.concurrency import run_in_threadpool

from api_schemas.tokens import Scope
from service import analysis_routes, dashboard, http_errors, notes, routes
from service.auth import Require
from service.leases import Leases
from service.limits import BodySizeLimit, SpecLimits
from service.reports import Reports
from service.settings import Settings
from service.store import Store
from service.studies import Clock, Studies, utc_now
from service.tokens import Tokens

log = logging.getLogger("hps.service")

# Who may call what. Every router is mounted from this table, so none goes without a check (and
# tests/service/test_auth_matrix.py fails on any route that answers without a token).
ROUTERS: list[tuple[APIRouter, Require | None]] = [
    (routes.studies, Require(Scope.READ, writes=Scope.SUBMIT)),
    (routes.trials, Require(Scope.WORKER)),
    (routes.tokens, Require(Scope.ADMIN)),
    (analysis_routes.router, Require(Scope.READ, cookie=True)),  # the note's figure, too
    (routes.health, None),  # public: load balancers and `hps up` probe it
    (dashboard.login, None),  # public: the form checks the token it is given
]


TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


async def _reap(leases: Leases, interval_s: float) -> None:
    """Expire lost workers' leases even when no worker asks for work."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            expired = await run_in_threadpool(leases.expire)
            if expired:
                log.info("expired %d lease(s)", expired)
        except Exception:  # keep reaping: one bad pass must not stop the next
            log.exception("lease reaper pass failed")


def create_app(settings: Settings | None = None, *, clock: Clock = utc_now) -> FastAPI:
    """Build the service on ``settings`` (read from ``HPS_*`` variables when omitted)."""
    settings = settings or Settings()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = Store(settings.database_url)
    studies = Studies(
        store,
        clock,
        limits=SpecLimits(
            max_trials=settings.max_trials,
            max_grid_cells=settings.max_grid_cells,
            max_seeds_per_trial=settings.max_seeds_per_trial,
        ),
    )
    tokens = Tokens(store, clock)
    leases = Leases(
        store,
        studies,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        clock=clock,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.auth:
            tokens.ensure_admin_file(settings.token_file)
        # What the service holds from now on (Optuna, SQLAlchemy, pydantic, FastAPI: several
        # hundred thousand objects) leaves the collector's sight: a full collection walked it
        # all with the event loop stopped, and set every request's p99 at 1,000 workers
        # (235 ms, 31 ms after this; BENCHMARKS.md, "Scale").
        gc.collect()
        gc.freeze()
        reaper = asyncio.create_task(_reap(leases, settings.reaper_interval_s))
        # A finished study's answer goes into its dashboard note (service.notes).
        noter = asyncio.create_task(notes.watch(app.state.notes, settings.reaper_interval_s))
        try:
            yield
        finally:
            reaper.cancel()
            noter.cancel()
            store.close()

    app = FastAPI(
        title="hps",
        summary="Hyperparameter search for optimizer studies: does RAdam remove warmup tuning?",
        version="0.1.0",
        lifespan=lifespan,
        telemetry=None if settings.telemetry else TELEMETRY_OFF,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.studies = studies
    app.state.leases = leases
    app.state.tokens = tokens
    app.state.reports = reports = Reports(studies, concurrency=settings.analysis_concurrency)
    app.state.notes = notes.Notes(studies, reports)
    http_errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for router, check in ROUTERS:
        app.include_router(
            router,
            dependencies=[] if check is None else [Depends(check)],
            responses=http_errors.documented(authenticated=check is not None),
        )
    # After the routers, so that /dashboard/login is theirs; guarded by the mounts themselves.
    dashboard.mount(app, store.optuna_storage)
    return app
