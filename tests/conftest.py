"""Fixtures for every test: the database backends (see tests/postgres.py)."""

from tests.postgres import (  # noqa: F401  (fixtures and the hook, registered by import)
    database_url,
    postgres_server,
    postgres_url,
    pytest_generate_tests,
)
