"""Users, sessions, API tokens and the audit log for the web app; hourly statistics rollups.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from stask.db.tables import BigId, Json, Timestamp

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Written out, not imported: this revision must not change when tables.py does.
MYSQL_TEXT: dict[str, Any] = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}


def upgrade() -> None:
    op.create_table(
        "s_users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("scopes", Json, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        **MYSQL_TEXT,
    )
    op.create_table(
        "s_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(255), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_seen_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp, nullable=True),
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_sessions_user_id", "s_sessions", ["user_id"])
    op.create_table(
        "s_api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("last_used_at", Timestamp, nullable=True),
        sa.Column("revoked_at", Timestamp, nullable=True),
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_api_tokens_user_id", "s_api_tokens", ["user_id"])
    op.create_table(
        "s_audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("actor", sa.String(100), nullable=True),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", Json, nullable=True),
        **MYSQL_TEXT,
    )
    op.create_index("ix_s_audit_at", "s_audit", ["at"])
    op.create_index("ix_s_audit_actor_action_at", "s_audit", ["actor", "action", "at"])
    op.create_index("ix_s_audit_address_action_at", "s_audit", ["address", "action", "at"])
    op.create_table(
        "s_stats",
        sa.Column("hour", Timestamp, primary_key=True),
        sa.Column("identifier", sa.String(100), primary_key=True),
        sa.Column("completed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("cancelled", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("duration_ms_sum", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("duration_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("memory_sum", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("memory_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("duration_buckets", Json, nullable=False),
        sa.Column("last_finished_at", Timestamp, nullable=True),
        **MYSQL_TEXT,
    )
    op.create_table(
        "s_state",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", Json, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        **MYSQL_TEXT,
    )


def downgrade() -> None:
    for name in ("s_state", "s_stats", "s_audit", "s_api_tokens", "s_sessions", "s_users"):
        op.drop_table(name)
