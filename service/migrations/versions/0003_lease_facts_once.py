"""A lease row keeps only what is the lease's: the trial's worker, device and attempt live in the
trial record (Optuna's user attributes), and ``last_step`` was never read.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED = ("worker_id", "device", "attempt", "last_step")


def upgrade() -> None:
    # A database adopted from before migrations was made from the models of its day; drop only
    # what it has.
    present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("hps_leases")}
    with op.batch_alter_table("hps_leases") as batch:
        for name in DROPPED:
            if name in present:
                batch.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("hps_leases") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("device", sa.String(100), nullable=False, server_default=""))
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("last_step", sa.Integer(), nullable=True))
