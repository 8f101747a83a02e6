"""hps's migrations: a fresh database upgraded to head has exactly the models' tables, with hps's
own version table beside Optuna's; a database from before migrations is adopted, not recreated."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from service.migrations import VERSION_TABLE
from service.models import Base
from service.store import Store, make_engine, migrate
from tests.postgres import PostgresServer

pytestmark = pytest.mark.backends

HEAD = "0003"
INITIAL_TABLES = ("hps_studies", "hps_leases", "hps_tokens")
"""What revision 0001 made: the tables the service created before it had migrations."""


@pytest.fixture
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> str:
    """An empty database: on PostgreSQL not the usual clone of a migrated template."""
    if database_url.startswith("postgresql"):
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create_database(empty=True)
    return database_url


def test_a_fresh_database_at_head_has_exactly_the_models_tables(fresh_url: str) -> None:
    store = Store(fresh_url)  # migrates hps's tables, then Optuna creates its own
    try:
        with store.engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            hps_tables = {t for t in tables if t.startswith("hps_")}
            assert hps_tables == {*Base.metadata.tables, VERSION_TABLE}
            # Optuna keeps its own Alembic version table; ours never touches it.
            assert "alembic_version" in tables
            (head,) = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).one()
            assert head == HEAD
            # Columns, types, nullability, indexes and constraints: nothing differs.
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_object": lambda _o, name, type_, *_: (
                        type_ != "table" or name in Base.metadata.tables
                    )
                },
            )
            assert compare_metadata(context, Base.metadata) == []
    finally:
        store.close()


def test_a_database_from_before_migrations_is_adopted(fresh_url: str) -> None:
    engine = make_engine(fresh_url)
    try:
        # How the service made its tables before migrations.
        Base.metadata.create_all(engine, tables=[Base.metadata.tables[t] for t in INITIAL_TABLES])
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO hps_tokens (name, token_hash, scopes, created_at,"
                    " revoked) VALUES ('kept', 'h', 'read', CURRENT_TIMESTAMP, :no)"
                ),
                {"no": False},
            )
        migrate(engine)
        migrate(engine)  # and again, as every start does: nothing to do
        with engine.connect() as connection:
            assert connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all() == [
                (HEAD,)
            ]
            names = connection.execute(text("SELECT name FROM hps_tokens")).scalars().all()
            assert names == ["kept"]
    finally:
        engine.dispose()
