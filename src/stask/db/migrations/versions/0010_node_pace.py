"""What each runner learned about its tasks: prefetch, turn latency, durations per action.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from stask.db.tables import Json

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("s_nodes") as batch:
        batch.add_column(sa.Column("pace", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("s_nodes") as batch:
        batch.drop_column("pace")
