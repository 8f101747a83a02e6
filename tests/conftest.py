"""Fixtures for every test: the database backends (tests/postgres.py), a headless browser
(tests/browser.py)."""

from tests.browser import browser  # noqa: F401  (a fixture, registered by import)
from tests.postgres import (  # noqa: F401  (fixtures and the hook, registered by import)
    database_url,
    postgres_server,
    postgres_url,
    pytest_generate_tests,
)
