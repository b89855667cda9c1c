"""SQLite: a task's s_queue row goes when the task is claimed, inside the claiming UPDATE.

SQLite runs one statement per call, so a claim was a DELETE ... RETURNING from s_queue and then
an UPDATE of s_tasks. With this trigger the claim is one UPDATE whose WHERE picks from s_queue,
and a runner's whole turn (record outcomes, claim) is one statement (dialects.py). Only claims
move a task to running (50). The other databases delete in the claim statement itself.

A later migration that rebuilds s_tasks on SQLite (batch "move and copy") drops this trigger
with the old table and must create it again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TRIGGER = "s_tasks_claimed_leave_queue"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF status ON s_tasks"
        " WHEN NEW.status = 50 AND OLD.status <> 50"
        " BEGIN DELETE FROM s_queue WHERE task_id = NEW.id; END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
