"""Enqueueing, where SQL must differ between databases: one ``TaskWrites`` per database (the
one-statement create, the bulk insert, skipping a taken unique key) and the SQL they run.

On PostgreSQL and SQLite, ``insert_task`` (create) and ``insert_tasks`` (create_many) send
their statements on the driver connection (psycopg, sqlite3) inside the store's transactions:
SQLAlchemy's execution layer cost more than the inserts. Their INSERTs are compiled from Core
statements here; PostgreSQL's bulk insert is a COPY of the columns of NEW_TASK_COLUMNS, with
ids taken from the sequence first. tests/test_enqueue.py writes the same tasks through these
and through ``TaskWrites``' Core path on each database and compares the rows. MariaDB keeps
that Core path.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, exc, insert, literal_column, select
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.selectable import Select

from stask.db.notify import CHANNEL
from stask.db.rows import NEW_TASK_COLUMNS, PENDING, QUEUED_COLUMNS
from stask.db.tables import queue, tasks
from stask.db.task_writes import TaskWrites, created_task, new_task_rows
from stask.errors import DatabaseError
from stask.models import JSONDict, NewTask, Task, utcnow

if TYPE_CHECKING:  # imported where used: a SQLite runner need not load PostgreSQL's dialect
    from sqlalchemy.dialects import postgresql, sqlite

# -- statements on the driver connection -------------------------------------------------------


def _driver(conn: Connection, begin: bool = True) -> Any:
    """The driver connection under ``conn``, inside ``conn``'s transaction: a caller's
    connection that has none yet begins one (``begin``), as SQLAlchemy does before a Core
    statement, so that the caller's commit (or rollback) covers these statements too."""
    if begin and not conn.in_transaction():
        conn.begin()
    return conn.connection.driver_connection


def _sent(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any = None,
    copy: Callable[[], None] | None = None,
) -> None:
    """``cursor.execute(statement, parameters)``, or ``copy()`` that runs the COPY
    ``statement``, as SQLAlchemy's execute makes it: announced to the cursor events (tracing,
    the benchmark's counters and clock, tests see it), and a driver error raised as
    SQLAlchemy's, a lost connection invalidated, so that the store's translate_errors turns it
    into stask's error."""
    events = conn.dispatch
    events.before_cursor_execute(conn, cursor, statement, parameters, None, False)
    try:
        if copy is None:
            cursor.execute(statement, parameters)
        else:
            copy()
    except conn.dialect.loaded_dbapi.Error as err:
        raise _driver_error(conn, cursor, statement, parameters, err) from err
    events.after_cursor_execute(conn, cursor, statement, parameters, None, False)


def _driver_error(
    conn: Connection, cursor: Any, statement: str, parameters: Any, err: Any
) -> exc.StatementError:
    """The SQLAlchemy error that ``err`` of the driver would have been raised as."""
    dialect = conn.dialect
    lost = dialect.is_disconnect(err, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate(err)
    wrapped: exc.StatementError = exc.DBAPIError.instance(
        statement,
        parameters,
        err,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return wrapped


def _new_task_insert() -> Any:
    """Core: INSERT one task, its columns (NEW_TASK_COLUMNS) bound by name."""
    values = {name: bindparam(name, type_=tasks.c[name].type) for name in NEW_TASK_COLUMNS}
    return insert(tasks).values(values)


# -- SQLite ------------------------------------------------------------------------------------

INSERT_BATCH = 1_000  # the most tasks in one multi-row INSERT
_LAST_ROWID = "SELECT last_insert_rowid()"


class _SQLiteSQL:
    """The SQL and value conversions of SQLite's enqueue, compiled from Core for the dialect."""

    def __init__(self, dialect: Dialect) -> None:
        task = _new_task_insert().compile(dialect=dialect)
        self.insert_task = str(task)
        self._one_row = self.insert_task[self.insert_task.index(" VALUES ") + len(" VALUES ") :]
        columns = task.positiontup or ()
        # The parameters in the INSERT's order, from a row of new_task_rows or from a tuple
        # of values in NEW_TASK_COLUMNS' order.
        self.task_params = operator.itemgetter(*columns)
        self.task_params_of_tuple = operator.itemgetter(
            *(NEW_TASK_COLUMNS.index(name) for name in columns)
        )
        queued_values: dict[str, Any] = {
            name: bindparam(name) for name in ("task_id", *QUEUED_COLUMNS)
        }
        queued = insert(queue).values(queued_values).compile(dialect=dialect)
        self.insert_queued = str(queued)
        self.queued_params = operator.itemgetter(*(queued.positiontup or ()))
        # Queue rows of the tasks one bulk insert gave the ids first..last.
        bulk = insert(queue).from_select(
            [queue.c.task_id, *(queue.c[name] for name in QUEUED_COLUMNS)],
            select(tasks.c.id, *(tasks.c[name] for name in QUEUED_COLUMNS)).where(
                tasks.c.id.between(bindparam("first"), bindparam("last"))
            ),
        )
        self.queue_range = str(bulk.compile(dialect=dialect))
        # What SQLAlchemy's types send for a timestamp and a JSON value.
        self.timestamp = _bind_processor(tasks.c.run_at, dialect)
        self.json = _bind_processor(tasks.c.meta, dialect)

    def insert_rows(self, count: int) -> str:
        """INSERT ``count`` tasks with one multi-row VALUES, the SQL of Core's
        ``insert(tasks).values([...])`` (parameters row after row, in insert_task's order)."""
        return ", ".join([self.insert_task, *[self._one_row] * (count - 1)])


def _bind_processor(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process  # type: ignore[no-any-return]


def _rows_per_insert(driver: Any, columns: int) -> int:
    """INSERT_BATCH, or fewer if the driver's SQLite binds fewer parameters at once."""
    import sqlite3

    limit: int = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    return max(1, min(INSERT_BATCH, limit // columns))


class SQLiteTaskWrites(TaskWrites):
    """The INSERTs on sqlite3 inside the store's BEGIN IMMEDIATE; a taken unique key skipped
    by ON CONFLICT."""

    @functools.cached_property
    def sql(self) -> _SQLiteSQL:
        return _SQLiteSQL(self.store.engine.dialect)

    def insert_task(self, new: NewTask, connection: Connection | None = None) -> Task:
        """Two INSERTs, the task and its queue row; the Task is built from what was sent."""
        sql = self.sql
        now = utcnow()
        [row] = new_task_rows([new], now)
        sent = {**row, **self._sqlite_values(row)}
        values = sql.task_params(sent)
        with self.store.writing(connection) as conn:
            cursor = _driver(conn).cursor()
            _sent(conn, cursor, sql.insert_task, values)
            task_id = int(cursor.lastrowid)
            sent["task_id"] = task_id
            queued = sql.queued_params(sent)
            _sent(conn, cursor, sql.insert_queued, queued)
            self.store.announce(conn, [row], now)
        return created_task(task_id, row, json.loads(sent["meta"]))

    def _sqlite_values(self, row: dict[str, Any]) -> dict[str, Any]:
        stamp = self.sql.timestamp
        converted = {name: stamp(row[name]) for name in ("run_at", "created_at", "updated_at")}
        if row["expires_at"] is not None:
            converted["expires_at"] = stamp(row["expires_at"])
        converted["meta"] = self.sql.json(row["meta"])
        return converted

    def insert_tasks(
        self, new: Sequence[NewTask], connection: Connection | None = None
    ) -> list[int]:
        """Multi-row INSERTs of the tasks, then their queue rows copied from them in one
        INSERT ... SELECT. Under the writer lock SQLite numbers the rows one after another,
        so the last rowid gives every id."""
        if not new:
            return []
        sql = self.sql
        now = utcnow()
        stamp, dumps, params = sql.timestamp, sql.json, sql.task_params_of_tuple
        at = stamp(now)
        no_options = dumps({})
        rows: list[tuple[Any, ...]] = []
        due = False  # some task runs now: announce() touches the wake file after the commit
        for item in new:
            run_at = item.run_at
            if run_at is None or run_at <= now:
                due = True
            values = (
                item.identifier,
                item.action,
                PENDING,
                item.priority.weight,
                item.queue,
                dumps(item.options) if item.options else no_options,
                item.max_attempts,
                at if run_at is None else stamp(run_at),
                item.started_by,
                item.unique_key,
                item.timeout_seconds,
                None if item.expires_at is None else stamp(item.expires_at),
                at,
                at,
            )
            rows.append(params(values))
        with self.store.writing(connection) as conn:
            driver = _driver(conn)
            cursor = driver.cursor()
            # Multi-row VALUES, as SQLAlchemy's insertmanyvalues sent (one statement per
            # 1,000 rows): SQLite runs them faster than an executemany of the same rows.
            most = _rows_per_insert(driver, len(NEW_TASK_COLUMNS))
            for start in range(0, len(rows), most):
                batch = rows[start : start + most]
                flat = [value for row in batch for value in row]
                _sent(conn, cursor, sql.insert_rows(len(batch)), flat)
            _sent(conn, cursor, _LAST_ROWID, ())
            last_id = int(cursor.fetchone()[0])
            first = last_id - len(rows) + 1
            span = (first, last_id)
            _sent(conn, cursor, sql.queue_range, span)
            if cursor.rowcount != len(rows):  # rolled back: these were not the new tasks
                raise DatabaseError(
                    f"SQLite numbered {len(rows)} new tasks out of sequence (ids up to "
                    f"{last_id}) - nothing was written; please report this"
                )
            if due:
                self.store.announce(conn, [{"run_at": now}], now)
        return list(range(first, last_id + 1))

    def _insert_unique_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return _insert_skipping_taken(conn, sqlite_insert(tasks), rows)


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_create(notify: bool) -> Select[Any]:
    """INSERT a task RETURNING its id, INSERT its queue row from that, and (``notify``)
    NOTIFY: one statement where create() took three. Parameters: the columns of
    new_task_rows, ``meta`` as JSON text."""
    inserted = (
        _new_task_insert()
        .returning(tasks.c.id, *(tasks.c[name] for name in QUEUED_COLUMNS))
        .cte("inserted")
    )
    queued = insert(queue).from_select(
        [queue.c.task_id, *(queue.c[name] for name in QUEUED_COLUMNS)],
        select(inserted.c.id, *(inserted.c[name] for name in QUEUED_COLUMNS)),
    )
    stmt = select(inserted.c.id).add_cte(queued.cte("queued"))
    notified: Any = literal_column(f"pg_notify('{CHANNEL}', '')")
    return stmt.add_columns(notified) if notify else stmt


# NEW_TASK_COLUMNS -> their PostgreSQL types, for the COPY of create_many.
_NEW_TASK_TYPES = {
    "identifier": "TEXT",
    "action": "TEXT",
    "status": "SMALLINT",
    "priority": "SMALLINT",
    "queue": "TEXT",
    "meta": "JSONB",
    "max_attempts": "INTEGER",
    "run_at": "TIMESTAMP",
    "started_by": "TEXT",
    "unique_key": "TEXT",
    "timeout_seconds": "DOUBLE PRECISION",
    "expires_at": "TIMESTAMP",
    "created_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
}
_QUEUED_TYPES = {"task_id": "BIGINT", **{name: _NEW_TASK_TYPES[name] for name in QUEUED_COLUMNS}}
# The serial sequence of s_tasks.id (migration 0001's BIGSERIAL).
_TASK_ID_SEQUENCE = "s_tasks_id_seq"


def _pg_ids(notify: bool) -> str:
    """``n`` new task ids from s_tasks' sequence, ascending, in one array; and (``notify``)
    the one NOTIFY of the batch."""
    ids = f"ARRAY(SELECT nextval('{_TASK_ID_SEQUENCE}') FROM generate_series(1, %(n)s))"
    return f"SELECT {ids}" + (f", pg_notify('{CHANNEL}', '')" if notify else "")


def _copy(table: str, types: dict[str, str]) -> str:
    return f"COPY {table} ({', '.join(types)}) FROM STDIN (FORMAT BINARY)"


_PG_IDS = (_pg_ids(False), _pg_ids(True))
_COPIED_TASK_TYPES = {"id": "BIGINT", **_NEW_TASK_TYPES}
_PG_COPY_TASKS = _copy("s_tasks", _COPIED_TASK_TYPES)
_PG_COPY_QUEUED = _copy("s_queue", _QUEUED_TYPES)
# How psycopg writes each column of the binary COPYs: as its type, but meta as bytea, the
# bytes of _jsonb_binary copied as they are by psycopg's C dumper (its jsonb dumper is Python
# code, run for every row).
_COPIED_TASK_DUMPERS = [
    "bytea" if kind == "JSONB" else kind.lower() for kind in _COPIED_TASK_TYPES.values()
]
_QUEUED_DUMPERS = [kind.lower() for kind in _QUEUED_TYPES.values()]
_JSONB_NO_OPTIONS = b"\x01{}"


def _jsonb_binary(options: JSONDict) -> bytes:
    """``options`` in jsonb's binary format: a version byte (1), then the JSON text (what
    psycopg's own jsonb dumper sends, with the json.dumps SQLAlchemy's JSON type uses)."""
    return b"\x01" + json.dumps(options).encode() if options else _JSONB_NO_OPTIONS


class PostgresTaskWrites(TaskWrites):
    """create(): one statement that inserts the task and its queue row and NOTIFYs.
    create_many(): the ids from the sequence, then a binary COPY into each table."""

    @functools.cached_property
    def create_sql(self) -> tuple[str, str]:
        """_pg_create(False) and (True), compiled for psycopg."""
        dialect = self.store.engine.dialect
        return (
            str(_pg_create(False).compile(dialect=dialect)),
            str(_pg_create(True).compile(dialect=dialect)),
        )

    def insert_task(self, new: NewTask, connection: Connection | None = None) -> Task:
        """One statement: the task, its queue row and, when due, the NOTIFY (_pg_create), in
        autocommit unless it is part of the caller's transaction. The Task is built from what
        was sent and the id returned."""
        now = utcnow()
        [row] = new_task_rows([new], now)
        meta = json.dumps(row["meta"])
        params = {**row, "meta": meta}
        sql = self.create_sql[row["run_at"] <= now]
        store = self.store
        place = store.one_statement() if connection is None else store.writing(connection)
        with place as conn:
            # Our autocommit connection needs no transaction; a caller's gets one.
            cursor = _driver(conn, begin=connection is not None).cursor()
            _sent(conn, cursor, sql, params)
            task_id = int(cursor.fetchone()[0])
        return created_task(task_id, row, json.loads(meta))

    def insert_tasks(
        self, new: Sequence[NewTask], connection: Connection | None = None
    ) -> list[int]:
        """The ids first (COPY returns none), then a binary COPY into s_tasks and one into
        s_queue; the NOTIFY rides on the first statement."""
        if not new:
            return []
        with self.store.writing(connection) as conn:
            driver = _driver(conn)
            # A caller's connection in autocommit would commit each statement on its own.
            with driver.transaction() if driver.autocommit else contextlib.nullcontext():
                return _copy_new_tasks(conn, driver.cursor(), new)

    def _insert_unique_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return _insert_skipping_taken(conn, postgresql_insert(tasks), rows)


def _copy_new_tasks(conn: Connection, cursor: Any, new: Sequence[NewTask]) -> list[int]:
    """PostgreSQL's bulk insert of ``new``: their ids, their rows, their queue rows."""
    now = utcnow()
    due = any(item.run_at is None or item.run_at <= now for item in new)
    count = {"n": len(new)}
    _sent(conn, cursor, _PG_IDS[due], count)
    ids: list[int] = cursor.fetchone()[0]

    def copy_tasks() -> None:
        with cursor.copy(_PG_COPY_TASKS) as copy:
            copy.set_types(_COPIED_TASK_DUMPERS)
            for task_id, item in zip(ids, new, strict=True):
                copy.write_row(
                    (
                        task_id,
                        item.identifier,
                        item.action,
                        PENDING,
                        item.priority.weight,
                        item.queue,
                        _jsonb_binary(item.options),
                        item.max_attempts,
                        item.run_at or now,
                        item.started_by,
                        item.unique_key,
                        item.timeout_seconds,
                        item.expires_at,
                        now,
                        now,
                    )
                )

    def copy_queued() -> None:
        with cursor.copy(_PG_COPY_QUEUED) as copy:
            copy.set_types(_QUEUED_DUMPERS)
            for task_id, item in zip(ids, new, strict=True):
                copy.write_row(
                    (task_id, item.queue, item.identifier, item.priority.weight, item.run_at or now)
                )

    _sent(conn, cursor, _PG_COPY_TASKS, copy=copy_tasks)
    _sent(conn, cursor, _PG_COPY_QUEUED, copy=copy_queued)
    return ids


# -- MariaDB / MySQL ---------------------------------------------------------------------------


class MySQLTaskWrites(TaskWrites):
    """TaskWrites' Core path; a taken unique key skipped by INSERT IGNORE, one row at a time."""

    def _insert_unique_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        # No RETURNING on MySQL: one INSERT IGNORE per row tells by its row count whether it
        # created the task (schedules insert a handful at a time). IGNORE would also turn a
        # too-long value into a truncating warning; callers pass checked names and keys.
        stmt = insert(tasks).prefix_with("IGNORE")
        ids = []
        for row in rows:
            result = conn.execute(stmt, row)
            if result.rowcount == 1 and result.inserted_primary_key:
                ids.append(int(result.inserted_primary_key[0]))
        return sorted(ids)


def _insert_skipping_taken(
    conn: Connection,
    stmt: postgresql.Insert | sqlite.Insert,
    rows: list[dict[str, Any]],
) -> list[int]:
    """INSERT ... ON CONFLICT (unique_key) DO NOTHING RETURNING id: only created rows come back."""
    returning = stmt.on_conflict_do_nothing(index_elements=[tasks.c.unique_key]).returning(
        tasks.c.id
    )
    return sorted(int(task_id) for task_id in conn.execute(returning, rows).scalars())
