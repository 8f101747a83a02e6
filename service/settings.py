"""Service settings, read from ``HPS_*`` environment variables (or passed in by tests)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the service needs to start. ``create_app(Settings(...))`` builds from these."""

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
