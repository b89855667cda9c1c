"""Housekeeping: pruning finished tasks and old log lines in bounded batches, the upkeep a
runner does after each heartbeat (SQLite's WAL: see dialects.py), and emptying every table."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from stask.db.rows import FINAL_CODES
from stask.db.tables import ALL_TABLES, task_logs, task_reruns, tasks

if TYPE_CHECKING:
    from stask.db.store import Store

DELETE_BATCH = 1000


class Housekeeping:
    """Pruning and upkeep, on top of a Store's connections (``store.housekeeping``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def delete_finished_before(self, cutoff: dt.datetime) -> list[int]:
        """Delete finished tasks (and their logs) older than ``cutoff``, in bounded batches."""
        deleted: list[int] = []
        while True:
            with self.store.writing() as conn:
                ids = list(
                    conn.execute(
                        select(tasks.c.id)
                        .where(tasks.c.finished_at < cutoff, tasks.c.status.in_(FINAL_CODES))
                        .order_by(tasks.c.finished_at)
                        .limit(DELETE_BATCH)
                    ).scalars()
                )
                if not ids:
                    return deleted
                conn.execute(delete(task_logs).where(task_logs.c.task_id.in_(ids)))
                conn.execute(delete(task_reruns).where(task_reruns.c.task_id.in_(ids)))
                conn.execute(delete(tasks).where(tasks.c.id.in_(ids)))
            deleted.extend(int(i) for i in ids)

    def delete_logs_before(self, cutoff: dt.datetime) -> int:
        total = 0
        while True:
            with self.store.writing() as conn:
                ids = list(
                    conn.execute(
                        select(task_logs.c.id)
                        .where(task_logs.c.ts < cutoff)
                        .order_by(task_logs.c.id)
                        .limit(DELETE_BATCH)
                    ).scalars()
                )
                if not ids:
                    return total
                total += conn.execute(delete(task_logs).where(task_logs.c.id.in_(ids))).rowcount

    def maintain(self) -> None:
        """Upkeep a runner does after each heartbeat (SQLite's WAL); nothing on servers."""
        return  # PostgreSQL vacuums, and MariaDB purges, on their own

    def truncate_all(self) -> None:
        """Empty every stask table (tests and `stask` maintenance only)."""
        with self.store.writing() as conn:
            for table in reversed(ALL_TABLES):
                conn.execute(delete(table))
        self.store.control_cache.forget()
