"""Task log lines in ``s_task_logs``: an operator's lines, reading and clearing them. (The lines
a running attempt writes are fenced by its claim: db/claims.py.)"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from stask.db.rows import log_from_row
from stask.db.tables import task_logs
from stask.models import LogEntry

if TYPE_CHECKING:
    from stask.db.store import Store


class TaskLogs:
    """Log lines, on top of a Store's connections (``store.logs``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def insert_logs(self, entries: Sequence[Mapping[str, Any]]) -> None:
        if entries:
            with self.store.writing() as conn:
                conn.execute(insert(task_logs), [dict(entry) for entry in entries])

    def get_logs(
        self,
        task_id: int,
        *,
        levels: Sequence[str] | None = None,
        after_id: int | None = None,
        last: int | None = None,
    ) -> list[LogEntry]:
        clauses = [task_logs.c.task_id == task_id]
        if levels:
            clauses.append(task_logs.c.level.in_(levels))
        if after_id is not None:
            clauses.append(task_logs.c.id > after_id)
        stmt = select(task_logs).where(*clauses)
        if last is not None:
            stmt = stmt.order_by(task_logs.c.id.desc()).limit(last)
        else:
            stmt = stmt.order_by(task_logs.c.id)
        with self.store.reading() as conn:
            found = [log_from_row(row) for row in conn.execute(stmt).mappings()]
        return sorted(found, key=lambda entry: entry.id)

    def delete_task_logs(self, task_id: int) -> int:
        with self.store.writing() as conn:
            stmt = delete(task_logs).where(task_logs.c.task_id == task_id)
            return int(conn.execute(stmt).rowcount)
