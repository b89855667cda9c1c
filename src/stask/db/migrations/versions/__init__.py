"""Alembic revision files; only ever added to."""
