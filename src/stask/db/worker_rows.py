"""Registered workers in ``s_workers``: rows as ``WorkerRecord`` values, registration, metadata
and settings changes (read-modify-write under the row's lock), and what claims read of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from stask.db.queues import WorkerLimit
from stask.db.rows import worker_from_row
from stask.db.tables import workers
from stask.errors import DatabaseError
from stask.models import JSONDict, NewTask, WorkerRecord, utcnow

if TYPE_CHECKING:
    from stask.db.store import Store


def active_workers(conn: Connection) -> dict[str, WorkerLimit | None]:
    """Active workers and their rate limits (None: unlimited), as claims see them."""
    c = workers.c
    stmt = select(c.identifier, c.rate_limit, c.rate_period_seconds).where(c.active.is_(True))
    return {
        name: None if rate is None or period is None else WorkerLimit(name, rate, period)
        for name, rate, period in conn.execute(stmt)
    }


class WorkerRows:
    """``s_workers``, on top of a Store's connections (``store.workers``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> list[WorkerRecord]:
        """Every registered worker, by position then identifier."""
        with self.store.reading() as conn:
            stmt = select(workers).order_by(workers.c.position, workers.c.identifier)
            return [worker_from_row(row) for row in conn.execute(stmt).mappings()]

    def get(self, identifier: str) -> WorkerRecord | None:
        with self.store.reading() as conn:
            stmt = select(workers).where(workers.c.identifier == identifier)
            row = conn.execute(stmt).mappings().first()
        return worker_from_row(row) if row else None

    def insert(self, values: Mapping[str, Any]) -> bool:
        """Register a worker; False if another process registered the identifier first."""
        now = utcnow()
        try:
            with self.store.writing() as conn:
                conn.execute(insert(workers).values(created_at=now, updated_at=now, **values))
        except DatabaseError as err:
            if isinstance(err.__cause__, IntegrityError):
                return False
            raise
        return True

    def update(self, identifier: str, values: Mapping[str, Any]) -> bool:
        """Change a worker's columns; False if no such worker is registered."""
        with self.store.writing() as conn:
            stmt = (
                update(workers)
                .where(workers.c.identifier == identifier)
                .values(updated_at=utcnow(), **values)
            )
            changed = conn.execute(stmt).rowcount > 0
        self.store.worker_limits.forget()  # after the commit, so no claim caches the old limits
        return changed

    def delete(self, identifiers: Sequence[str]) -> int:
        if not identifiers:
            return 0
        with self.store.writing() as conn:
            stmt = delete(workers).where(workers.c.identifier.in_(identifiers))
            return int(conn.execute(stmt).rowcount)

    def change_settings(
        self, identifier: str, change: Callable[[JSONDict], JSONDict]
    ) -> JSONDict | None:
        """Read-modify-write of a worker's stored settings under a row lock."""
        with self.store.writing() as conn:
            stmt = select(workers.c.settings).where(workers.c.identifier == identifier)
            current = conn.execute(stmt.with_for_update()).scalar_one_or_none()
            if current is None and not _worker_exists(conn, identifier):
                return None
            updated = change(dict(current or {}))
            conn.execute(
                update(workers)
                .where(workers.c.identifier == identifier)
                .values(settings=updated, updated_at=utcnow())
            )
            return updated

    def change_settings_with_tasks(
        self,
        identifier: str,
        plan: Callable[[JSONDict], tuple[JSONDict | None, Sequence[NewTask]]],
    ) -> list[int] | None:
        """Read-modify-write of a worker's settings plus unique tasks, in one transaction.

        Under the worker row's lock ``plan`` gets the stored settings and returns the settings
        to store (None: unchanged) and the tasks to insert with ``insert_unique_tasks``, so
        concurrent callers for one worker take turns, each seeing what the previous one stored.
        Returns the ids created, or None if no such worker exists.
        """
        with self.store.writing() as conn:
            stmt = select(workers.c.settings).where(workers.c.identifier == identifier)
            row = conn.execute(stmt.with_for_update()).first()
            if row is None:
                return None
            settings, new = plan(dict(row[0] or {}))
            writes = self.store.task_writes
            ids = writes.insert_unique_tasks(new, connection=conn) if new else []
            if settings is not None:
                conn.execute(
                    update(workers)
                    .where(workers.c.identifier == identifier)
                    .values(settings=settings, updated_at=utcnow())
                )
            return ids


def _worker_exists(conn: Connection, identifier: str) -> bool:
    stmt = select(workers.c.id).where(workers.c.identifier == identifier)
    return conn.execute(stmt).first() is not None
