"""s_tasks.claim_token: the fence of an attempt's writes.

Every write an attempt makes (its start, progress, log lines, outcome) used to be fenced by
``locked_by = node AND status = running``. A runner declared dead re-registers under the same
node id, so after a rescue the same node could claim the task again and both attempts passed
the fence. Each claim now writes a token of its own, and every write of the attempt names it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on every database (no SQLite table rebuild: the trigger of 0005 stays).
    op.add_column("s_tasks", sa.Column("claim_token", sa.String(32), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("s_tasks", recreate="never") as batch:
            batch.drop_column("claim_token")
    else:
        op.drop_column("s_tasks", "claim_token")
