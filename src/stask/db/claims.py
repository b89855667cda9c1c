"""The hot path of a runner: claim due tasks, start them, save their progress, record how their
attempts ended, and write their log lines - every write fenced by the claim.

``Claims`` holds the SQL every database shares; ``stask.db.dialects`` overrides the claim itself
(locking differs), the one-statement turn, the batched final UPDATE and the start of an attempt.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import itertools
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    Connection,
    Executable,
    RowMapping,
    TextClause,
    and_,
    bindparam,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnElement

from stask.db.queues import (
    PRESENT_QUEUES_SQL,
    QueueScope,
    claimable_clauses,
    held_back_queues,
    plan_claim,
    within_worker_rooms,
    worker_rooms,
)
from stask.db.rows import (
    RUNNING,
    attempt_fence,
    final_params,
    in_claim_order,
    outcome_params,
    task_from_row,
)
from stask.db.tables import queue, task_logs, tasks
from stask.db.task_writes import enqueue_existing
from stask.db.worker_rows import active_workers
from stask.models import Ahead, Claim, Outcome, Status, Task, utcnow

if TYPE_CHECKING:
    from stask.db.store import Store


def _keep_if_null(name: str) -> Any:
    column = tasks.c[name]
    return func.coalesce(bindparam(f"b_{name}", type_=column.type), column)


# Executed with many parameter sets at once, each fenced by its claim.
_FINISH_COMMON: dict[str, Any] = {
    "status": bindparam("b_status"),
    "message": bindparam("b_message"),
    "error": _keep_if_null("error"),
    "progress": _keep_if_null("progress"),
    "processed": _keep_if_null("processed"),
    "total": _keep_if_null("total"),
    "duration_ms": bindparam("b_duration_ms"),
    "peak_memory": bindparam("b_peak_memory"),
    "updated_at": bindparam("b_now"),
}
_FINISH_FINAL = (
    update(tasks)
    .where(attempt_fence(bindparam("b_id"), bindparam("b_token")))
    .values(
        **_FINISH_COMMON,
        result=bindparam("b_result", type_=tasks.c.result.type),
        finished_at=bindparam("b_now"),
        eta_seconds=0,
    )
)
_FINISH_RETRY = (
    update(tasks)
    .where(attempt_fence(bindparam("b_id"), bindparam("b_token")))
    .values(
        **_FINISH_COMMON,
        run_at=bindparam("b_run_at"),
        locked_by=None,
        eta_seconds=None,
        max_attempts=tasks.c.max_attempts + bindparam("b_extend"),
    )
)
# An attempt's log lines: written only while its claim still holds the task.
_ATTEMPT_LOG = insert(task_logs).from_select(
    ["task_id", "ts", "level", "message", "context"],
    select(
        tasks.c.id,
        bindparam("ts", type_=task_logs.c.ts.type),
        bindparam("level", type_=task_logs.c.level.type),
        bindparam("message", type_=task_logs.c.message.type),
        bindparam("context", type_=task_logs.c.context.type),
    ).where(attempt_fence(bindparam("task_id"), bindparam("token"))),
)
LOG_FIELDS = ("task_id", "ts", "level", "message", "context")


def held_by(claims: Sequence[Claim]) -> ColumnElement[bool]:
    """``attempt_fence`` for many claims at once: the rows they still hold."""
    return and_(
        tuple_(tasks.c.id, tasks.c.claim_token).in_([tuple(claim) for claim in claims]),
        tasks.c.status == RUNNING,
    )


def start_update(claim: Claim, now: dt.datetime) -> Update:
    """The UPDATE that starts a prefetched task: its attempt counted, its real start."""
    return (
        update(tasks)
        .where(attempt_fence(claim.id, claim.token), tasks.c.started_at.is_(None))
        .values(attempts=tasks.c.attempts + 1, started_at=now, updated_at=now)
    )


def new_claim_token() -> str:
    """A token no other claim has: every claim call writes its own.

    A random prefix per process and a counter: unique across processes and within one, and
    cheaper than reading the system's random source on every turn.
    """
    return f"{_TOKENS['prefix']}{next(_TOKEN_COUNTER):x}"


_TOKENS = {"prefix": secrets.token_hex(8)}
_TOKEN_COUNTER = itertools.count(1)
# A forked child must not repeat its parent's tokens.
os.register_at_fork(after_in_child=lambda: _TOKENS.update(prefix=secrets.token_hex(8)))


class Claims(abc.ABC):
    """Claiming and finishing, on top of a Store's connections (``store.claims``)."""

    finish_final_sql: ClassVar[TextClause | None] = None
    # The queues with tasks in s_queue (a skip scan); MariaDB has its own (dialects.py).
    present_queues_sql: ClassVar[TextClause] = PRESENT_QUEUES_SQL

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- claiming ----------------------------------------------------------------------------

    def claim(
        self,
        node_id: str,
        identifiers: Iterable[str],
        limit: int,
        *,
        start: int | None = None,
        queues: Sequence[str] | None = None,
        now: dt.datetime | None = None,
    ) -> list[Task]:
        """Atomically take up to ``limit`` due tasks, in priority, run_at, id order.

        Only tasks of ``identifiers`` (the workers this process can run) whose worker is active
        are taken. Claimed tasks leave ``s_queue`` and become running, locked by ``node_id``
        under a claim token of this call. The first ``start`` of them (default: all) start now:
        their attempt is counted and ``started_at`` set. The others are prefetched: held, not
        started, until ``start_attempt``. Paused queues are skipped; each limited queue is taken
        within its room (db/queues.py).
        """
        return self.record_and_claim(
            node_id, identifiers, limit, start=start, queues=queues, now=now
        )[0]

    def record_and_claim(
        self,
        node_id: str,
        identifiers: Iterable[str],
        limit: int,
        *,
        start: int | None = None,
        queues: Sequence[str] | None = None,
        ahead: Ahead | None = None,
        finished: Sequence[tuple[Claim, Outcome]] = (),
        logs: Sequence[Mapping[str, Any]] = (),
        now: dt.datetime | None = None,
    ) -> tuple[list[Task], set[int]]:
        """Record outcomes (as ``finish_many``), then claim (as ``claim``): one transaction.

        A runner that has outcomes to record whenever it has slots to fill saves a transaction
        (on SQLite, a commit's fsync) per turn. Returns the claimed tasks and the ids recorded.

        ``ahead`` limits what is claimed beyond the runner's free slots to short actions: of
        the ``limit`` due tasks in claim order, the first ``ahead.free`` are taken whatever
        their action, the others only when ``ahead.short`` names their worker's action.
        """
        local = sorted(set(identifiers))
        starting = limit if start is None else max(0, min(start, limit))
        if (limit <= 0 or not local) and not finished and not logs:
            return [], set()
        if ahead is not None and ahead.free >= limit:
            ahead = None  # nothing is claimed beyond the free slots
        token = new_claim_token()
        store = self.store
        if limit > 0 and local and not logs and all(o.status.is_final for _, o in finished):
            done = store.retrying(
                lambda: self._turn_in_one_statement(
                    node_id, token, local, limit, starting, queues, ahead, finished, now
                )
            )
            if done is not None:
                return done

        def work() -> tuple[list[Task], set[int]]:
            with store.writing() as conn:
                at = now or utcnow()
                recorded = self._record(conn, finished, logs, at)
                claimed: list[Task] = []
                if limit and ahead is None:
                    claimed = self._claim(conn, node_id, token, set(local), limit, queues, at)
                elif limit and ahead is not None:
                    # The free slots first, whatever the action; then short actions only.
                    claimed = self._claim(conn, node_id, token, set(local), ahead.free, queues, at)
                    claimed += self._claim(
                        conn, node_id, token, set(local), limit - len(claimed), queues, at, ahead
                    )
                claimed = self._start_first(conn, in_claim_order(claimed), starting, at)
            return claimed, recorded

        return store.retrying(work)

    def _start_first(
        self, conn: Connection, claimed: list[Task], count: int, now: dt.datetime
    ) -> list[Task]:
        """Start the first ``count`` of tasks the general claim took unstarted."""
        if not claimed or count <= 0:
            return claimed
        ids = [task.id for task in claimed[:count]]
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(ids))
            .values(attempts=tasks.c.attempts + 1, started_at=now)
        )
        begun = [
            dataclasses.replace(task, attempts=task.attempts + 1, started_at=now)
            for task in claimed[:count]
        ]
        return begun + claimed[count:]

    def start_attempt(self, claim: Claim, now: dt.datetime | None = None) -> int | None:
        """Start a prefetched task: count its attempt and record its real start. Returns the
        attempt number, or None when its claim no longer holds it (cancelled, rescued)."""
        with self.store.writing() as conn:
            if conn.execute(start_update(claim, now or utcnow())).rowcount == 0:
                return None
            attempts = conn.execute(
                select(tasks.c.attempts).where(tasks.c.id == claim.id)
            ).scalar_one()
        return int(attempts)

    def turn_statement(self, served: bool, limit: int, ahead: bool) -> Executable | None:
        """The one-statement turn of a dialect that has one (dialects.py), claiming at most
        ``limit`` from every queue or (``served``) from the served queues only; with
        ``ahead``, beyond the first ``:free`` only tasks of the ``:short`` actions. None: every
        turn is the general transaction."""
        return None

    def _turn_in_one_statement(
        self,
        node_id: str,
        token: str,
        local: list[str],
        limit: int,
        start: int,
        queues: Sequence[str] | None,
        ahead: Ahead | None,
        finished: Sequence[tuple[Claim, Outcome]],
        now: dt.datetime | None,
    ) -> tuple[list[Task], set[int]] | None:
        """The common turn (final outcomes only, no log lines) as one statement; None when
        the dialect has none or a queue or worker limit needs the general transaction."""
        statement = self.turn_statement(bool(queues), limit, ahead is not None)
        if statement is None:
            return None
        at = now or utcnow()
        with self.store.one_statement() as conn:
            if not self._plain_turn(conn, local, queues, at):
                return None
            params = {
                **final_params(finished, at),
                "node": node_id,
                "token": token,
                "idents": local,
                "limit": limit,
                "start": start,
            }
            if queues:
                params["queues"] = list(queues)
            if ahead is not None:
                params |= self._ahead_params(ahead)
            rows = conn.execute(statement, params).mappings().all()
        claimed, recorded = self._turn_result(rows)
        return in_claim_order(claimed), recorded

    def _turn_result(self, rows: Sequence[RowMapping]) -> tuple[list[Task], set[int]]:
        """The claimed tasks and the recorded ids in the rows of ``turn_statement``."""
        raise NotImplementedError

    def _ahead_params(self, ahead: Ahead) -> dict[str, Any]:
        """The ``:free`` and ``:short`` of a turn statement that claims ahead."""
        return {"free": ahead.free, "short": list(ahead.short)}

    def _plain_turn(
        self, conn: Connection, local: Sequence[str], queues: Sequence[str] | None, now: Any
    ) -> bool:
        """Whether a claim needs none of the split of ``_claim``: no served queue paused or
        limited, no runnable worker rate-limited (both from the 1 s caches)."""
        return not held_back_queues(
            self.store.control_cache.current(conn), queues, now
        ) and self.store.worker_limits.current(conn).keys().isdisjoint(local)

    def _claim(
        self,
        conn: Connection,
        node_id: str,
        token: str,
        local: set[str],
        limit: int,
        queues: Sequence[str] | None,
        now: dt.datetime,
        ahead: Ahead | None = None,
    ) -> list[Task]:
        """Claim up to ``limit`` (within queue and worker limits); with ``ahead``, only tasks of
        its short actions."""
        if limit <= 0:
            return []
        active = active_workers(conn)
        runnable = sorted(local.intersection(active))
        if not runnable:
            return []
        controls = self.store.control_cache.current(conn)
        plan = plan_claim(
            conn, controls, queues, runnable, limit, now, present=self._present_queues
        )
        limited = [found for name in runnable if (found := active[name]) is not None]
        if limited:
            rooms = worker_rooms(conn, limited, now)
            plan = within_worker_rooms(conn, plan, runnable, rooms, limit, now)
        if ahead is not None:
            scopes = [(dataclasses.replace(scope, short=ahead.short), n) for scope, n in plan]
            plan = scopes
        claimed: list[RowMapping] = []
        for scope, take in plan:
            claimed += self._claim_rows(conn, node_id, token, runnable, take, scope, now)
        return [task_from_row(row) for row in claimed]

    def _claimable(
        self, identifiers: Sequence[str], limit: int, scope: QueueScope, now: Any
    ) -> Any:
        """The SELECT of claimable queue rows shared by every dialect's claim; its LIMIT is
        written into the SQL so that PostgreSQL's generic plan is good (see ``_pg_turn``)."""
        where = claimable_clauses(identifiers, scope, now)
        if scope.short is not None:  # claimed ahead: tasks of short actions only
            where.append(
                queue.c.task_id.in_(
                    select(tasks.c.id).where(
                        tasks.c.id == queue.c.task_id,
                        tuple_(tasks.c.identifier, tasks.c.action).in_(
                            [tuple(key.split(":", 1)) for key in scope.short] or [("", "")]
                        ),
                    )
                )
            )
        return (
            select(queue.c.task_id)
            .where(*where)
            .order_by(queue.c.priority, queue.c.run_at, queue.c.task_id)
            .limit(literal_column(str(int(limit))))
        )

    def _present_queues(self, conn: Connection, cap: int) -> list[str]:
        """Names of up to ``cap`` queues that have tasks in ``s_queue``, in name order."""
        return [str(name) for name in conn.execute(self.present_queues_sql, {"cap": cap}).scalars()]

    def _claim_values(self, node_id: str, token: str, now: dt.datetime) -> dict[str, Any]:
        """What the general claim writes: held, not started (``_start_first`` starts them)."""
        return {
            "status": RUNNING,
            "locked_by": node_id,
            "locked_at": now,
            "claim_token": token,
            "started_at": None,
            "finished_at": None,
            "updated_at": now,
        }

    @abc.abstractmethod
    def _claim_rows(
        self,
        conn: Connection,
        node_id: str,
        token: str,
        identifiers: Sequence[str],
        limit: int,
        scope: QueueScope,
        now: dt.datetime,
    ) -> list[RowMapping]:
        """Take the rows in one transaction with the dialect's locking (see dialects.py)."""

    # -- finishing ---------------------------------------------------------------------------

    def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Record how an attempt ended; refused (False) unless its claim still holds the task."""
        return claim.id in self.finish_many([(claim, outcome)])

    def finish_many(
        self,
        finished: Sequence[tuple[Claim, Outcome]],
        logs: Sequence[Mapping[str, Any]] = (),
    ) -> set[int]:
        """Record many attempts' outcomes (and their log lines) in one transaction.

        Fenced: only tasks their claim still holds are written; the ids written are returned,
        the others lost their fence (rescued, cancelled, finished elsewhere) and keep what they
        have. Log lines (with ``token``) are fenced the same way. Retries go back into
        ``s_queue`` in the same transaction.
        """
        if not finished and not logs:
            return set()
        return self.store.retrying(lambda: self._record_alone(finished, logs))

    def _record_alone(
        self,
        finished: Sequence[tuple[Claim, Outcome]],
        logs: Sequence[Mapping[str, Any]],
    ) -> set[int]:
        with self.store.writing() as conn:
            return self._record(conn, finished, logs, utcnow())

    def _record(
        self,
        conn: Connection,
        finished: Sequence[tuple[Claim, Outcome]],
        logs: Sequence[Mapping[str, Any]],
        now: dt.datetime,
    ) -> set[int]:
        if logs:  # first: an outcome takes the task out of running, past the log lines' fence
            _insert_attempt_logs(conn, logs)
        final = [(claim, o) for claim, o in finished if o.status is not Status.PENDING]
        retried = [(claim, o) for claim, o in finished if o.status is Status.PENDING]
        held: set[int] = set()
        if final:
            held |= self._finish_final(conn, final, now)
        if retried:
            requeue = self._held(conn, [claim for claim, _ in retried])
            params = [outcome_params(c, o, now) for c, o in retried if c.id in requeue]
            if params:
                conn.execute(_FINISH_RETRY, params)
                enqueue_existing(conn, sorted(requeue))
            held |= requeue
        return held

    def _held(self, conn: Connection, claims: Sequence[Claim]) -> set[int]:
        """Lock and return the ids of those ``claims`` that still hold their task."""
        stmt = select(tasks.c.id).where(held_by(claims)).with_for_update()
        return {int(i) for i in conn.execute(stmt).scalars()}

    def _finish_final(
        self,
        conn: Connection,
        finished: Sequence[tuple[Claim, Outcome]],
        now: dt.datetime,
    ) -> set[int]:
        """Write final outcomes (completed, failed, cancelled) of held tasks; the ids written.

        With the dialect's ``finish_final_sql`` (one UPDATE joined to a JSON payload, RETURNING
        the ids written) that is one statement per batch; without it, lock the held rows and
        update them in one executemany.
        """
        if self.finish_final_sql is not None:
            result = conn.execute(self.finish_final_sql, final_params(finished, now))
            return {int(i) for i in result.scalars()}
        held = self._held(conn, [claim for claim, _ in finished])
        params = [outcome_params(c, o, now) for c, o in finished if c.id in held]
        if params:
            conn.execute(_FINISH_FINAL, params)
        return held

    # -- while an attempt runs ---------------------------------------------------------------

    def save_progress(self, claim: Claim, values: Mapping[str, Any]) -> bool | None:
        """Write a progress snapshot. None: the claim lost the task; else: cancel requested?"""
        with self.store.writing() as conn:
            stmt = (
                update(tasks)
                .where(attempt_fence(claim.id, claim.token))
                .values(updated_at=utcnow(), **values)
                .returning(tasks.c.cancel_requested)
            )
            flag = conn.execute(stmt).scalar_one_or_none()
        return None if flag is None else bool(flag)

    def cancel_flag(self, claim: Claim) -> bool | None:
        """Whether cancellation was requested; None if the claim no longer holds the task."""
        with self.store.reading() as conn:
            flag = conn.execute(
                select(tasks.c.cancel_requested).where(attempt_fence(claim.id, claim.token))
            ).scalar_one_or_none()
        return None if flag is None else bool(flag)

    def insert_attempt_logs(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Write log lines of running attempts (each entry names its claim's ``token``); the
        lines of an attempt whose claim no longer holds its task are refused."""
        if entries:
            with self.store.writing() as conn:
                _insert_attempt_logs(conn, entries)


def _insert_attempt_logs(conn: Connection, logs: Sequence[Mapping[str, Any]]) -> None:
    conn.execute(
        _ATTEMPT_LOG,
        [{name: entry[name] for name in (*LOG_FIELDS, "token")} for entry in logs],
    )
