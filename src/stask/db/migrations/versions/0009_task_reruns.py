"""Which task a task was run again from ("Run again" links both ways).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from stask.db.tables import BigId, Timestamp

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Written out, not imported: this revision must not change when tables.py does.
MYSQL_TEXT: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "s_task_reruns",
        sa.Column("task_id", BigId, primary_key=True, autoincrement=False),
        sa.Column("rerun_of", sa.BigInteger, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_task_reruns_rerun_of", "s_task_reruns", ["rerun_of", "task_id"])


def downgrade() -> None:
    op.drop_table("s_task_reruns")
