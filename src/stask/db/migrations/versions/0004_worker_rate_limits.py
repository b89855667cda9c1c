"""Cluster-wide rate limits per worker: at most N of its tasks started per period.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("s_workers", sa.Column("rate_limit", sa.Integer, nullable=True))
    op.add_column("s_workers", sa.Column("rate_period_seconds", sa.Integer, nullable=True))
    # What a rate-limited worker's claim counts: its tasks started within the period.
    op.create_index(
        "ix_s_tasks_identifier_status_started", "s_tasks", ["identifier", "status", "started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_s_tasks_identifier_status_started", table_name="s_tasks")
    op.drop_column("s_workers", "rate_period_seconds")
    op.drop_column("s_workers", "rate_limit")
