"""The storage contract: every SQL statement stask runs, behind one small interface.

``Store`` holds the SQL that is the same on every database; ``stask.db.dialects`` overrides the
few operations whose SQL must differ (the claim, bulk insert, progress with its cancel flag).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import datetime as dt
import itertools
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    RowMapping,
    TextClause,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.elements import ColumnElement

from stask.db.engine import translate_errors
from stask.db.queues import (
    PRESENT_QUEUES_SQL,
    QueueScope,
    WorkerLimit,
    claimable_clauses,
    held_back_queues,
    plan_claim,
    shared_control_cache,
    shared_worker_limits_cache,
    within_worker_rooms,
    worker_rooms,
)
from stask.db.rows import (
    FINAL_CODES,
    PENDING,
    QUEUED_COLUMNS,
    RUNNING,
    NewTask,
    Outcome,
    TaskFilter,
    attempt_fence,
    final_params,
    in_claim_order,
    log_from_row,
    outcome_params,
    task_from_row,
)
from stask.db.tables import ALL_TABLES, queue, task_logs, tasks, workers
from stask.errors import DatabaseConflict, DatabaseError, StaskError
from stask.models import Claim, JSONDict, LogEntry, Status, Task, utcnow

if TYPE_CHECKING:
    from stask.db.notify import WakeSource

# Built once: constructing it per create() coerced every column again (about 0.05 ms).
_INSERT_TASK = insert(tasks).returning(*tasks.c)
DELETE_BATCH = 1000


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


T = TypeVar("T")
# How often a transaction the database aborted as a deadlock victim (or after a lock wait
# timeout) is run again before the error goes to the caller.
TRANSIENT_RETRIES = 8


class Store(abc.ABC):
    """SQL shared by all dialects. Methods are small, named for what they change."""

    dialect = "generic"
    finish_final_sql: ClassVar[TextClause | None] = None

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self.url = url
        database = url.render_as_string(hide_password=False)
        self.control_cache = shared_control_cache(database)
        self.worker_limits = shared_worker_limits_cache(database)

    # -- connections -------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, connection: Connection | None = None) -> Iterator[Connection]:
        """A write transaction, or the caller's own connection (committed by the caller)."""
        with translate_errors(self.url):
            if connection is not None:
                yield connection
                return
            with self.engine.begin() as conn:
                yield conn

    def transient(self, err: StaskError) -> bool:
        """Whether the database aborted the transaction and asks for it to be run again."""
        return isinstance(err, DatabaseConflict)

    def retrying(self, work: Callable[[], T]) -> T:
        """Run ``work`` (one whole transaction) again, with jitter, when it was a deadlock victim.

        InnoDB and PostgreSQL abort one of two transactions that wait on each other; the
        documented answer is to retry it. ``work`` must open its own transaction.
        """
        for attempt in range(TRANSIENT_RETRIES):
            try:
                return work()
            except StaskError as err:
                if attempt == TRANSIENT_RETRIES - 1 or not self.transient(err):
                    raise
                time.sleep(random.uniform(0.001, 0.01) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        with translate_errors(self.url), self.engine.connect() as conn:
            yield conn.execution_options(stask_readonly=True)

    def ping(self) -> None:
        with self.reading() as conn:
            conn.execute(select(func.count()).select_from(workers))

    def dispose(self) -> None:
        self.engine.dispose()

    # -- workers -----------------------------------------------------------------------------

    def list_workers(self) -> list[RowMapping]:
        with self.reading() as conn:
            stmt = select(workers).order_by(workers.c.position, workers.c.identifier)
            return list(conn.execute(stmt).mappings())

    def get_worker(self, identifier: str) -> RowMapping | None:
        with self.reading() as conn:
            stmt = select(workers).where(workers.c.identifier == identifier)
            return conn.execute(stmt).mappings().first()

    def insert_worker(self, values: Mapping[str, Any]) -> bool:
        """Register a worker; False if another process registered the identifier first."""
        now = utcnow()
        try:
            with self.writing() as conn:
                conn.execute(insert(workers).values(created_at=now, updated_at=now, **values))
        except DatabaseError as err:
            if isinstance(err.__cause__, IntegrityError):
                return False
            raise
        return True

    def update_worker(self, identifier: str, values: Mapping[str, Any]) -> bool:
        with self.writing() as conn:
            stmt = (
                update(workers)
                .where(workers.c.identifier == identifier)
                .values(updated_at=utcnow(), **values)
            )
            changed = conn.execute(stmt).rowcount > 0
        self.worker_limits.forget()  # after the commit, so no claim caches the old limits
        return changed

    def delete_workers(self, identifiers: Sequence[str]) -> int:
        if not identifiers:
            return 0
        with self.writing() as conn:
            stmt = delete(workers).where(workers.c.identifier.in_(identifiers))
            return int(conn.execute(stmt).rowcount)

    def change_worker_settings(
        self, identifier: str, change: Callable[[JSONDict], JSONDict]
    ) -> JSONDict | None:
        """Read-modify-write of a worker's stored settings under a row lock."""
        with self.writing() as conn:
            stmt = select(workers.c.settings).where(workers.c.identifier == identifier)
            current = conn.execute(stmt.with_for_update()).scalar_one_or_none()
            if current is None and not self._worker_exists(conn, identifier):
                return None
            updated = change(dict(current or {}))
            conn.execute(
                update(workers)
                .where(workers.c.identifier == identifier)
                .values(settings=updated, updated_at=utcnow())
            )
            return updated

    @staticmethod
    def _worker_exists(conn: Connection, identifier: str) -> bool:
        stmt = select(workers.c.id).where(workers.c.identifier == identifier)
        return conn.execute(stmt).first() is not None

    def active_workers(self, conn: Connection) -> dict[str, WorkerLimit | None]:
        """Active workers and their rate limits (None: unlimited), as claims see them."""
        c = workers.c
        stmt = select(c.identifier, c.rate_limit, c.rate_period_seconds).where(c.active.is_(True))
        return {
            name: None if rate is None or period is None else WorkerLimit(name, rate, period)
            for name, rate, period in conn.execute(stmt)
        }

    # -- creating ----------------------------------------------------------------------------

    def insert_tasks(
        self, new: Sequence[NewTask], connection: Connection | None = None
    ) -> list[int]:
        """Insert tasks and their queue rows: one INSERT each per 1,000 tasks (SQLAlchemy's
        insertmanyvalues batch; PostgreSQL: one statement for both), never one per task."""
        if not new:
            return []
        now = utcnow()
        rows = self._new_task_rows(new, now)
        with self.writing(connection) as conn:
            ids = self._insert_queued(conn, rows)
            self._announce(conn, rows, now)
        return ids

    def insert_task(self, new: NewTask, connection: Connection | None = None) -> Task:
        """One task, returned as stored: INSERT ... RETURNING, no read (or checkout) after it."""
        now = utcnow()
        rows = self._new_task_rows([new], now)
        with self.writing(connection) as conn:
            row = conn.execute(_INSERT_TASK, rows).mappings().one()
            self._enqueue_new(conn, [int(row["id"])], rows)
            self._announce(conn, rows, now)
        return task_from_row(row)

    def _enqueue_new(
        self, conn: Connection, ids: Sequence[int], rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """The s_queue rows of tasks just inserted (one INSERT per 1,000)."""
        conn.execute(
            insert(queue),
            [
                {"task_id": task_id, **{name: row[name] for name in QUEUED_COLUMNS}}
                for task_id, row in zip(ids, rows, strict=True)
            ],
        )

    def _announce(self, conn: Connection, rows: Sequence[Mapping[str, Any]], now: Any) -> None:
        """Tell idle runners that tasks due now were inserted (PostgreSQL: NOTIFY)."""
        return  # MariaDB has no push: its runners poll adaptively

    def wake_source(self, on_wake: Callable[[], None]) -> WakeSource | None:
        """What wakes an idle runner when another process enqueues (None: polling only)."""
        return None

    def maintain(self) -> None:
        """Upkeep a runner does after each heartbeat (SQLite's WAL); nothing on servers."""
        return  # PostgreSQL vacuums, and MariaDB purges, on their own

    def _insert_queued(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert tasks (rows of ``_new_task_rows``) and their queue rows; the new ids, in the
        order of ``rows``."""
        ids = self._insert_task_rows(conn, rows)
        self._enqueue_new(conn, ids, rows)
        return ids

    def _insert_task_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        stmt = insert(tasks).returning(tasks.c.id, sort_by_parameter_order=True)
        return [int(row[0]) for row in conn.execute(stmt, rows)]

    # -- reading -----------------------------------------------------------------------------

    def get_task(self, task_id: int, connection: Connection | None = None) -> Task | None:
        stmt = select(tasks).where(tasks.c.id == task_id)
        if connection is not None:
            row = connection.execute(stmt).mappings().first()
        else:
            with self.reading() as conn:
                row = conn.execute(stmt).mappings().first()
        return task_from_row(row) if row else None

    def existing_task_ids(self, task_ids: Sequence[int]) -> set[int]:
        if not task_ids:
            return set()
        with self.reading() as conn:
            stmt = select(tasks.c.id).where(tasks.c.id.in_(task_ids))
            return {int(i) for i in conn.execute(stmt).scalars()}

    def list_tasks(
        self, where: TaskFilter, *, limit: int = 50, offset: int = 0, before_id: int | None = None
    ) -> list[Task]:
        clauses = where.clauses()
        if before_id is not None:
            clauses.append(tasks.c.id < before_id)
        stmt = select(tasks).where(*clauses).order_by(tasks.c.id.desc()).limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        with self.reading() as conn:
            return [task_from_row(row) for row in conn.execute(stmt).mappings()]

    def count_tasks(self, where: TaskFilter) -> int:
        stmt = select(func.count()).select_from(tasks).where(*where.clauses())
        with self.reading() as conn:
            return int(conn.execute(stmt).scalar_one())

    def count_by_status(self, where: TaskFilter | None = None) -> dict[Status, int]:
        clauses = where.clauses() if where else []
        stmt = select(tasks.c.status, func.count()).where(*clauses).group_by(tasks.c.status)
        with self.reading() as conn:
            found = {Status.from_code(int(code)): int(n) for code, n in conn.execute(stmt)}
        return {status: found.get(status, 0) for status in Status}

    def count_by_worker(self) -> dict[str, int]:
        stmt = select(tasks.c.identifier, func.count()).group_by(tasks.c.identifier)
        with self.reading() as conn:
            return {identifier: int(n) for identifier, n in conn.execute(stmt)}

    def queued_count(self) -> int:
        with self.reading() as conn:
            return int(conn.execute(select(func.count()).select_from(queue)).scalar_one())

    # -- claiming and finishing --------------------------------------------------------------

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
        finished: Sequence[tuple[Claim, Outcome]] = (),
        logs: Sequence[Mapping[str, Any]] = (),
        now: dt.datetime | None = None,
    ) -> tuple[list[Task], set[int]]:
        """Record outcomes (as ``finish_many``), then claim (as ``claim``): one transaction.

        A runner that has outcomes to record whenever it has slots to fill saves a transaction
        (on SQLite, a commit's fsync) per turn. Returns the claimed tasks and the ids recorded.
        """
        local = sorted(set(identifiers))
        starting = limit if start is None else max(0, min(start, limit))
        if (limit <= 0 or not local) and not finished and not logs:
            return [], set()
        token = new_claim_token()
        if limit > 0 and local and not logs and all(o.status.is_final for _, o in finished):
            done = self.retrying(
                lambda: self._turn_in_one_statement(
                    node_id, token, local, limit, starting, queues, finished, now
                )
            )
            if done is not None:
                return done

        def work() -> tuple[list[Task], set[int]]:
            with self.writing() as conn:
                at = now or utcnow()
                recorded = self._record(conn, finished, logs, at)
                claimed = (
                    self._claim(conn, node_id, token, set(local), limit, queues, at)
                    if limit
                    else []
                )
                claimed = self._start_first(conn, in_claim_order(claimed), starting, at)
            return claimed, recorded

        return self.retrying(work)

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
        with self.writing() as conn:
            if conn.execute(start_update(claim, now or utcnow())).rowcount == 0:
                return None
            attempts = conn.execute(
                select(tasks.c.attempts).where(tasks.c.id == claim.id)
            ).scalar_one()
        return int(attempts)

    def turn_statement(self, served: bool, limit: int) -> Executable | None:
        """The one-statement turn of a dialect that has one (dialects.py), claiming at most
        ``limit`` from every queue or (``served``) from the served queues only. None: every
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
        finished: Sequence[tuple[Claim, Outcome]],
        now: dt.datetime | None,
    ) -> tuple[list[Task], set[int]] | None:
        """The common turn (final outcomes only, no log lines) as one statement; None when
        the dialect has none or a queue or worker limit needs the general transaction."""
        statement = self.turn_statement(bool(queues), limit)
        if statement is None:
            return None
        at = now or utcnow()
        with self._one_statement() as conn:
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
            rows = conn.execute(statement, params).mappings().all()
        claimed, recorded = self._turn_result(rows)
        return in_claim_order(claimed), recorded

    def _one_statement(self) -> contextlib.AbstractContextManager[Connection]:
        """Where a statement that is a whole transaction runs (PostgreSQL: autocommit)."""
        return self.writing()

    def _turn_result(self, rows: Sequence[RowMapping]) -> tuple[list[Task], set[int]]:
        """The claimed tasks and the recorded ids in the rows of ``turn_statement``."""
        raise NotImplementedError

    def _plain_turn(
        self, conn: Connection, local: Sequence[str], queues: Sequence[str] | None, now: Any
    ) -> bool:
        """Whether a claim needs none of the split of ``_claim``: no served queue paused or
        limited, no runnable worker rate-limited (both from the 1 s caches)."""
        return not held_back_queues(
            self.control_cache.current(conn), queues, now
        ) and self.worker_limits.current(conn).keys().isdisjoint(local)

    def _claim(
        self,
        conn: Connection,
        node_id: str,
        token: str,
        local: set[str],
        limit: int,
        queues: Sequence[str] | None,
        now: dt.datetime,
    ) -> list[Task]:
        active = self.active_workers(conn)
        runnable = sorted(local.intersection(active))
        if not runnable:
            return []
        controls = self.control_cache.current(conn)
        plan = plan_claim(
            conn, controls, queues, runnable, limit, now, present=self._present_queues
        )
        limited = [found for name in runnable if (found := active[name]) is not None]
        if limited:
            rooms = worker_rooms(conn, limited, now)
            plan = within_worker_rooms(conn, plan, runnable, rooms, limit, now)
        claimed: list[RowMapping] = []
        for scope, take in plan:
            claimed += self._claim_rows(conn, node_id, token, runnable, take, scope, now)
        return [task_from_row(row) for row in claimed]

    def _claimable(
        self, identifiers: Sequence[str], limit: int, scope: QueueScope, now: Any
    ) -> Any:
        """The SELECT of claimable queue rows shared by every dialect's claim; its LIMIT is
        written into the SQL so that PostgreSQL's generic plan is good (see ``_pg_turn``)."""
        return (
            select(queue.c.task_id)
            .where(*claimable_clauses(identifiers, scope, now))
            .order_by(queue.c.priority, queue.c.run_at, queue.c.task_id)
            .limit(literal_column(str(int(limit))))
        )

    # The queues with tasks in s_queue (a skip scan); MariaDB has its own (dialects.py).
    present_queues_sql: ClassVar[TextClause] = PRESENT_QUEUES_SQL

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
        return self.retrying(lambda: self._record_alone(finished, logs))

    def _record_alone(
        self,
        finished: Sequence[tuple[Claim, Outcome]],
        logs: Sequence[Mapping[str, Any]],
    ) -> set[int]:
        with self.writing() as conn:
            return self._record(conn, finished, logs, utcnow())

    def _record(
        self,
        conn: Connection,
        finished: Sequence[tuple[Claim, Outcome]],
        logs: Sequence[Mapping[str, Any]],
        now: dt.datetime,
    ) -> set[int]:
        if logs:  # first: an outcome takes the task out of running, past the log lines' fence
            self._insert_attempt_logs(conn, logs)
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
                self.enqueue_existing(conn, sorted(requeue))
            held |= requeue
        return held

    @staticmethod
    def _insert_attempt_logs(conn: Connection, logs: Sequence[Mapping[str, Any]]) -> None:
        conn.execute(
            _ATTEMPT_LOG,
            [{name: entry[name] for name in (*LOG_FIELDS, "token")} for entry in logs],
        )

    def insert_attempt_logs(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Write log lines of running attempts (each entry names its claim's ``token``); the
        lines of an attempt whose claim no longer holds its task are refused."""
        if entries:
            with self.writing() as conn:
                self._insert_attempt_logs(conn, entries)

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

    def enqueue_existing(self, conn: Connection, task_ids: Sequence[int]) -> None:
        """Put existing pending tasks (back) into the claimable set."""
        conn.execute(
            insert(queue).from_select(
                ["task_id", "queue", "identifier", "priority", "run_at"],
                select(
                    tasks.c.id, tasks.c.queue, tasks.c.identifier, tasks.c.priority, tasks.c.run_at
                ).where(tasks.c.id.in_(task_ids), tasks.c.status == PENDING),
            )
        )

    def save_progress(self, claim: Claim, values: Mapping[str, Any]) -> bool | None:
        """Write a progress snapshot. None: the claim lost the task; else: cancel requested?"""
        with self.writing() as conn:
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
        with self.reading() as conn:
            flag = conn.execute(
                select(tasks.c.cancel_requested).where(attempt_fence(claim.id, claim.token))
            ).scalar_one_or_none()
        return None if flag is None else bool(flag)

    # -- operator actions --------------------------------------------------------------------

    @staticmethod
    def _lock_for_operator(conn: Connection, task_id: int) -> RowMapping | None:
        """Lock a task for an operator action in the claim's order: its s_queue row, then the
        task row. Taken the other way round, a cancel and a claim deadlocked on MariaDB."""
        conn.execute(select(queue.c.task_id).where(queue.c.task_id == task_id).with_for_update())
        stmt = select(
            tasks.c.status, tasks.c.started_at, tasks.c.attempts, tasks.c.max_attempts
        ).where(tasks.c.id == task_id)
        return conn.execute(stmt.with_for_update()).mappings().first()

    def cancel(self, task_id: int, message: str) -> tuple[Status, bool] | None:
        """Cancel a task: a pending one, or one a runner holds but has not started, at once; a
        running one is flagged to stop at its next checkpoint. Returns the status it had and
        whether it is cancelled now (None: no such task)."""
        return self.retrying(lambda: self._cancel(task_id, message))

    def _cancel(self, task_id: int, message: str) -> tuple[Status, bool] | None:
        now = utcnow()
        with self.writing() as conn:
            row = self._lock_for_operator(conn, task_id)
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
        return self.retrying(lambda: self._requeue_finished(task_id))

    def _requeue_finished(self, task_id: int) -> Status | None:
        now = utcnow()
        with self.writing() as conn:
            row = self._lock_for_operator(conn, task_id)
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
                self.enqueue_existing(conn, [task_id])
                self._announce(conn, [{"run_at": now}], now)
            return status

    def delete_task(self, task_id: int) -> Status | None:
        """Delete a task that is not running (its queue row cascades, its logs go too)."""
        return self.retrying(lambda: self._delete_task(task_id))

    def _delete_task(self, task_id: int) -> Status | None:
        with self.writing() as conn:
            row = self._lock_for_operator(conn, task_id)
            if row is None:
                return None
            status = Status.from_code(int(row["status"]))
            if status is Status.PENDING or status.is_final:
                conn.execute(delete(queue).where(queue.c.task_id == task_id))
                conn.execute(delete(task_logs).where(task_logs.c.task_id == task_id))
                conn.execute(delete(tasks).where(tasks.c.id == task_id))
            return status

    # -- housekeeping ------------------------------------------------------------------------

    def delete_finished_before(self, cutoff: dt.datetime) -> list[int]:
        """Delete finished tasks (and their logs) older than ``cutoff``, in bounded batches."""
        deleted: list[int] = []
        while True:
            with self.writing() as conn:
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
                conn.execute(delete(tasks).where(tasks.c.id.in_(ids)))
            deleted.extend(int(i) for i in ids)

    def delete_logs_before(self, cutoff: dt.datetime) -> int:
        total = 0
        while True:
            with self.writing() as conn:
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

    # -- logs --------------------------------------------------------------------------------

    def insert_logs(self, entries: Sequence[Mapping[str, Any]]) -> None:
        if entries:
            with self.writing() as conn:
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
        with self.reading() as conn:
            found = [log_from_row(row) for row in conn.execute(stmt).mappings()]
        return sorted(found, key=lambda entry: entry.id)

    def delete_task_logs(self, task_id: int) -> int:
        with self.writing() as conn:
            stmt = delete(task_logs).where(task_logs.c.task_id == task_id)
            return int(conn.execute(stmt).rowcount)

    # -- test and maintenance helpers ----------------------------------------------------------

    def truncate_all(self) -> None:
        """Empty every stask table (tests and `stask` maintenance only)."""
        with self.writing() as conn:
            for table in reversed(ALL_TABLES):
                conn.execute(delete(table))
        self.control_cache.forget()

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
        with self.reading() as conn:
            return [Claim(int(i), str(token or "")) for i, token in conn.execute(stmt)]

    def final_under(self, claims: Sequence[Claim]) -> set[int]:
        """Ids of those ``claims`` whose task is already final under that very claim (a finish
        whose commit landed though its answer was lost)."""
        if not claims:
            return set()
        stmt = select(tasks.c.id).where(
            tuple_(tasks.c.id, tasks.c.claim_token).in_([tuple(claim) for claim in claims]),
            tasks.c.status.in_(FINAL_CODES),
        )
        with self.reading() as conn:
            return {int(i) for i in conn.execute(stmt).scalars()}

    # -- unique tasks (schedules) --------------------------------------------------------------

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
        with self.writing(connection) as conn:
            now = utcnow()
            rows = self._new_task_rows(new, now)
            ids = self._insert_unique_rows(conn, rows)
            if ids:
                self.enqueue_existing(conn, ids)
                self._announce(conn, rows, now)
        return ids

    def change_worker_settings_with_tasks(
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
        with self.writing() as conn:
            stmt = select(workers.c.settings).where(workers.c.identifier == identifier)
            row = conn.execute(stmt.with_for_update()).first()
            if row is None:
                return None
            settings, new = plan(dict(row[0] or {}))
            ids = self.insert_unique_tasks(new, connection=conn) if new else []
            if settings is not None:
                conn.execute(
                    update(workers)
                    .where(workers.c.identifier == identifier)
                    .values(settings=settings, updated_at=utcnow())
                )
            return ids

    def _new_task_rows(self, new: Sequence[NewTask], now: dt.datetime) -> list[dict[str, Any]]:
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

    @abc.abstractmethod
    def _insert_unique_rows(self, conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
        """Insert the rows whose unique_key is free, skip the others; the new ids, ascending.

        The SQL differs per database (ON CONFLICT DO NOTHING / INSERT IGNORE): see dialects.py.
        """
