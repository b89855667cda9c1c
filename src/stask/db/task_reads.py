"""Reading tasks: one by id, pages and counts by filter, the claimable set's size, and the
claims a node holds. Reads only; nothing here takes a lock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Connection, func, select, tuple_

from stask.db.rows import FINAL_CODES, RUNNING, filter_clauses, task_from_row
from stask.db.tables import queue, task_reruns, tasks
from stask.models import Claim, Status, Task, TaskFilter

if TYPE_CHECKING:
    from stask.db.store import Store


class TaskReads:
    """Queries over ``s_tasks`` and ``s_queue``, on top of a Store's connections."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get_task(self, task_id: int, connection: Connection | None = None) -> Task | None:
        stmt = select(tasks).where(tasks.c.id == task_id)
        if connection is not None:
            row = connection.execute(stmt).mappings().first()
        else:
            with self.store.reading() as conn:
                row = conn.execute(stmt).mappings().first()
        return task_from_row(row) if row else None

    def existing_task_ids(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        with self.store.reading() as conn:
            stmt = select(tasks.c.id).where(tasks.c.id.in_(task_ids))
            return {int(i) for i in conn.execute(stmt).scalars()}

    def list_tasks(
        self, where: TaskFilter, *, limit: int = 50, offset: int = 0, before_id: int | None = None
    ) -> list[Task]:
        clauses = filter_clauses(where)
        if before_id is not None:
            clauses.append(tasks.c.id < before_id)
        stmt = select(tasks).where(*clauses).order_by(tasks.c.id.desc()).limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        with self.store.reading() as conn:
            return [task_from_row(row) for row in conn.execute(stmt).mappings()]

    def count_tasks(self, where: TaskFilter) -> int:
        stmt = select(func.count()).select_from(tasks).where(*filter_clauses(where))
        with self.store.reading() as conn:
            return int(conn.execute(stmt).scalar_one())

    def count_by_status(self, where: TaskFilter | None = None) -> dict[Status, int]:
        clauses = filter_clauses(where) if where else []
        stmt = select(tasks.c.status, func.count()).where(*clauses).group_by(tasks.c.status)
        with self.store.reading() as conn:
            found = {Status.from_code(int(code)): int(n) for code, n in conn.execute(stmt)}
        return {status: found.get(status, 0) for status in Status}

    def count_by_worker(self) -> dict[str, int]:
        stmt = select(tasks.c.identifier, func.count()).group_by(tasks.c.identifier)
        with self.store.reading() as conn:
            return {identifier: int(n) for identifier, n in conn.execute(stmt)}

    def queued_count(self) -> int:
        with self.store.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(queue)).scalar_one())

    def running_task_ids(self, node_id: str | None = None) -> list[int]:
        return [claim.id for claim in self.running_claims(node_id)]

    def running_claims(self, node_id: str | None = None) -> list[Claim]:
        """The claims of running tasks (of ``node_id``, or of every node), by task id."""
        stmt = (
            select(tasks.c.id, tasks.c.claim_token)
            .where(tasks.c.status == RUNNING)
            .order_by(tasks.c.id)
        )
        if node_id is not None:
            stmt = stmt.where(tasks.c.locked_by == node_id)
        with self.store.reading() as conn:
            return [Claim(int(i), str(token or "")) for i, token in conn.execute(stmt)]

    def recent_durations(self, limit: int = 1000) -> list[tuple[str, str, float, int]]:
        """How long each worker's actions took in the newest ``limit`` finished attempts:
        (identifier, action, mean seconds, attempts), read along ``finished_at``'s index."""
        recent = (
            select(tasks.c.identifier, tasks.c.action, tasks.c.duration_ms)
            .where(tasks.c.finished_at.is_not(None))
            .order_by(tasks.c.finished_at.desc())
            .limit(limit)
        )
        sums: dict[tuple[str, str], list[int]] = {}
        with self.store.reading() as conn:
            for identifier, action, duration_ms in conn.execute(recent):
                if duration_ms is not None:
                    total = sums.setdefault((str(identifier), str(action)), [0, 0])
                    total[0] += max(0, int(duration_ms))
                    total[1] += 1
        return [
            (identifier, action, total / count / 1000, count)
            for (identifier, action), (total, count) in sorted(sums.items())
        ]

    def final_under(self, claims: Sequence[Claim]) -> set[int]:
        """Ids of those ``claims`` whose task is already final under that very claim (a finish
        whose commit landed though its answer was lost)."""
        if not claims:
            return set()
        stmt = select(tasks.c.id).where(
            tuple_(tasks.c.id, tasks.c.claim_token).in_([tuple(claim) for claim in claims]),
            tasks.c.status.in_(FINAL_CODES),
        )
        with self.store.reading() as conn:
            return {int(i) for i in conn.execute(stmt).scalars()}

    def reruns(self, task_id: int, limit: int = 20) -> tuple[int | None, list[int]]:
        """The task ``task_id`` was run again from (None: none), and the newest ``limit`` tasks
        run again from it."""
        with self.store.reading() as conn:
            origin = conn.execute(
                select(task_reruns.c.rerun_of).where(task_reruns.c.task_id == task_id)
            ).scalar_one_or_none()
            copies = conn.execute(
                select(task_reruns.c.task_id)
                .where(task_reruns.c.rerun_of == task_id)
                .order_by(task_reruns.c.task_id.desc())
                .limit(limit)
            ).scalars()
            return (None if origin is None else int(origin)), [int(i) for i in copies]
