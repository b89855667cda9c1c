"""Per-task timeout and start deadline.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stask.db.tables import Timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("s_tasks") as batch:
        batch.add_column(sa.Column("timeout_seconds", sa.Float, nullable=True))
        batch.add_column(sa.Column("expires_at", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("s_tasks") as batch:
        batch.drop_column("expires_at")
        batch.drop_column("timeout_seconds")
