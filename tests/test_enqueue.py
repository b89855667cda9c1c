"""Enqueueing on the driver connection (stask.db.enqueue), on SQLite, PostgreSQL and MariaDB:
the rows and Tasks of TaskWrites' Core path, wake-ups, the caller's transaction, the errors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import multiprocessing
import os
import traceback
from collections.abc import Iterator, Sequence
from multiprocessing.queues import Queue
from typing import Any

import psycopg
import pytest
from sqlalchemy import Connection, bindparam, event, insert, text

import stask.db.enqueue as enqueue_module
import stask.db.task_writes as task_writes_module
from stask import Stask, Status
from stask.db import wakefile
from stask.db.dialects import store_for
from stask.db.engine import build_engine, parse_url
from stask.db.rows import NEW_TASK_COLUMNS, QUEUED_COLUMNS
from stask.db.tables import tasks
from stask.db.task_writes import UNWRITTEN_DEFAULTS, TaskWrites
from stask.errors import (
    DatabaseError,
    DatabaseUnavailable,
    UnknownAction,
    ValidationError,
    WorkerInactive,
)
from stask.models import NewTask, Priority, Task, utcnow

FROZEN = dt.datetime(2031, 5, 6, 7, 8, 9, 123456)
LATER = FROZEN + dt.timedelta(hours=2)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """The task writes' clock stopped, so that two inserts write the same timestamps."""
    for module in (enqueue_module, task_writes_module):
        monkeypatch.setattr(module, "utcnow", lambda: FROZEN)
    return FROZEN


def varied_tasks() -> list[NewTask]:
    """New tasks with every column set in some way: defaults, unicode and nested options,
    timestamps with and without microseconds, in the future and the past."""
    return [
        NewTask(identifier="inventory", action="sync_stock", options={}),
        NewTask(
            identifier="mailer",
            action="send",
            options={"to": "ж@b.c", "n": [1, {"x": None, "y": 1.5, "z": True}], "s": '☃ "q" \\'},
            priority=Priority.HIGH,
            queue="mail",
            run_at=LATER,
            max_attempts=7,
            started_by="ann",
            timeout_seconds=2.5,
            expires_at=LATER + dt.timedelta(minutes=1),
        ),
        NewTask(
            identifier="inventory",
            action="sync_stock",
            options={"rows": 3, "big": "x" * 5000},
            priority=Priority.LOW,
            run_at=(FROZEN - dt.timedelta(days=400)).replace(microsecond=0),
            timeout_seconds=0.001,
        ),
    ]


def stored_rows(
    conn: Connection, table: str, key: str, ids: Sequence[int]
) -> list[tuple[Any, ...]]:
    """The rows of ``ids`` as the driver returns them (no SQLAlchemy types), without ``key``."""
    found = conn.execute(
        text(f"SELECT * FROM {table} WHERE {key} IN :ids ORDER BY {key}").bindparams(
            bindparam("ids", expanding=True)
        ),
        {"ids": list(ids)},
    )
    position = list(found.keys()).index(key)
    return [tuple(value for n, value in enumerate(row) if n != position) for row in found]


# -- the same rows and Tasks as the Core path -------------------------------------------------


def test_create_returns_the_task_the_core_path_returns(app: Stask, frozen: dt.datetime) -> None:
    writes = app.store.task_writes
    for new in varied_tasks():
        task = writes.insert_task(new)
        # TaskWrites' own insert_task: INSERT ... RETURNING every column, and its queue row.
        core = TaskWrites.insert_task(writes, new)
        assert task == dataclasses.replace(core, id=task.id)
        assert app.get(task.id) == task
        with app.store.reading() as conn:
            assert stored_rows(conn, "s_tasks", "id", [task.id]) == stored_rows(
                conn, "s_tasks", "id", [core.id]
            )
            assert stored_rows(conn, "s_queue", "task_id", [task.id]) == stored_rows(
                conn, "s_queue", "task_id", [core.id]
            )


def test_create_many_writes_the_rows_the_core_path_writes(app: Stask, frozen: dt.datetime) -> None:
    writes = app.store.task_writes
    new = varied_tasks() * 2
    created = writes.insert_tasks(new)
    core = TaskWrites.insert_tasks(writes, new)
    assert created == sorted(created)
    assert len(set(created) | set(core)) == 2 * len(new)
    with app.store.reading() as conn:
        for table, key in (("s_tasks", "id"), ("s_queue", "task_id")):
            assert stored_rows(conn, table, key, created) == stored_rows(conn, table, key, core)
    assert [app.get(task_id).options for task_id in created] == [item.options for item in new]


def test_a_new_task_holds_the_server_defaults_in_the_columns_not_written(app: Stask) -> None:
    assert set(UNWRITTEN_DEFAULTS) | set(NEW_TASK_COLUMNS) | {"id"} == set(tasks.c.keys())
    assert not set(UNWRITTEN_DEFAULTS) & set(NEW_TASK_COLUMNS)
    task = app.create("inventory", "sync_stock")
    stored = app.get(task.id)
    for name in UNWRITTEN_DEFAULTS:
        field = {"meta": "options"}.get(name, name)
        assert getattr(stored, field) == getattr(task, field), name


def test_the_driver_sql_is_compiled_from_core(app: Stask, dialect: str) -> None:
    writes = app.store.task_writes
    compiled = app.store.engine.dialect
    values = {name: bindparam(name, type_=tasks.c[name].type) for name in NEW_TASK_COLUMNS}
    if dialect == "postgresql":
        assert isinstance(writes, enqueue_module.PostgresTaskWrites)
        assert writes.create_sql == tuple(
            str(enqueue_module._pg_create(notify).compile(dialect=compiled))
            for notify in (False, True)
        )
        assert "pg_notify('stask_enqueued', '')" in writes.create_sql[True]
        # COPY names the columns of NEW_TASK_COLUMNS and s_queue's, and the ids come from
        # the sequence of s_tasks.id.
        assert set(enqueue_module._NEW_TASK_TYPES) == set(NEW_TASK_COLUMNS)
        assert list(enqueue_module._QUEUED_TYPES) == ["task_id", *QUEUED_COLUMNS]
        with app.store.reading() as conn:
            sequence = conn.execute(text("SELECT pg_get_serial_sequence('s_tasks', 'id')"))
            assert sequence.scalar_one().split(".")[-1] == enqueue_module._TASK_ID_SEQUENCE
    elif dialect == "sqlite":
        assert isinstance(writes, enqueue_module.SQLiteTaskWrites)
        assert writes.sql.insert_task == str(insert(tasks).values(values).compile(dialect=compiled))
        rows = [
            {name: bindparam(f"{name}_{n}", type_=tasks.c[name].type) for name in NEW_TASK_COLUMNS}
            for n in range(3)
        ]
        many = insert(tasks).values(rows).compile(dialect=compiled)
        assert writes.sql.insert_rows(3) == str(many)
        # Row after row, each in the order of the one-row INSERT.
        one_row = insert(tasks).values(values).compile(dialect=compiled).positiontup or []
        assert many.positiontup == [f"{name}_{n}" for n in range(3) for name in one_row]
        assert writes.sql.insert_queued.startswith("INSERT INTO s_queue (task_id, queue,")
    else:
        assert type(writes).insert_task is TaskWrites.insert_task  # MariaDB: the Core path


def test_create_many_returns_ids_in_item_order_and_queues_every_task(app: Stask) -> None:
    items = [("mailer", "send", {"n": n}) for n in range(1, 2601)]
    first = app.create_many(items[:150])
    second = app.create_many(items[150:])  # more than one INSERT's worth on SQLite
    assert first + second == sorted(first + second)
    found = {task.id: task.options["n"] for task in app.list(limit=10_000)}
    assert [found[task_id] for task_id in first + second] == list(range(1, 2601))
    assert app.store.task_reads.queued_count() == 2600
    assert app.create_many([]) == []


def test_sqlite_bulk_inserts_bind_no_more_parameters_than_sqlite_takes() -> None:
    class Driver:
        def __init__(self, limit: int) -> None:
            self.limit = limit

        def getlimit(self, _category: int) -> int:
            return self.limit

    assert enqueue_module._rows_per_insert(Driver(250_000), 14) == enqueue_module.INSERT_BATCH
    assert enqueue_module._rows_per_insert(Driver(999), 14) == 71  # SQLite before 3.32
    assert enqueue_module._rows_per_insert(Driver(10), 14) == 1


def create_many_in_process(url: str, tag: str, results: Queue[tuple[str, Any]]) -> None:
    """Child process body: batches of numbered tasks, through its own engine."""
    app = Stask(database_url=url, workers=["tests.sample_workers"], use_entry_points=False)
    try:
        made = []
        for batch in range(15):
            items = [("mailer", "send", {"tag": tag, "n": batch * 40 + n}) for n in range(40)]
            made += app.create_many(items)
        results.put((tag, made))
    except BaseException:
        results.put((tag, traceback.format_exc()))
        raise
    finally:
        app.close()


def test_processes_enqueueing_at_once_get_the_ids_of_their_own_tasks(
    app: Stask, db_url: str
) -> None:
    """SQLite's ids come from the last rowid: right only if nobody else inserts in between."""
    context = multiprocessing.get_context("spawn")
    results: Queue[tuple[str, Any]] = context.Queue()
    tags = ["p0", "p1", "p2"]
    processes = [
        context.Process(target=create_many_in_process, args=(db_url, tag, results)) for tag in tags
    ]
    for process in processes:
        process.start()
    try:
        reported = dict(results.get(timeout=120) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
    assert {tag: found for tag, found in reported.items() if isinstance(found, str)} == {}
    options = {task.id: task.options for task in app.list(limit=10_000)}
    for tag, made in reported.items():
        assert [options[task_id] for task_id in made] == [{"tag": tag, "n": n} for n in range(600)]
    assert app.store.task_reads.queued_count() == 1800


# -- what sees the statements, what they wake --------------------------------------------------


def test_sqlalchemy_cursor_events_see_every_statement(app: Stask) -> None:
    before: list[str] = []
    after: list[str] = []

    def on_before(*args: Any) -> None:
        before.append(args[2])

    def on_after(*args: Any) -> None:
        after.append(args[2])

    app.create("inventory", "sync_stock")  # fills the worker cache
    engine = app.store.engine
    event.listen(engine, "before_cursor_execute", on_before)
    event.listen(engine, "after_cursor_execute", on_after)
    try:
        app.create("inventory", "sync_stock")
        app.create_many([("mailer", "send")] * 3)
    finally:
        event.remove(engine, "before_cursor_execute", on_before)
        event.remove(engine, "after_cursor_execute", on_after)
    assert after == before
    writes = [s for s in before if "s_tasks" in s or "s_queue" in s]
    assert any("s_queue" in s for s in writes), before
    assert len([s for s in writes if "s_tasks" in s]) >= 2, before


def test_postgresql_notifies_once_per_committed_batch_of_due_tasks(
    app: Stask, dialect: str, db_url: str
) -> None:
    if dialect != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's")
    listener = psycopg.connect(
        parse_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    )
    later = utcnow() + dt.timedelta(hours=1)
    try:
        listener.execute("LISTEN stask_enqueued")
        app.create_many([{"identifier": "mailer", "action": "send", "run_at": later}] * 3)
        app.create("mailer", "send", run_at=later)
        with app.store.engine.connect() as conn, conn.begin() as tx:
            app.create("mailer", "send", connection=conn)
            app.create_many([("mailer", "send")] * 2, connection=conn)
            tx.rollback()
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []  # nothing due committed
        app.create_many([("mailer", "send")] * 5)
        assert len(list(listener.notifies(timeout=1, stop_after=2))) == 1
        app.create("mailer", "send")
        assert len(list(listener.notifies(timeout=1, stop_after=2))) == 1
    finally:
        listener.close()


def test_sqlite_touches_the_wake_file_after_committing_due_tasks(app: Stask, dialect: str) -> None:
    if dialect != "sqlite":
        pytest.skip("the wake file is SQLite's")
    path = wakefile.wake_path(app.store.url)
    assert path is not None
    path.touch()

    def touched() -> bool:
        changed = path.stat().st_mtime_ns != 0
        os.utime(path, ns=(0, 0))
        return changed

    touched()
    later = utcnow() + dt.timedelta(hours=1)
    app.create_many([{"identifier": "mailer", "action": "send", "run_at": later}] * 3)
    app.create("mailer", "send", run_at=later)
    assert not touched()
    app.create_many(
        [{"identifier": "mailer", "action": "send", "run_at": later}, ("mailer", "send")]
    )
    assert touched()
    app.create("mailer", "send")
    assert touched()


# -- the caller's transaction ------------------------------------------------------------------


@pytest.mark.parametrize("many", [False, True], ids=["create", "create_many"])
def test_a_caller_connection_without_a_transaction_commits_with_the_caller(
    app: Stask, many: bool
) -> None:
    """SQLAlchemy begins a transaction before a Core statement; the driver statements must
    too, or the caller's commit would commit nothing and closing would drop the tasks."""

    def enqueue(conn: Connection) -> list[int]:
        if many:
            return app.create_many([("mailer", "send")] * 2, connection=conn)
        return [app.create("inventory", "sync_stock", connection=conn).id]

    with app.store.engine.connect() as conn:
        made = enqueue(conn)
        conn.commit()
    assert [app.get(task_id).status for task_id in made] == [Status.PENDING] * len(made)
    with app.store.engine.connect() as conn:
        enqueue(conn)
    assert app.count() == len(made)  # closed without a commit: rolled back
    assert app.store.task_reads.queued_count() == len(made)


def test_create_many_on_an_autocommit_connection_commits_all_or_nothing(
    app: Stask, dialect: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if dialect != "postgresql":
        pytest.skip("PostgreSQL's bulk insert is three statements on the driver connection")
    with app.store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        made = app.create_many([("mailer", "send")] * 3, connection=conn)
        # The queue rows' COPY fails after the tasks' COPY went through.
        refused = enqueue_module._PG_COPY_QUEUED.replace("(FORMAT BINARY)", "(FREEZE)")
        monkeypatch.setattr(enqueue_module, "_PG_COPY_QUEUED", refused)
        with pytest.raises(DatabaseError, match="COPY FREEZE"):
            app.create_many([("mailer", "send")] * 2, connection=conn)
    assert app.count() == 3
    assert app.store.task_reads.queued_count() == 3
    assert [app.get(task_id).status for task_id in made] == [Status.PENDING] * 3


def test_a_task_created_in_the_caller_transaction_is_returned_as_stored(app: Stask) -> None:
    with app.store.engine.connect() as conn, conn.begin():
        task = app.create("mailer", "send", {"k": [1]}, priority="low", connection=conn)
    assert app.get(task.id) == task


# -- errors ------------------------------------------------------------------------------------


def test_a_database_error_is_raised_as_on_the_core_path(app: Stask, frozen: dt.datetime) -> None:
    writes = app.store.task_writes
    keyed = NewTask(identifier="mailer", action="send", options={}, unique_key="k1")
    writes.insert_task(keyed)
    with pytest.raises(DatabaseError) as fast:
        writes.insert_task(keyed)
    with pytest.raises(DatabaseError) as core:
        TaskWrites.insert_task(writes, keyed)
    assert type(fast.value) is type(core.value)
    assert type(fast.value.__cause__) is type(core.value.__cause__)
    # A batch with one taken key inserts nothing.
    with pytest.raises(DatabaseError):
        writes.insert_tasks([NewTask(identifier="mailer", action="send", options={}), keyed])
    assert app.count() == 1
    assert app.store.task_reads.queued_count() == 1


def test_a_value_the_database_refuses_is_a_database_error(app: Stask, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("SQLite and MariaDB store a NUL character")
    with pytest.raises(DatabaseError, match="NUL"):
        app.create("mailer", "send", started_by="a\x00b")
    # COPY's own words (the JSON insert before it had others): the byte, the column.
    with pytest.raises(DatabaseError, match=r"(?s)0x00.*COPY s_tasks, line 1, column started_by"):
        app.create_many([{"identifier": "mailer", "action": "send", "started_by": "a\x00b"}])
    assert app.count() == 0


def test_a_lost_caller_connection_is_database_unavailable(app: Stask, dialect: str) -> None:
    if dialect != "postgresql":
        pytest.skip("ends the server's backend of the connection")
    app.create("mailer", "send")  # fills the worker cache
    for create in (
        lambda conn: app.create("mailer", "send", connection=conn),
        lambda conn: app.create_many([("mailer", "send")], connection=conn),
    ):
        with app.store.engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with app.store.engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DatabaseUnavailable):
                create(conn)
            assert conn.invalidated
    assert app.create("mailer", "send").status is Status.PENDING  # the pool carries on
    assert app.count() == 2


def test_create_many_names_the_first_bad_item_among_known_workers(app: Stask) -> None:
    with pytest.raises(UnknownAction, match=r"^item 2 of create_many: worker 'inventory' has no"):
        app.create_many(
            [("inventory", "sync_stock"), ("inventory", "syncStock"), ("inventory", "fly")]
        )
    with pytest.raises(ValidationError, match=r"^item 1 of create_many: max_attempts"):
        app.create_many(
            [("mailer", "send"), {"identifier": "mailer", "action": "send", "max_attempts": 0}]
        )
    app.deactivate("mailer")
    with pytest.raises(WorkerInactive, match=r"^item 1 of create_many: worker 'mailer'"):
        app.create_many([("inventory", "sync_stock"), ("mailer", "send"), ("mailer", "send")])
    assert app.count() == 0


def test_empty_options_are_held_to_the_size_limit_too(app: Stask) -> None:
    app.settings = dataclasses.replace(app.settings, max_options_bytes=1)
    with pytest.raises(ValidationError, match="2 bytes of JSON, over the limit of 1 bytes"):
        app.create("mailer", "send")
    with pytest.raises(ValidationError, match="item 0 of create_many: the task's options is 2"):
        app.create_many([("mailer", "send", {})])


@pytest.fixture
def second_store(db_url: str) -> Iterator[Any]:
    store = store_for(build_engine(db_url), parse_url(db_url))
    yield store
    store.dispose()


def test_unique_tasks_skip_a_taken_key_and_queue_only_the_created(
    app: Stask, second_store: Any
) -> None:
    def keyed(key: str) -> NewTask:
        return NewTask(identifier="mailer", action="send", options={"k": key}, unique_key=key)

    first = app.store.task_writes.insert_unique_tasks([keyed("a"), keyed("b")])
    again = second_store.task_writes.insert_unique_tasks([keyed("b"), keyed("c")])
    assert len(first) == 2
    assert len(again) == 1
    assert app.get(again[0]).unique_key == "c"
    assert app.store.task_reads.queued_count() == 3


def test_task_fields_survive_the_round_trip(app: Stask) -> None:
    """What create() returns is what get() reads, field by field, for varied arguments."""
    in_kyiv = dt.timezone(dt.timedelta(hours=3))
    made: list[Task] = [
        app.create("inventory", "sync_stock"),
        app.create(
            "mailer",
            "send",
            {"to": "ж@b.c", "nested": {"a": [1, 2.5, None, True]}},
            priority="high",
            run_at=dt.datetime(2031, 1, 2, 3, 4, 5, 6, tzinfo=in_kyiv),
            queue="mail",
            max_attempts=9,
            started_by="cli",
            timeout=1,
            deadline=dt.datetime(2031, 1, 3),
        ),
    ]
    for task in made:
        stored = app.get(task.id)
        for field in dataclasses.fields(Task):
            assert getattr(task, field.name) == getattr(stored, field.name), field.name
