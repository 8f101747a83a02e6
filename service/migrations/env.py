"""Alembic's environment for hps's tables.

The service runs these migrations itself (``service.store.migrate``) on a connection it passes
in ``config.attributes["connection"]``. Only hps's tables are in scope: Optuna migrates its own
tables with its own Alembic version table, and hps's is ``hps_alembic_version``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from service.migrations import VERSION_TABLE
from service.models import Base


def _hps_only(_object: object, name: str | None, type_: str, *_: object) -> bool:
    # Autogenerate must never touch (or drop) Optuna's tables beside ours.
    return type_ != "table" or (name or "").startswith("hps_")


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_object=_hps_only,
        render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run hps's migrations through service.store.migrate, with a connection")
run(connection)
