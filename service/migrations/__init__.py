"""hps's database migrations (Alembic), for hps's own tables only; see service/store.py.

A new revision goes beside ``versions/0001_initial.py`` (the
template is ``script.py.mako``), and check it with tests/service/test_migrations.py.
"""

VERSION_TABLE = "hps_alembic_version"
"""Alembic's version table for hps's tables; Optuna's own is ``alembic_version``."""
