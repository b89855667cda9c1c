"""Names shared by the Alembic environment and the code that runs it."""

VERSION_TABLE = "s_alembic_version"
