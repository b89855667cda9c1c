"""Runner processes in ``s_nodes``: registration, heartbeats, and rescuing what dead ones held.

A node's heartbeat covers every task it holds, so running tasks never write heartbeats of their
own. A task is stale when it is running and locked by a node that has not heartbeated within the
lease (or has no row at all) and was locked before the lease began.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import RowMapping, delete, insert, select, update

from stask.db.rows import PENDING, RUNNING
from stask.db.store import Store
from stask.db.tables import nodes, task_logs, tasks
from stask.models import Status, utcnow


@dataclass(frozen=True, slots=True)
class Rescue:
    """What one rescue pass did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    dead_nodes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    id: str
    host: str
    pid: int
    concurrency: int
    queues: list[str]
    version: str


class NodeStore:
    """The SQL of runner liveness, on top of a Store's connections."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, node: NodeInfo, now: dt.datetime | None = None) -> None:
        now = now or utcnow()
        with self.store.writing() as conn:
            conn.execute(delete(nodes).where(nodes.c.id == node.id))
            conn.execute(
                insert(nodes).values(
                    id=node.id,
                    host=node.host,
                    pid=node.pid,
                    concurrency=node.concurrency,
                    queues=node.queues,
                    version=node.version,
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    def heartbeat(self, node_id: str, now: dt.datetime | None = None) -> bool:
        """Refresh the node's lease; False if its row is gone (another node declared it dead)."""
        with self.store.writing() as conn:
            stmt = update(nodes).where(nodes.c.id == node_id).values(heartbeat_at=now or utcnow())
            return conn.execute(stmt).rowcount > 0

    def remove(self, node_id: str) -> None:
        with self.store.writing() as conn:
            conn.execute(delete(nodes).where(nodes.c.id == node_id))

    def all(self) -> list[RowMapping]:
        with self.store.reading() as conn:
            return list(conn.execute(select(nodes).order_by(nodes.c.started_at)).mappings())

    def rescue_stale(self, lease_seconds: float, now: dt.datetime | None = None) -> Rescue:
        """Requeue (or fail, when out of attempts) tasks held by nodes silent past the lease.

        Each task is taken over with a fenced UPDATE, so two rescuers running at once (any live
        node runs this) rescue a task once.
        """
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=lease_seconds)
        with self.store.reading() as conn:
            live = set(
                conn.execute(select(nodes.c.id).where(nodes.c.heartbeat_at >= cutoff)).scalars()
            )
            dead = list(
                conn.execute(select(nodes.c.id).where(nodes.c.heartbeat_at < cutoff)).scalars()
            )
            running = conn.execute(
                select(tasks.c.id, tasks.c.locked_by, tasks.c.attempts, tasks.c.max_attempts).where(
                    tasks.c.status == RUNNING, tasks.c.locked_at < cutoff
                )
            ).all()
        stale = [row for row in running if row.locked_by not in live]
        requeued: list[int] = []
        failed: list[int] = []
        for row in stale:
            if self._take_over(row.id, row.locked_by, row.attempts < row.max_attempts, now):
                (requeued if row.attempts < row.max_attempts else failed).append(int(row.id))
        if dead:
            with self.store.writing() as conn:
                conn.execute(
                    delete(nodes).where(nodes.c.id.in_(dead), nodes.c.heartbeat_at < cutoff)
                )
        return Rescue(requeued=requeued, failed=failed, dead_nodes=dead)

    def _take_over(self, task_id: int, node_id: str, retry: bool, now: dt.datetime) -> bool:
        reason = f"runner {node_id} stopped heartbeating while it held this task"
        fence = (tasks.c.id == task_id, tasks.c.locked_by == node_id, tasks.c.status == RUNNING)
        if retry:
            values = {
                "status": PENDING,
                "run_at": now,
                "locked_by": None,
                "message": f"Rescued: {reason}; queued again",
                "error": reason,
                "updated_at": now,
            }
        else:
            values = {
                "status": Status.FAILED.code,
                "finished_at": now,
                "message": f"Failed: {reason}, and no attempts are left",
                "error": reason,
                "updated_at": now,
            }
        with self.store.writing() as conn:
            if conn.execute(update(tasks).where(*fence).values(**values)).rowcount == 0:
                return False
            if retry:
                self.store.enqueue_existing(conn, [task_id])
            conn.execute(
                insert(task_logs).values(
                    task_id=task_id,
                    ts=now,
                    level="warning",
                    message=values["message"],
                    context={"node": node_id},
                )
            )
        return True

    def release(self, node_id: str, task_ids: Sequence[int], message: str) -> list[int]:
        """Give held tasks back to the queue without counting the attempt (shutdown)."""
        if not task_ids:
            return []
        return self.store.retrying(lambda: self._release(node_id, task_ids, message))

    def _release(self, node_id: str, task_ids: Sequence[int], message: str) -> list[int]:
        now = utcnow()
        with self.store.writing() as conn:
            held = [
                int(i)
                for i in conn.execute(
                    select(tasks.c.id)
                    .where(
                        tasks.c.id.in_(task_ids),
                        tasks.c.locked_by == node_id,
                        tasks.c.status == RUNNING,
                    )
                    .with_for_update()
                ).scalars()
            ]
            if held:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id.in_(held), tasks.c.locked_by == node_id)
                    .values(
                        status=PENDING,
                        run_at=now,
                        locked_by=None,
                        attempts=tasks.c.attempts - 1,
                        message=message,
                        updated_at=now,
                    )
                )
                self.store.enqueue_existing(conn, held)
        return held
