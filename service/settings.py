"""Service settings, read from ``HPS_*`` environment variables (or passed in by tests)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from api_schemas.studies import MAX_GRID_CELLS, MAX_SEEDS_PER_TRIAL
from api_schemas.tokens import DEFAULT_TOKEN_FILE

MIB = 1024 * 1024


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class Settings(BaseSettings):
    """Everything the service needs to start. ``create_app(Settings(...))`` builds from these.

    Unsafe combinations are refused here, before anything starts: auth off on an address other
    machines can reach is one.
    """

    model_config = SettingsConfigDict(env_prefix="HPS_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./hps.db",
        description="SQLAlchemy URL; the embedded default is a SQLite file in the working dir",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    lease_seconds: float = Field(
        default=120.0, gt=0, description="a lease not renewed (report) for this long expires"
    )
    reaper_interval_s: float = Field(default=5.0, gt=0, description="how often leases are checked")
    max_attempts: int = Field(
        default=3, ge=1, description="runs of one parameter set when workers are lost"
    )
    auth: bool = Field(
        default=True, description="require bearer tokens; may be off on a loopback host only"
    )
    token_file: Path = Field(
        default=Path(DEFAULT_TOKEN_FILE),
        description="where the service keeps a live admin token (mode 0600) for local clients",
    )
    # 1 MiB: the largest legitimate body, a study spec with a big categorical grid, is a few
    # tens of KiB; anything near this size is a mistake or an attack.
    max_body_bytes: int = Field(default=MIB, ge=1024, description="larger bodies get 413")
    # The operator's limits on one study, checked at submit; the defaults are the schema's own
    # caps, so a service is only ever tighter than the contract.
    max_trials: int = Field(default=MAX_GRID_CELLS, ge=1, le=MAX_GRID_CELLS)
    max_grid_cells: int = Field(
        default=MAX_GRID_CELLS, ge=1, le=MAX_GRID_CELLS, description="trials of a grid study"
    )
    max_seeds_per_trial: int = Field(default=MAX_SEEDS_PER_TRIAL, ge=1, le=MAX_SEEDS_PER_TRIAL)
    # Workers report every few seconds to a minute; uvicorn's default (5 s) closed most of
    # their connections between two requests, and a new connection per request cost the service
    # CPU (BENCHMARKS.md, "Scale"). Above 60 s, the idle timeout of common load balancers, so
    # that the balancer, not the service, closes an idle connection first.
    keep_alive_s: int = Field(
        default=65, ge=1, description="seconds an idle HTTP connection is kept open"
    )
    # FastAPI's own OpenTelemetry spans and metrics look up the global providers on every
    # request, configured or not: 8 % of the service's CPU at 1,000 workers (BENCHMARKS.md,
    # "Scale"). Off unless asked for; then they go to the providers the process configures.
    telemetry: bool = Field(
        default=False, description="FastAPI's OpenTelemetry spans, metrics and logs"
    )
    # Analyses and reports take seconds of CPU each; more at once would starve the leases.
    analysis_concurrency: int = Field(
        default=2, ge=1, le=64, description="analyses and reports computed at once (503 beyond)"
    )

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> Self:
        if not self.auth and not is_loopback(self.host):
            raise ValueError(
                f"refusing to start without authentication on {self.host}, an address other "
                "machines can reach: HPS_AUTH=false (--no-auth) is allowed only with "
                "HPS_HOST=127.0.0.1 (or ::1, localhost). Keep auth on, or listen on loopback."
            )
        return self
