"""An operator's actions on one task: cancel, retry (requeue a finished one) and delete.

Each locks the task in the claim's order (its ``s_queue`` row, then its ``s_tasks`` row) and is
retried when the database picked it as a deadlock victim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection, RowMapping, delete, select, update

from stask.db.rows import PENDING
from stask.db.tables import queue, task_logs, task_reruns, tasks
from stask.db.task_writes import enqueue_existing
from stask.models import Status, utcnow

if TYPE_CHECKING:
    from stask.db.store import Store


def _lock_for_operator(conn: Connection, task_id: int) -> RowMapping | None:
    """Lock a task for an operator action in the claim's order: its s_queue row, then the
    task row. Taken the other way round, a cancel and a claim deadlocked on MariaDB."""
    conn.execute(select(queue.c.task_id).where(queue.c.task_id == task_id).with_for_update())
    stmt = select(tasks.c.status, tasks.c.started_at, tasks.c.attempts, tasks.c.max_attempts).where(
        tasks.c.id == task_id
    )
    return conn.execute(stmt.with_for_update()).mappings().first()


class OperatorActions:
    """Cancel, retry and delete, on top of a Store's connections (``store.actions``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def cancel(self, task_id: int, message: str) -> tuple[Status, bool] | None:
        """Cancel a task: a pending one, or one a runner holds but has not started, at once; a
        running one is flagged to stop at its next checkpoint. Returns the status it had and
        whether it is cancelled now (None: no such task)."""
        return self.store.retrying(lambda: self._cancel(task_id, message))

    def _cancel(self, task_id: int, message: str) -> tuple[Status, bool] | None:
        now = utcnow()
        with self.store.writing() as conn:
            row = _lock_for_operator(conn, task_id)
            if row is None:
                return None
            status = Status.from_code(int(row["status"]))
            unstarted = status is Status.RUNNING and row["started_at"] is None
            if status is Status.PENDING or unstarted:
                conn.execute(delete(queue).where(queue.c.task_id == task_id))
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id, tasks.c.status == status.code)
                    .values(
                        status=Status.CANCELLED.code,
                        message=message,
                        finished_at=now,
                        updated_at=now,
                        eta_seconds=None,
                    )
                )
                return status, True
            if not status.is_final:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id)
                    .values(cancel_requested=True, updated_at=now)
                )
            return status, False

    def requeue_finished(self, task_id: int) -> Status | None:
        """Send a failed or cancelled task back to pending; returns the status it had."""
        return self.store.retrying(lambda: self._requeue_finished(task_id))

    def _requeue_finished(self, task_id: int) -> Status | None:
        now = utcnow()
        with self.store.writing() as conn:
            row = _lock_for_operator(conn, task_id)
            if row is None:
                return None
            status = Status.from_code(int(row["status"]))
            if status in (Status.FAILED, Status.CANCELLED):
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id)
                    .values(
                        status=PENDING,
                        run_at=now,
                        finished_at=None,
                        locked_by=None,
                        cancel_requested=False,
                        message="Queued again for retry",
                        max_attempts=max(int(row["max_attempts"]), int(row["attempts"]) + 1),
                        updated_at=now,
                    )
                )
                enqueue_existing(conn, [task_id])
                self.store.announce(conn, [{"run_at": now}], now)
            return status

    def delete_task(self, task_id: int) -> Status | None:
        """Delete a task that is not running (its queue row cascades, its logs go too)."""
        return self.store.retrying(lambda: self._delete_task(task_id))

    def _delete_task(self, task_id: int) -> Status | None:
        with self.store.writing() as conn:
            row = _lock_for_operator(conn, task_id)
            if row is None:
                return None
            status = Status.from_code(int(row["status"]))
            if status is Status.PENDING or status.is_final:
                conn.execute(delete(queue).where(queue.c.task_id == task_id))
                conn.execute(delete(task_logs).where(task_logs.c.task_id == task_id))
                conn.execute(delete(task_reruns).where(task_reruns.c.task_id == task_id))
                conn.execute(delete(tasks).where(tasks.c.id == task_id))
            return status
