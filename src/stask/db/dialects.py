"""Where SQL must differ between databases, one section per database: its ``Store``
(transactions, wake-ups) and its twins of the repositories whose SQL differs - ``Claims``
(the claim, the one-statement turn, the batched finish, starting an attempt) and, on SQLite,
``Housekeeping`` (the WAL). Their ``TaskWrites`` (enqueueing) are in ``stask.db.enqueue``."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    TextClause,
    bindparam,
    column,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.sql.selectable import TextualSelect

from stask.db import wakefile
from stask.db.claims import Claims, start_update
from stask.db.engine import SQLITE_BUSY_TIMEOUT_MS, build_engine, sqlite_path, translate_errors
from stask.db.enqueue import (  # noqa: F401 - tests/test_store.py reads _NEW_TASK_TYPES here
    _NEW_TASK_TYPES,
    MySQLTaskWrites,
    PostgresTaskWrites,
    SQLiteTaskWrites,
)
from stask.db.housekeeping import Housekeeping
from stask.db.notify import Listener, WakeSource, announce
from stask.db.queues import QueueScope
from stask.db.rows import (
    PENDING,
    RUNNING,
    attempt_fence,
    attempt_fence_sql,
    final_params,
    task_from_row,
)
from stask.db.store import Store
from stask.db.tables import queue, tasks
from stask.errors import StaskError
from stask.models import Ahead, Claim, Outcome, Task, utcnow

_FINAL_COLUMNS = {  # payload field -> SQL type, for the databases that need one
    "id": "BIGINT",
    "token": "VARCHAR(32)",
    "status": "SMALLINT",
    "message": "TEXT",
    "error": "TEXT",
    "result": "TEXT",
    "progress": "SMALLINT",
    "processed": "BIGINT",
    "total": "BIGINT",
    "duration_ms": "BIGINT",
    "peak_memory": "BIGINT",
}


def _final_values(current: str, result: str) -> dict[str, str]:
    """Column -> SQL of the batched final UPDATE, from the outcome row ``v``; ``current``
    prefixes a column's present value (kept where the outcome has none)."""
    keep = ("error", "progress", "processed", "total")
    plain = ("status", "message", "duration_ms", "peak_memory")
    values = {name: f"v.{name}" for name in plain}
    values |= {name: f"COALESCE(v.{name}, {current}{name})" for name in keep}
    values |= {"result": result, "finished_at": ":now", "updated_at": ":now", "eta_seconds": "0"}
    return values


def _final_set_clause(target: str, result: str) -> str:
    """SET list of the batched final UPDATE; ``target`` prefixes columns where SQL wants it."""
    values = _final_values(target or "s_tasks.", result)
    return ", ".join(f"{target}{name} = {value}" for name, value in values.items())


def _claim_set(starts: str) -> dict[str, str]:
    """What a claim sets, as SQL text for the one-statement turns; ``starts`` is true for the
    rows that start now (the first ``:start`` in claim order), false for prefetched ones.
    Claims._claim_values and Claims._start_first are the Core twin used by the general claim:
    a column added to one belongs in the other."""
    return {
        "status": str(RUNNING),
        "locked_by": ":node",
        "locked_at": ":now",
        "claim_token": ":token",
        "attempts": f"s_tasks.attempts + CASE WHEN {starts} THEN 1 ELSE 0 END",
        "started_at": f"CASE WHEN {starts} THEN :now END",
        "finished_at": "NULL",
        "updated_at": ":now",
    }


def _typed(sql: str) -> TextClause:
    return text(sql).bindparams(bindparam("now", type_=tasks.c.finished_at.type))


# The outcome rows of a batch, from the JSON of final_params (SQLite).
_SQLITE_OUTCOMES = (
    "SELECT "
    + ", ".join(f"json_extract(value, '$.{name}') AS {name}" for name in _FINAL_COLUMNS)
    + " FROM json_each(:rows)"
)

log = logging.getLogger("stask.db")

# SQLite resets its WAL (writes start again from its beginning) only when a write finds no
# reader using it; readers that keep overlapping (a dashboard, `stask logs --follow`) can keep
# that from ever happening, and the WAL grows while every read gets slower. Past this size the
# runner forces the reset. Its own passive checkpoints keep a healthy WAL near 4 MB.
WAL_RESET_BYTES = 64 * 1024 * 1024
# How long the reset waits for those readers (and holds writers off) before it gives up until
# the next heartbeat.
WAL_RESET_WAIT_MS = 1_000

_SQLITE_WRITERS: dict[str, threading.RLock] = {}
_SQLITE_WRITERS_LOCK = threading.Lock()


_WAKE = "stask_wake"  # conn.info flag: this transaction inserted tasks due now


def _sqlite_writer_lock(database: str) -> threading.RLock:
    """One lock per database file for this whole process (see SQLiteStore.writing)."""
    with _SQLITE_WRITERS_LOCK:
        return _SQLITE_WRITERS.setdefault(database, threading.RLock())


class SQLiteClaims(Claims):
    """Claims under BEGIN IMMEDIATE: UPDATE ... RETURNING (the trigger of 0005 empties s_queue)."""

    store: SQLiteStore

    def start_attempt(self, claim: Claim, now: dt.datetime | None = None) -> int | None:
        """One UPDATE ... RETURNING, committed without an fsync of its own (synchronous =
        NORMAL for this transaction): in WAL mode that commit survives a crash of any process,
        and only a power loss before the next synced commit could forget the start, which then
        costs no more than an attempt given back. A durable commit per prefetched task made
        the drain fsync-bound."""
        stmt = start_update(claim, now or utcnow()).returning(tasks.c.attempts)
        with (
            self.store.writer_lock,
            translate_errors(self.store.url),
            self.store.engine.connect() as conn,
        ):
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA synchronous = NORMAL")
            try:
                with conn.begin():
                    attempts = conn.execute(stmt).scalar_one_or_none()
            finally:
                raw.execute("PRAGMA synchronous = FULL")
        return None if attempts is None else int(attempts)

    # One UPDATE ... FROM json_each(...) RETURNING for a whole batch of outcomes.
    # MATERIALIZED: inlined, the planner walked ix_s_tasks_status_id and scanned json_each
    # once per running row (630 ms for 800 tasks); materialized it is one scan of v plus
    # primary-key lookups (20 ms).
    finish_final_sql = _typed(
        "WITH v AS MATERIALIZED ("
        + _SQLITE_OUTCOMES
        + ") UPDATE s_tasks SET "
        + _final_set_clause("", "v.result")
        + " FROM v WHERE "
        + attempt_fence_sql("s_tasks", "v")
        + " RETURNING s_tasks.id"
    )

    def turn_statement(self, served: bool, limit: int, ahead: bool) -> TextualSelect:
        return _SQLITE_TURNS[served, ahead]

    def _ahead_params(self, ahead: Ahead) -> dict[str, Any]:
        return {"free": ahead.free, "short": json.dumps(list(ahead.short))}

    def _turn_result(self, rows: Sequence[RowMapping]) -> tuple[list[Task], set[int]]:
        # Recorded rows have left status 50; claimed ones have just entered it.
        claimed = [task_from_row(row) for row in rows if row["status"] == RUNNING]
        return claimed, {int(row["id"]) for row in rows if row["status"] != RUNNING}

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
        # The s_queue rows go with the UPDATE (trigger of migration 0005). `status = 10`
        # keeps a stale queue row from claiming a task twice were the trigger ever missing.
        picked = self._claimable(identifiers, limit, scope, now).scalar_subquery()
        stmt = (
            update(tasks)
            .where(tasks.c.id.in_(picked), tasks.c.status == PENDING)
            .values(**self._claim_values(node_id, token, now))
            .returning(*tasks.c)
        )
        return list(conn.execute(stmt).mappings())


class SQLiteHousekeeping(Housekeeping):
    """Resets a WAL that overlapping readers kept from being reset."""

    store: SQLiteStore

    def maintain(self) -> None:
        """Checkpoint and truncate a WAL that overlapping readers kept from being reset."""
        wal_file = self.store.wal_file
        if wal_file is None:
            return  # in memory: no WAL
        try:
            size = wal_file.stat().st_size
        except OSError:  # no WAL yet (or unreadable: SQLite itself will say so)
            return
        if size < WAL_RESET_BYTES:
            return
        # This process's writers wait on the lock rather than on SQLite's busy handler.
        store = self.store
        with store.writer_lock, translate_errors(store.url), store.engine.connect() as conn:
            raw = conn.connection.driver_connection  # no BEGIN: a checkpoint runs outside one
            assert raw is not None
            raw.execute(f"PRAGMA busy_timeout = {WAL_RESET_WAIT_MS}")
            try:
                busy = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                raw.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        megabytes = size / 2**20
        if busy:
            log.warning(
                "SQLite WAL %s is %.0f MB and readers still used it after %.0f s: checkpointed"
                " but not reset; trying again at the next heartbeat",
                wal_file,
                megabytes,
                WAL_RESET_WAIT_MS / 1000,
            )
        else:
            log.info("SQLite WAL %s was %.0f MB: checkpointed and truncated", wal_file, megabytes)


class SQLiteStore(Store):
    """One writer at a time: every write transaction is BEGIN IMMEDIATE (see engine.py)."""

    dialect = "sqlite"
    claims_type = SQLiteClaims
    task_writes_type = SQLiteTaskWrites
    housekeeping_type = SQLiteHousekeeping

    def transient(self, err: StaskError) -> bool:
        return False  # the busy timeout already waited for the writer lock

    def __init__(self, engine: Engine, url: URL) -> None:
        super().__init__(engine, url)
        self.writer_lock = _sqlite_writer_lock(url.render_as_string(hide_password=False))
        self.wake_file = wakefile.wake_path(url)
        database = sqlite_path(url)
        self.wal_file = None if database is None else Path(f"{database}-wal")

    @contextlib.contextmanager
    def writing(self, connection: Connection | None = None) -> Iterator[Connection]:
        """Threads of this process take turns on a Python lock before BEGIN IMMEDIATE.

        SQLite's busy handler polls for the writer lock with sleeps of 1, 2, 5, 10 ms...; a
        runner's claim and record threads contending through it lost milliseconds per turn.
        A thread waiting on this lock wakes the moment the other one commits. Other processes
        still meet the busy timeout.

        A transaction that inserted tasks due now touches the wake file once it has committed
        (on the caller's connection: at once, as the commit is the caller's to make).
        """
        with contextlib.ExitStack() as stack:
            if connection is None:  # our own transaction: take this process's writer turn
                stack.enter_context(self.writer_lock)
            conn = stack.enter_context(super().writing(connection))
            try:
                yield conn
            finally:
                wake = conn.info.pop(_WAKE, False)
        if wake:
            self._touch_wake_file()

    def announce(self, conn: Connection, rows: Sequence[Mapping[str, Any]], now: Any) -> None:
        if self.wake_file is not None and any(row["run_at"] <= now for row in rows):
            conn.info[_WAKE] = True  # touched by writing() after the commit

    def _touch_wake_file(self) -> None:
        if self.wake_file is not None:
            wakefile.touch(self.wake_file)

    def wake_source(self, on_wake: Callable[[], None]) -> WakeSource | None:
        return None if self.wake_file is None else wakefile.FileWatcher(self.wake_file, on_wake)


class PostgresClaims(Claims):
    """SKIP LOCKED claim as one statement: pick, delete from the queue, mark running."""

    # One UPDATE ... FROM jsonb_to_recordset(...) RETURNING for a whole batch of outcomes.
    finish_final_sql = _typed(
        "UPDATE s_tasks SET "
        + _final_set_clause("", "CAST(v.result AS jsonb)")
        + " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v("
        + ", ".join(f"{name} {kind}" for name, kind in _FINAL_COLUMNS.items())
        # `id = ANY(:ids)` keeps the planner on the primary key: joined on v alone it walked
        # ix_s_tasks_status_id over every status-50 entry, dead ones included, so each turn
        # read more of the index than the last.
        + ") WHERE s_tasks.id = ANY(CAST(:ids AS BIGINT[])) AND "
        + attempt_fence_sql("s_tasks", "v")
        + " RETURNING s_tasks.id"
    )

    def start_attempt(self, claim: Claim, now: dt.datetime | None = None) -> int | None:
        """One statement in autocommit whose commit does not wait for the WAL flush
        (synchronous_commit off, for this transaction only): a crash of the runner cannot lose
        it, only a crash of the server within its WAL writer's delay, which then costs no more
        than an attempt given back. Waiting for the flush of every prefetched task's start made
        the drain commit-bound."""
        params = {"id": claim.id, "token": claim.token, "now": now or utcnow()}
        with self.store.one_statement() as conn:
            attempts = conn.execute(_PG_START, params).scalar_one_or_none()
        return None if attempts is None else int(attempts)

    def turn_statement(self, served: bool, limit: int, ahead: bool) -> TextualSelect:
        return _pg_turn(" AND queue = ANY(:queues)" if served else "", limit, ahead)

    def _turn_result(self, rows: Sequence[RowMapping]) -> tuple[list[Task], set[int]]:
        # One row even when nothing was claimed, to carry the recorded ids.
        recorded = {int(i) for i in rows[0]["recorded_ids"]} if rows else set()
        return [task_from_row(row) for row in rows if row["id"] is not None], recorded

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
        picked = (
            self._claimable(identifiers, limit, scope, now)
            .with_for_update(skip_locked=True, of=queue)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        removed = (
            delete(queue)
            .where(queue.c.task_id == picked.c.task_id)
            .returning(queue.c.task_id)
            .cte("removed")
        )
        stmt = (
            update(tasks)
            .where(tasks.c.id == removed.c.task_id, tasks.c.status == PENDING)
            .values(**self._claim_values(node_id, token, now))
            .returning(*tasks.c)
        )
        return list(conn.execute(stmt).mappings())


class PostgresStore(Store):
    """NOTIFY wakes idle runners; a statement that is a whole transaction runs in autocommit."""

    dialect = "postgresql"
    claims_type = PostgresClaims
    task_writes_type = PostgresTaskWrites

    def announce(self, conn: Connection, rows: Sequence[Mapping[str, Any]], now: Any) -> None:
        if any(row["run_at"] <= now for row in rows):
            announce(conn)  # one per batch; delivered at commit, dropped on rollback

    def wake_source(self, on_wake: Callable[[], None]) -> WakeSource | None:
        return Listener(self.engine, on_wake)

    def __init__(self, engine: Engine, url: URL) -> None:
        super().__init__(engine, url)
        # One statement is its own transaction: no BEGIN and COMMIT round trips around it.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.contextmanager
    def one_statement(self) -> Iterator[Connection]:
        with translate_errors(self.url), self._autocommit.connect() as conn:
            yield conn


@functools.lru_cache(maxsize=1024)
def _pg_turn(queue_filter: str, limit: int, ahead: bool = False) -> TextualSelect:
    """Record final outcomes and claim due tasks in one PostgreSQL statement.

    ``fin`` is the batched finish of ``finish_final_sql``; ``picked`` / ``removed`` /
    ``claimed`` the claim of ``_claim_rows`` (active workers checked in SQL). They touch
    disjoint rows: ``fin`` running ones of this node, ``claimed`` pending ones. The outer
    join returns one row even when nothing was claimed, to carry the ids recorded.

    The LIMIT is written into the SQL, one statement per limit (a runner asks for at most
    concurrency + prefetch). psycopg prepares a statement it has run 5 times, and PostgreSQL
    then plans it once, generically, if that plan looks no worse than the ones planned for
    each call. With ``LIMIT $n`` the generic plan guesses a third of s_queue and hashes whole
    tables, so PostgreSQL planned every turn again: planning took longer than executing
    (1.2 ms against 0.7 ms in EXPLAIN ANALYZE with 10,000 queued, turns of 8). With the
    limit known, the generic plan is the good one and planning stops.

    With ``ahead``, ``chosen`` keeps of the picked rows the first ``:free`` in claim order and,
    after them, only those of the ``:short`` actions (runner/pace.py); the others stay queued.
    """
    claim_set = ", ".join(f"{name} = {value}" for name, value in _claim_set("ranked.go").items())
    columns = ", ".join(f"claimed.{column.name}" for column in tasks.c)
    sql = (
        "WITH fin AS ("
        + PostgresClaims.finish_final_sql.text
        + "), picked AS MATERIALIZED (SELECT task_id, priority, run_at FROM s_queue"
        " WHERE run_at <= :now AND identifier = ANY(:idents)"
        " AND identifier IN (SELECT identifier FROM s_workers WHERE active)"
        + queue_filter
        + f" ORDER BY priority, run_at, task_id LIMIT {int(limit)}"
        " FOR UPDATE OF s_queue SKIP LOCKED)"
        + (_PG_AHEAD if ahead else ", chosen AS (SELECT * FROM picked)")
        + ", removed AS (DELETE FROM s_queue USING chosen WHERE s_queue.task_id = chosen.task_id"
        " RETURNING s_queue.task_id, s_queue.priority, s_queue.run_at)"
        # The first :start in claim order start now; the rest are prefetched, not started.
        ", ranked AS (SELECT task_id, row_number() OVER"
        " (ORDER BY priority, run_at, task_id) <= :start AS go FROM removed)"
        # `status + 0`: the task is found by primary key, not through ix_s_tasks_status_id.
        ", claimed AS (UPDATE s_tasks SET "
        + claim_set
        + " FROM ranked WHERE s_tasks.id = ranked.task_id AND s_tasks.status + 0 = "
        + str(PENDING)
        + " RETURNING s_tasks.*)"
        " SELECT ARRAY(SELECT id FROM fin) AS recorded_ids, "
        + columns
        + " FROM (SELECT 1) AS one LEFT JOIN claimed ON true"
    )
    return _typed(sql).columns(column("recorded_ids"), *tasks.c)


# Of the picked rows, the first :free and then those of the :short actions (_pg_turn's ahead).
_PG_AHEAD = (
    ", chosen AS MATERIALIZED (SELECT p.task_id, p.priority, p.run_at FROM (SELECT task_id,"
    " priority, run_at, row_number() OVER (ORDER BY priority, run_at, task_id) AS n FROM picked)"
    " AS p JOIN s_tasks AS t ON t.id = p.task_id"
    " WHERE p.n <= :free OR t.identifier || ':' || t.action = ANY(CAST(:short AS TEXT[])))"
)

# Claims.start_attempt on PostgreSQL, fenced by the claim (c) as every write of an attempt.
_PG_START = _typed(
    "UPDATE s_tasks SET attempts = s_tasks.attempts + 1, started_at = :now, updated_at = :now"
    " FROM (VALUES (CAST(:id AS BIGINT), CAST(:token AS TEXT))) AS c(id, token),"
    " (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
    " WHERE " + attempt_fence_sql("s_tasks", "c") + " AND s_tasks.started_at IS NULL"
    " RETURNING s_tasks.attempts"
)


def _sqlite_turn(queue_filter: str, ahead: bool) -> TextualSelect:
    """Record final outcomes and claim due tasks in one SQLite UPDATE.

    ``u`` lists both kinds of row: the outcomes ``v`` (running tasks of this node, fenced as in
    ``finish_final_sql``) and the ``picked`` queue rows (pending tasks of active workers, as in
    ``_claim_rows``). Each column takes its final or its claimed value by the kind of row; the
    trigger of migration 0005 removes claimed tasks from s_queue. SQLite's RETURNING cannot
    name ``u``, so the caller tells the kinds apart by status. With ``ahead``, ``chosen`` keeps
    the first ``:free`` picked rows and then only those of the ``:short`` actions (a JSON list).
    """
    final = _final_values("s_tasks.", "v.result")
    claim = _claim_set("u.go")
    sets = ", ".join(
        f"{name} = CASE WHEN v.id IS NULL THEN {claim.get(name, 's_tasks.' + name)}"
        f" ELSE {final.get(name, 's_tasks.' + name)} END"
        for name in dict.fromkeys([*final, *claim])
    )
    sql = (
        "WITH v AS MATERIALIZED ("
        + _SQLITE_OUTCOMES
        + "), picked AS MATERIALIZED (SELECT task_id AS id, priority, run_at FROM s_queue"
        " WHERE run_at <= :now AND identifier IN :idents"
        " AND identifier IN (SELECT identifier FROM s_workers WHERE active)"
        + queue_filter
        + " ORDER BY priority, run_at, task_id LIMIT :limit)"
        + (_SQLITE_AHEAD if ahead else ", chosen AS (SELECT * FROM picked)")
        # The first :start in claim order start now; the rest are prefetched, not started.
        + ", u AS MATERIALIZED (SELECT id, 0 AS go FROM v UNION ALL SELECT id, row_number() OVER"
        " (ORDER BY priority, run_at, id) <= :start AS go FROM chosen)"
        " UPDATE s_tasks SET "
        + sets
        + " FROM u LEFT JOIN v ON v.id = u.id WHERE s_tasks.id = u.id AND CASE WHEN v.id IS NULL"
        f" THEN s_tasks.status = {PENDING} ELSE "
        + attempt_fence_sql("s_tasks", "v")
        + " END RETURNING "
        + ", ".join(f"s_tasks.{column.name}" for column in tasks.c)
    )
    turn = _typed(sql).bindparams(bindparam("idents", expanding=True))
    if queue_filter:
        turn = turn.bindparams(bindparam("queues", expanding=True))
    return turn.columns(*tasks.c)


# Of the picked rows, the first :free and then those of the :short actions (_sqlite_turn's ahead).
_SQLITE_AHEAD = (
    ", chosen AS MATERIALIZED (SELECT p.id, p.priority, p.run_at FROM (SELECT id, priority,"
    " run_at, row_number() OVER (ORDER BY priority, run_at, id) AS n FROM picked) AS p"
    " JOIN s_tasks AS t ON t.id = p.id WHERE p.n <= :free"
    " OR t.identifier || ':' || t.action IN (SELECT value FROM json_each(:short)))"
)
_SQLITE_TURNS = {
    (served, ahead): _sqlite_turn(" AND queue IN :queues" if served else "", ahead)
    for served in (False, True)
    for ahead in (False, True)
}


_MYSQL_TYPES = {  # JSON_TABLE column types for the payload's SQL types
    "TEXT": "LONGTEXT CHARACTER SET utf8mb4",
    "VARCHAR(32)": "VARCHAR(32) CHARACTER SET utf8mb4",
}


class MySQLClaims(Claims):
    """SELECT ... FOR UPDATE SKIP LOCKED at READ COMMITTED, then DELETE and UPDATE; deadlocks
    are retried (Store.retrying). UPDATE has no RETURNING here, so the claimed rows are read
    back by primary key."""

    # MariaDB does not seek in a correlated subquery (the skip scan would read the whole index)
    # but reads DISTINCT of an index prefix by a loose index scan.
    present_queues_sql = text("SELECT DISTINCT queue FROM s_queue ORDER BY queue LIMIT :cap")

    _JOINED_FINISH_SQL = _typed(
        "UPDATE s_tasks AS t JOIN JSON_TABLE(:rows, '$[*]' COLUMNS("
        + ", ".join(
            f"{name} {_MYSQL_TYPES.get(kind, kind)} PATH '$.{name}'"
            for name, kind in _FINAL_COLUMNS.items()
        )
        + ")) AS v ON t.id = v.id SET "
        + _final_set_clause("t.", "v.result")
        + " WHERE t.id IN :ids AND "
        + attempt_fence_sql("t", "v")
    ).bindparams(bindparam("ids", expanding=True))

    def _finish_final(
        self,
        conn: Connection,
        finished: Sequence[tuple[Claim, Outcome]],
        now: dt.datetime,
    ) -> set[int]:
        """Lock the held rows, then one multi-table UPDATE joined to JSON_TABLE(...)."""
        held = self._held(conn, [claim for claim, _ in finished])
        mine = [(claim, outcome) for claim, outcome in finished if claim.id in held]
        if mine:
            # `t.id IN (...)` keeps InnoDB on the primary key: planned through the status
            # index, the join locked every running row and two finishes deadlocked (1213).
            params = {**final_params(mine, now), "ids": sorted(held)}
            conn.execute(self._JOINED_FINISH_SQL, params)
        return held

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
        picked = self._claimable(identifiers, limit, scope, now).with_for_update(skip_locked=True)
        ids = list(conn.execute(picked).scalars())
        if not ids:
            return []
        conn.execute(delete(queue).where(queue.c.task_id.in_(ids)))
        conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(ids), tasks.c.status == PENDING)
            .values(**self._claim_values(node_id, token, now))
        )
        # Read back only what this claim took: a stale queue row's task is not ours.
        claimed = select(tasks).where(tasks.c.id.in_(ids), tasks.c.claim_token == token)
        return list(conn.execute(claimed.where(tasks.c.status == RUNNING)).mappings())

    def save_progress(self, claim: Claim, values: Mapping[str, Any]) -> bool | None:
        with self.store.writing() as conn:
            stmt = (
                update(tasks)
                .where(attempt_fence(claim.id, claim.token))
                .values(updated_at=utcnow(), **values)
            )
            if conn.execute(stmt).rowcount == 0:
                return None
            flag = conn.execute(
                select(tasks.c.cancel_requested).where(tasks.c.id == claim.id)
            ).scalar_one()
        return bool(flag)


class MySQLStore(Store):
    """MariaDB / MySQL: no push, runners poll; deadlock victims are retried (``transient``)."""

    dialect = "mysql"
    claims_type = MySQLClaims
    task_writes_type = MySQLTaskWrites


def hot_path_store(store: Store) -> Store:
    """A store on its own pool without pre-ping, for a runner's claim/record/heartbeat loops."""
    if store.dialect == "sqlite":
        return store  # no server connection to ping
    url = store.url.render_as_string(hide_password=False)
    return store_for(build_engine(url, pre_ping=False), store.url)


def store_for(engine: Engine, url: URL) -> Store:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return SQLiteStore(engine, url)
    if backend == "postgresql":
        return PostgresStore(engine, url)
    return MySQLStore(engine, url)
