"""Create the stask tables: workers, tasks, the claimable queue, task logs and runner nodes.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from stask.db.tables import BigId, Json, LongText, Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Written out, not imported: this revision must not change when tables.py does.
MYSQL_TEXT: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "s_workers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("class_path", sa.String(255), nullable=False),
        sa.Column("scope", sa.String(100), nullable=False, server_default=""),
        sa.Column("title", sa.String(255), nullable=False, server_default=""),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("icon", sa.String(255), nullable=False, server_default=""),
        sa.Column("actions", Json, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default="1"),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("settings", Json, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.UniqueConstraint("identifier", name="uq_s_workers_identifier"),
        **MYSQL_TEXT,
    )
    op.create_table(
        "s_tasks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("meta", Json, nullable=False),
        sa.Column("result", Json, nullable=True),
        sa.Column("progress", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("processed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("total", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("eta_seconds", sa.Integer, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("error", LongText, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("run_at", Timestamp, nullable=False),
        sa.Column("unique_key", sa.String(255), nullable=True),
        sa.Column("started_by", sa.String(100), nullable=True),
        sa.Column("locked_by", sa.String(100), nullable=True),
        sa.Column("locked_at", Timestamp, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
        sa.Column("peak_memory", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("unique_key", name="uq_s_tasks_unique_key"),
        postgresql_with={"fillfactor": 80},
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_tasks_status_id", "s_tasks", ["status", "id"])
    op.create_index("ix_s_tasks_identifier_id", "s_tasks", ["identifier", "id"])
    op.create_index("ix_s_tasks_finished_at", "s_tasks", ["finished_at"])
    op.create_index("ix_s_tasks_locked_by", "s_tasks", ["locked_by"])
    op.create_table(
        "s_queue",
        sa.Column("task_id", BigId, primary_key=True, autoincrement=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("identifier", sa.String(100), nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("run_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["s_tasks.id"], name="fk_s_queue_task", ondelete="CASCADE"
        ),
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_queue_claim", "s_queue", ["queue", "priority", "run_at", "task_id"])
    op.create_index("ix_s_queue_order", "s_queue", ["priority", "run_at", "task_id"])
    op.create_table(
        "s_task_logs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task_id", sa.BigInteger, nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("context", Json, nullable=True),
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_task_logs_task_id", "s_task_logs", ["task_id", "id"])
    op.create_index("ix_s_task_logs_ts", "s_task_logs", ["ts"])
    op.create_table(
        "s_nodes",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("queues", Json, nullable=False),
        sa.Column("version", sa.String(50), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("heartbeat_at", Timestamp, nullable=False),
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_nodes_heartbeat_at", "s_nodes", ["heartbeat_at"])
    if op.get_bind().dialect.name == "postgresql":
        # The claim table churns constantly; vacuum it after ~1000 dead rows, not after 20 %.
        op.execute(
            "ALTER TABLE s_queue SET (autovacuum_vacuum_scale_factor = 0, "
            "autovacuum_vacuum_threshold = 1000)"
        )


def downgrade() -> None:
    for table in ("s_nodes", "s_task_logs", "s_queue", "s_tasks", "s_workers"):
        op.drop_table(table)
