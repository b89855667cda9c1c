"""Engines tuned per dialect, and the translation of driver errors into stask errors."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url

from stask.db.tables import ALL_TABLES
from stask.errors import (
    ConfigError,
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    SchemaMissing,
)

SUPPORTED = {
    "sqlite": "sqlite:///./storage/stask.db",
    "postgresql": "postgresql+psycopg://user@host/db",
    "mysql": "mysql+pymysql://user@host/db",
    "mariadb": "mariadb+pymysql://user@host/db",
}
EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
# A busy SQLite writer is waited for, not failed on: the claim holds the lock for milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def parse_url(raw: str) -> URL:
    """Validate a database URL and name the supported forms when it is wrong."""
    examples = ", ".join(SUPPORTED.values())
    try:
        url = make_url(raw)
    except exc.ArgumentError as err:
        raise ConfigError(f"invalid database URL {raw!r} - use one of: {examples}") from err
    if url.get_backend_name() not in SUPPORTED:
        raise ConfigError(
            f"unsupported database {url.get_backend_name()!r} in {safe_url(url)} - "
            f"use one of: {examples}"
        )
    if url.get_backend_name() == "sqlite" and url.database in (None, ""):
        raise ConfigError(
            f"database URL {raw!r} names no file - use e.g. {SUPPORTED['sqlite']} "
            "(an in-memory database cannot be shared between processes)"
        )
    return url


def safe_url(url: URL | str) -> str:
    """The URL with its password masked, for messages."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except exc.ArgumentError:
            return str(url)
    return url.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def build_engine(raw_url: str, *, create: bool = False, pre_ping: bool = True) -> Engine:
    """Create an engine; with ``create`` a missing SQLite file (and its folder) is made."""
    url = parse_url(raw_url)
    backend = url.get_backend_name()
    # pool_pre_ping costs a round trip per transaction but spares an application one failed
    # request after the server dropped its pooled connections. The runner's hot path opts out:
    # its claim, record and heartbeat loops retry a failed statement anyway.
    kwargs: dict[str, Any] = {"pool_pre_ping": pre_ping and backend != "sqlite"}
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is not None and not path.exists():
            if not create:
                raise SchemaMissing(f"database file {path} does not exist - run `stask migrate`")
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    elif backend == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    else:
        kwargs["isolation_level"] = "READ COMMITTED"
        kwargs["connect_args"] = {"connect_timeout": 10, "charset": "utf8mb4"}
    try:
        engine = create_engine(url, **kwargs)
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"the driver for {safe_url(url)} is not installed ({err.name}) - "
            f"pip install 'stask[{EXTRAS.get(backend, backend)}]'"
        ) from err
    except exc.ArgumentError as err:
        raise ConfigError(f"invalid database URL {safe_url(url)}: {err}") from err
    if backend == "sqlite":
        _tune_sqlite(engine)
    return engine


def _tune_sqlite(engine: Engine) -> None:
    """WAL, durable commits, enforced foreign keys, and transactions we begin ourselves.

    pysqlite's own transaction handling defers BEGIN until the first write, which turns a
    read-then-write transaction into a lock upgrade that can fail with SQLITE_BUSY at once.
    Every transaction here starts with BEGIN IMMEDIATE (the writer lock, waited for under the
    busy timeout) unless the connection asks for ``stask_readonly``.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        readonly = connection.get_execution_options().get("stask_readonly", False)
        connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


_MISSING_TABLE_MARKERS = ("no such table", "does not exist", "1146", "undefinedtable")
# A stask table named as such: `database "jobs_db" does not exist` or `role "ops_user" does not
# exist` come from a wrong URL, not a missing schema, though they contain "s_".
_STASK_TABLE = re.compile(rf"\b(?:{'|'.join(table.name for table in ALL_TABLES)})\b")


# Transactions the database aborted so that others could go on, not a broken server: MySQL's
# deadlock and lock wait timeout, PostgreSQL's deadlock, serialization failure and NOWAIT lock.
_MYSQL_CONFLICTS = frozenset({1213, 1205})
_PG_CONFLICTS = frozenset({"40P01", "40001", "55P03"})


def _conflict(orig: BaseException | None) -> str | None:
    """What kind of conflict aborted the statement, or None if it was something else."""
    if orig is None:
        return None
    if getattr(orig, "sqlstate", None) in _PG_CONFLICTS:
        return "deadlock or lock conflict"
    code = orig.args[0] if orig.args else None
    if isinstance(code, int) and code in _MYSQL_CONFLICTS:
        return "deadlock" if code == 1213 else "lock wait timeout"
    if type(orig).__module__.startswith("sqlite3") and "database is locked" in str(orig):
        return "another process held the SQLite write lock past the busy timeout"
    return None


@contextlib.contextmanager
def translate_errors(url: URL | str) -> Iterator[None]:
    """Turn driver exceptions into stask errors that say what to do."""
    try:
        yield
    except exc.DBAPIError as err:
        text = str(err.orig).lower()
        if any(
            marker in text or marker in type(err.orig).__name__.lower()
            for marker in _MISSING_TABLE_MARKERS
        ) and _STASK_TABLE.search(text):
            raise SchemaMissing(
                f"the database at {safe_url(url)} has no stask tables - run `stask migrate`"
            ) from err
        conflict = _conflict(err.orig)
        if conflict is not None and not err.connection_invalidated:
            first_line = str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else ""
            raise DatabaseConflict(
                f"the database at {safe_url(url)} aborted the transaction ({conflict}: "
                f"{first_line}) - try again; if it keeps happening, look for long transactions "
                "holding stask's rows"
            ) from err
        if err.connection_invalidated or isinstance(err, exc.OperationalError | exc.InterfaceError):
            first_line = str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else ""
            raise DatabaseUnavailable(
                f"cannot use the database at {safe_url(url)}: {first_line} - "
                "check STASK_DATABASE_URL and that the server is running"
            ) from err
        raise DatabaseError(f"database error at {safe_url(url)}: {err.orig}") from err
