"""Data access: tables, migrations and the Store; every SQL statement lives in this package."""
