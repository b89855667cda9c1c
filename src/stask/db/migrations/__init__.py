"""Alembic migrations for the stask schema."""
