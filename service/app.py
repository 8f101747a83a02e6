"""The application factory: ``create_app(settings)`` builds everything; import connects nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import optuna
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from service import http_errors, routes
from service.leases import Leases
from service.settings import Settings
from service.store import Store
from service.studies import Clock, Studies, utc_now

log = logging.getLogger("hps.service")


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
    studies = Studies(store, clock)
    leases = Leases(
        store,
        studies,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        clock=clock,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_reap(leases, settings.reaper_interval_s))
        try:
            yield
        finally:
            reaper.cancel()
            store.close()

    app = FastAPI(
        title="hps",
        summary="Hyperparameter search for optimizer studies: does RAdam remove warmup tuning?",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.studies = studies
    app.state.leases = leases
    http_errors.install(app)
    for router in (routes.studies, routes.trials, routes.health):
        app.include_router(router)
    return app
