"""Named-queue controls shared by every runner: pause, concurrency and rate limits.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from stask.db.tables import Timestamp

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Written out, not imported: this revision must not change when tables.py does.
MYSQL_TEXT: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "s_queues",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("paused_until", Timestamp, nullable=True),
        sa.Column("concurrency_limit", sa.Integer, nullable=True),
        sa.Column("rate_limit", sa.Integer, nullable=True),
        sa.Column("rate_period_seconds", sa.Integer, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        **MYSQL_TEXT,
    )
    # What a limited queue's claim counts: its running tasks and its recent starts.
    op.create_index("ix_s_tasks_queue_status_started", "s_tasks", ["queue", "status", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_s_tasks_queue_status_started", table_name="s_tasks")
    op.drop_table("s_queues")
