"""Creating tasks: the ``s_tasks`` rows and their ``s_queue`` rows in one transaction, one
statement per 1,000 tasks; unique tasks (schedules) skip a taken ``unique_key``.

This is the Core path (MariaDB's, and the definition the others are tested against).
``stask.db.enqueue`` overrides create and create_many on PostgreSQL and SQLite (statements on
the driver connection) and how a taken key is skipped (ON CONFLICT / INSERT IGNORE).
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert, select

from stask.db.rows import PENDING, QUEUED_COLUMNS, task_from_row
from stask.db.tables import queue, task_reruns, tasks
from stask.models import JSONDict, NewTask, Task, utcnow

if TYPE_CHECKING:
    from stask.db.store import Store

# Built once: constructing it per create() coerced every column again (about 0.05 ms).
_INSERT_TASK = insert(tasks).returning(*tasks.c)


def new_task_rows(new: Sequence[NewTask], now: dt.datetime) -> list[dict[str, Any]]:
    """The columns of NEW_TASK_COLUMNS for each new task."""
    return [
        {
            "identifier": item.identifier,
            "action": item.action,
            "status": PENDING,
            "priority": item.priority.weight,
            "queue": item.queue,
            "meta": item.options,
            "max_attempts": item.max_attempts,
            "run_at": item.run_at or now,
            "started_by": item.started_by,
            "unique_key": item.unique_key,
            "timeout_seconds": item.timeout_seconds,
            "expires_at": item.expires_at,
            "created_at": now,
            "updated_at": now,
        }
        for item in new
    ]


# What a new row holds in the columns creating does not write: their server defaults.
UNWRITTEN_DEFAULTS: dict[str, Any] = {
    "result": None,
    "progress": 0,
    "processed": 0,
    "total": 0,
    "eta_seconds": None,
    "message": None,
    "error": None,
    "attempts": 0,
    "locked_by": None,
    "locked_at": None,
    "cancel_requested": False,
    "started_at": None,
    "finished_at": None,
    "duration_ms": None,
    "peak_memory": None,
    "claim_token": None,
}


def created_task(task_id: int, row: Mapping[str, Any], options: JSONDict) -> Task:
    """The Task that ``row`` (of ``new_task_rows``) is once inserted as ``task_id``, without
    reading it back; ``options`` is its ``meta`` as the database returns JSON (a fresh copy)."""
    stored = dict(UNWRITTEN_DEFAULTS)
    stored.update(row)
    stored["id"] = task_id
    stored["meta"] = options
    return task_from_row(stored)


def enqueue_existing(conn: Connection, task_ids: Sequence[int]) -> None:
    """Put existing pending tasks (back) into the claimable set."""
    conn.execute(
        insert(queue).from_select(
            ["task_id", "queue", "identifier", "priority", "run_at"],
            select(
                tasks.c.id, tasks.c.queue, tasks.c.identifier, tasks.c.priority, tasks.c.run_at
            ).where(tasks.c.id.in_(task_ids), tasks.c.status == PENDING),
        )
    )


class TaskWrites(abc.ABC):
    """Inserting tasks, on top of a Store's connections (``store.task_writes``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def insert_tasks(
        self, new: Sequence[NewTask], connection: Connection | None = None
    ) -> list[int]:
        """Insert tasks and their queue rows: one INSERT each per 1,000 tasks (SQLAlchemy's
        insertmanyvalues batch; PostgreSQL: one statement for both), never one per task."""
        if not new:
            return []
        now = utcnow()
        rows = new_task_rows(new, now)
        with self.store.writing(connection) as conn:
            ids = self._insert_queued(conn, rows)
            self.store.announce(conn, rows, now)
        return ids

    def link_rerun(self, conn: Connection, task_id: int, rerun_of: int, now: dt.datetime) -> None:
        """Record, in the caller's transaction, that ``task_id`` runs ``rerun_of`` again."""
        conn.execute(insert(task_reruns).values(task_id=task_id, rerun_of=rerun_of, created_at=now))

    def insert_task(self, new: NewTask, connection: Connection | None = None) -> Task:
        """One task, returned as stored: INSERT ... RETURNING, no read (or checkout) after it."""
        now = utcnow()
        rows = new_task_rows([new], now)
        with self.store.writing(connection) as conn:
            row = conn.execute(_INSERT_TASK, rows).mappings().one()
            _enqueue_new(conn, [int(row["id"])], rows)
            self.store.announce(conn, rows, now)
        return task_from_row(row)

    def _insert_queued(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert tasks (rows of ``new_task_rows``) and their queue rows; the new ids, in the
        order of ``rows``."""
        ids = self._insert_task_rows(conn, rows)
        _enqueue_new(conn, ids, rows)
        return ids

    def _insert_task_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        stmt = insert(tasks).returning(tasks.c.id, sort_by_parameter_order=True)
        return [int(row[0]) for row in conn.execute(stmt, rows)]

    def insert_unique_tasks(
        self, new: Sequence[NewTask], connection: Connection | None = None
    ) -> list[int]:
        """Insert tasks whose ``unique_key`` is not taken yet; the ids of those created.

        A taken key is skipped, not an error, so any number of processes can ask for the same
        task and one row exists. Queue rows are inserted only for the created tasks.
        """
        if any(item.unique_key is None for item in new):
            raise ValueError("insert_unique_tasks needs a unique_key on every task")
        if not new:
            return []
        with self.store.writing(connection) as conn:
            now = utcnow()
            rows = new_task_rows(new, now)
            ids = self._insert_unique_rows(conn, rows)
            if ids:
                enqueue_existing(conn, ids)
                self.store.announce(conn, rows, now)
        return ids

    @abc.abstractmethod
    def _insert_unique_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert the rows whose unique_key is free, skip the others; the new ids, ascending.

        The SQL differs per database (ON CONFLICT DO NOTHING / INSERT IGNORE): see dialects.py.
        """


def _enqueue_new(conn: Connection, ids: Sequence[int], rows: Sequence[Mapping[str, Any]]) -> None:
    """The s_queue rows of tasks just inserted (one INSERT per 1,000)."""
    conn.execute(
        insert(queue),
        [
            {"task_id": task_id, **{name: row[name] for name in QUEUED_COLUMNS}}
            for task_id, row in zip(ids, rows, strict=True)
        ],
    )
