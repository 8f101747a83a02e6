"""The hps service: FastAPI routes over a domain layer over Optuna and SQLAlchemy."""

from service.app import create_app
from service.settings import Settings

__all__ = ["Settings", "create_app"]
