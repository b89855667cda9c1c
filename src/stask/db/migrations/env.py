"""Alembic environment: always run programmatically by `stask migrate` on a given connection."""

from __future__ import annotations

from alembic import context

from stask.db.migrations.env_constants import VERSION_TABLE
from stask.db.tables import ddl_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=ddl_metadata(),
    version_table=VERSION_TABLE,
    compare_type=True,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
