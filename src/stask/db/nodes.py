"""Runner processes in ``s_nodes``: registration, heartbeats, and rescuing what dead ones held.

A node's heartbeat covers every task it holds, so running tasks never write heartbeats of their
own. A task is stale when it is running and locked by a node that has not heartbeated within the
lease (or has no row at all) and was locked before the lease began.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, RowMapping, case, delete, exists, insert, select, update

from stask.db.claims import held_by
from stask.db.rows import PENDING, RUNNING, attempt_fence
from stask.db.tables import nodes, task_logs, tasks
from stask.db.task_writes import enqueue_existing
from stask.models import Claim, JSONDict, NodeInfo, Rescue, Status, utcnow

if TYPE_CHECKING:
    from stask.db.store import Store

# A running task of a silent node, as rescue_stale reads it.
STALE_COLUMNS = (
    tasks.c.id,
    tasks.c.claim_token,
    tasks.c.locked_by,
    tasks.c.attempts,
    tasks.c.max_attempts,
    tasks.c.started_at,
    tasks.c.cancel_requested,
)
_StaleRow = Row[Any, Any, Any, Any, Any, Any, Any]


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

    def heartbeat(
        self, node_id: str, now: dt.datetime | None = None, pace: JSONDict | None = None
    ) -> bool:
        """Refresh the node's lease (and, given, what it learned about its tasks); False if
        its row is gone (another node declared it dead)."""
        values: dict[str, Any] = {"heartbeat_at": now or utcnow()}
        if pace is not None:
            values["pace"] = pace
        with self.store.writing() as conn:
            stmt = update(nodes).where(nodes.c.id == node_id).values(**values)
            return conn.execute(stmt).rowcount > 0

    def remove(self, node_id: str) -> None:
        with self.store.writing() as conn:
            conn.execute(delete(nodes).where(nodes.c.id == node_id))

    def all(self) -> list[RowMapping]:
        with self.store.reading() as conn:
            return list(conn.execute(select(nodes).order_by(nodes.c.started_at)).mappings())

    def rescue_stale(self, lease_seconds: float, now: dt.datetime | None = None) -> Rescue:
        """Take back the tasks held by nodes silent past the lease.

        A task whose cancel was requested ends cancelled; one its node never started goes back
        to the queue with its attempt unspent; a started one is requeued while attempts remain,
        else failed. Each task is taken over with an UPDATE fenced by its claim and by its node
        still being silent, so two rescuers running at once (any live node runs this) rescue a
        task once, and never one whose node came back meanwhile.
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
                select(*STALE_COLUMNS).where(tasks.c.status == RUNNING, tasks.c.locked_at < cutoff)
            ).all()
        stale = [row for row in running if row.locked_by not in live]
        ended: dict[Status, list[int]] = {
            s: [] for s in (Status.PENDING, Status.FAILED, Status.CANCELLED)
        }
        for row in stale:
            status = _rescued_status(row)
            if self._take_over(row, status, cutoff, now):
                ended[status].append(int(row.id))
        if dead:
            with self.store.writing() as conn:
                conn.execute(
                    delete(nodes).where(nodes.c.id.in_(dead), nodes.c.heartbeat_at < cutoff)
                )
        return Rescue(
            requeued=ended[Status.PENDING],
            failed=ended[Status.FAILED],
            dead_nodes=dead,
            cancelled=ended[Status.CANCELLED],
        )

    def _take_over(
        self,
        row: _StaleRow,
        status: Status,
        cutoff: dt.datetime,
        now: Any,
    ) -> bool:
        task_id, node_id = int(row.id), str(row.locked_by)
        reason = f"runner {node_id} stopped heartbeating while it held this task"
        values: dict[str, Any] = {"status": status.code, "updated_at": now}
        if status is Status.PENDING:
            started = row.started_at is not None
            values |= {"run_at": now, "locked_by": None}
            if started:
                values |= {"message": f"Rescued: {reason}; queued again", "error": reason}
            else:  # it never started: its attempt is not spent
                values["message"] = f"Rescued before it started: {reason}; queued again"
        elif status is Status.CANCELLED:
            values |= {
                "finished_at": now,
                "message": f"Cancelled: its cancel was requested and {reason}",
            }
        else:
            values |= {
                "finished_at": now,
                "message": f"Failed: {reason}, and no attempts are left",
                "error": reason,
            }
        # The node may have come back since the live set was read: then the task is its own.
        silent = ~exists().where(nodes.c.id == tasks.c.locked_by, nodes.c.heartbeat_at >= cutoff)
        fence = attempt_fence(task_id, row.claim_token)
        with self.store.writing() as conn:
            taken = update(tasks).where(fence, silent).values(**values)
            if conn.execute(taken).rowcount == 0:
                return False
            if status is Status.PENDING:
                enqueue_existing(conn, [task_id])
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

    def release(self, claims: Sequence[Claim], message: str) -> list[int]:
        """Give held tasks back to the queue without counting their attempt (shutdown, a lost
        lease); a task whose cancel was requested ends cancelled instead. Fenced by each claim.
        Returns the ids given back or ended."""
        if not claims:
            return []
        return self.store.retrying(lambda: self._release(claims, message))

    def _release(self, claims: Sequence[Claim], message: str) -> list[int]:
        now = utcnow()
        with self.store.writing() as conn:
            rows = conn.execute(
                select(tasks.c.id, tasks.c.cancel_requested)
                .where(held_by(claims))
                .with_for_update()
            ).all()
            requeue = [int(row.id) for row in rows if not row.cancel_requested]
            cancel = [int(row.id) for row in rows if row.cancel_requested]
            if requeue:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id.in_(requeue))
                    .values(
                        # A prefetched task never started: its attempt was never counted.
                        attempts=tasks.c.attempts
                        - case((tasks.c.started_at.is_(None), 0), else_=1),
                        status=PENDING,
                        run_at=now,
                        locked_by=None,
                        message=message,
                        updated_at=now,
                    )
                )
                enqueue_existing(conn, requeue)
            if cancel:
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id.in_(cancel))
                    .values(
                        status=Status.CANCELLED.code,
                        finished_at=now,
                        message="Cancelled: its cancel was requested before it finished",
                        updated_at=now,
                    )
                )
        return sorted(requeue + cancel)


def _rescued_status(row: _StaleRow) -> Status:
    """How a rescue ends a task of a silent node."""
    if row.cancel_requested:
        return Status.CANCELLED
    if row.attempts < row.max_attempts:  # a prefetched task's attempt was never counted
        return Status.PENDING
    return Status.FAILED
