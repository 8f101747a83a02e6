"""The real service and workers of tests/e2e, for the deploy tests (Slurm, ``--processes``)."""

from tests.e2e.conftest import service  # noqa: F401  (a fixture, registered by import)
