"""ix_s_tasks_locked_by holds running tasks only (PostgreSQL and SQLite).

Every lookup by locked_by also asks for status = 50 (running) or names the task ids. Over all
statuses the index kept every task a node ever ran, and PostgreSQL's planner, estimating a new
node's id as rare, walked it to find the node's running tasks when recording outcomes: each
turn read every task the node had finished so far. Drains slowed as they went (a database's
third drain of 10,000 tasks ran at 3,300/s after a first at 4,070/s), and with 1,000,000
finished tasks in the table at 0.69-0.71x an empty one's (`python -m bench.soak --minutes 1
--rounds 3`). Partial, it holds at most what the runners hold, and a finish no longer inserts
into it: the same comparison gave 0.98x, with no slowdown between drains. MariaDB has no
partial indexes; its finish names the ids (dialects.py), so it keeps the full index.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEX = "ix_s_tasks_locked_by"
RUNNING = sa.text("status = 50")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return
    op.drop_index(INDEX, table_name="s_tasks")
    op.create_index(INDEX, "s_tasks", ["locked_by"], postgresql_where=RUNNING, sqlite_where=RUNNING)


def downgrade() -> None:
    if op.get_bind().dialect.name not in ("postgresql", "sqlite"):
        return
    op.drop_index(INDEX, table_name="s_tasks")
    op.create_index(INDEX, "s_tasks", ["locked_by"])
