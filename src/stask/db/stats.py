"""Statistics in ``s_stats``: finished tasks rolled up per hour and worker behind a watermark,
and the reads that summaries and metrics are built from.

The roll-up runs in the background (``StatsStore.roll_up``), never on a task's finish. It takes
the tasks that finished in ``[watermark, until)``, adds them into the hour rows and into each
worker's all-time row (``hour = ALL_TIME``, so a scrape never sums every hour), and advances the
watermark in the same transaction. Readers add the tasks that finished since the watermark
(the live tail) to the rolled-up rows, so a task shows as soon as it ends.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Select, bindparam, case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from stask.db.rows import FINAL_CODES, RUNNING
from stask.db.store import Store
from stask.db.tables import nodes, queue, state, stats, tasks
from stask.errors import DatabaseError
from stask.models import Status, utcnow

# Upper bounds (ms, inclusive) of the duration buckets; one more bucket holds what is longer.
# The stored format of s_stats.duration_buckets: changing this list needs a migration.
DURATION_BOUNDS_MS: tuple[int, ...] = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    1_800_000,
    3_600_000,
)
BUCKET_COUNT = len(DURATION_BOUNDS_MS) + 1
# The hour of each worker's all-time row: before any real hour, so `hour >= since` skips it.
ALL_TIME = dt.datetime(1970, 1, 1)
WATERMARK = "stats.rollup"
HOUR = dt.timedelta(hours=1)
# The tail's upper bound, though it needs none: SQLite (no statistics) takes a one-sided range
# for most of the table and walks an index in GROUP BY order instead, every finished task.
OPEN_END = dt.datetime(9999, 1, 1)
# A queue depth is counted up to this many rows: s_queue can hold millions.
QUEUE_COUNT_CAP = 10_000

COMPLETED = Status.COMPLETED.code
FAILED = Status.FAILED.code
CANCELLED = Status.CANCELLED.code


def hour_floor(moment: dt.datetime) -> dt.datetime:
    """The start of the hour of ``moment``."""
    return moment.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Totals:
    """What a set of finished tasks adds up to: one s_stats row, or the sum of several.

    ``buckets[i]`` counts durations in ``(DURATION_BOUNDS_MS[i-1], DURATION_BOUNDS_MS[i]]``;
    the last one those above the last bound. Durations and memory count only the tasks that
    recorded them (a task cancelled before it started has neither).
    """

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    duration_ms_sum: int = 0
    duration_count: int = 0
    memory_sum: int = 0
    memory_count: int = 0
    buckets: tuple[int, ...] = field(default=(0,) * BUCKET_COUNT)
    last_finished_at: dt.datetime | None = None

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.cancelled

    def plus(self, other: Totals) -> Totals:
        last = [at for at in (self.last_finished_at, other.last_finished_at) if at is not None]
        return Totals(
            completed=self.completed + other.completed,
            failed=self.failed + other.failed,
            cancelled=self.cancelled + other.cancelled,
            duration_ms_sum=self.duration_ms_sum + other.duration_ms_sum,
            duration_count=self.duration_count + other.duration_count,
            memory_sum=self.memory_sum + other.memory_sum,
            memory_count=self.memory_count + other.memory_count,
            buckets=tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            last_finished_at=max(last) if last else None,
        )

    def to_row(self) -> dict[str, Any]:
        """The s_stats columns besides the key."""
        return {
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "duration_ms_sum": self.duration_ms_sum,
            "duration_count": self.duration_count,
            "memory_sum": self.memory_sum,
            "memory_count": self.memory_count,
            "duration_buckets": list(self.buckets),
            "last_finished_at": self.last_finished_at,
        }

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Totals:
        buckets = [int(n) for n in row["duration_buckets"] or ()]
        return cls(
            completed=int(row["completed"]),
            failed=int(row["failed"]),
            cancelled=int(row["cancelled"]),
            duration_ms_sum=int(row["duration_ms_sum"]),
            duration_count=int(row["duration_count"]),
            memory_sum=int(row["memory_sum"]),
            memory_count=int(row["memory_count"]),
            buckets=tuple(buckets + [0] * (BUCKET_COUNT - len(buckets))),
            last_finished_at=row["last_finished_at"],
        )


def add_up(found: Iterable[Mapping[str, Totals]]) -> dict[str, Totals]:
    """Per worker, the sum of several per-worker totals."""
    groups: dict[str, list[Totals]] = {}
    for part in found:
        for identifier, totals in part.items():
            groups.setdefault(identifier, []).append(totals)
    return {identifier: sum_of(parts) for identifier, parts in groups.items()}


def sum_of(parts: Sequence[Totals]) -> Totals:
    """The sum of ``parts`` in one pass (a month of hourly rows is ~720 per worker: adding
    them pairwise built a Totals and a bucket tuple per row)."""
    if len(parts) == 1:
        return parts[0]
    last = [p.last_finished_at for p in parts if p.last_finished_at is not None]
    return Totals(
        completed=sum(p.completed for p in parts),
        failed=sum(p.failed for p in parts),
        cancelled=sum(p.cancelled for p in parts),
        duration_ms_sum=sum(p.duration_ms_sum for p in parts),
        duration_count=sum(p.duration_count for p in parts),
        memory_sum=sum(p.memory_sum for p in parts),
        memory_count=sum(p.memory_count for p in parts),
        buckets=tuple(map(sum, zip(*(p.buckets for p in parts), strict=True))),
        last_finished_at=max(last) if last else None,
    )


def _count_of(condition: ColumnElement[bool]) -> Any:
    return func.sum(case((condition, 1), else_=0))


def _aggregate(start: dt.datetime, end: dt.datetime, identifier: str | None = None) -> Select[Any]:
    """Per worker, the totals of tasks that finished in ``[start, end)``.

    A range of ix_s_tasks_finished_at; the bucket counts are cumulative (``<= bound``).
    """
    t = tasks.c
    stmt = (
        select(
            t.identifier,
            _count_of(t.status == COMPLETED).label("completed"),
            _count_of(t.status == FAILED).label("failed"),
            _count_of(t.status == CANCELLED).label("cancelled"),
            func.coalesce(func.sum(t.duration_ms), 0).label("duration_ms_sum"),
            func.count(t.duration_ms).label("duration_count"),
            func.coalesce(func.sum(t.peak_memory), 0).label("memory_sum"),
            func.count(t.peak_memory).label("memory_count"),
            func.max(t.finished_at).label("last_finished_at"),
            *(
                _count_of(t.duration_ms <= bound).label(f"le_{i}")
                for i, bound in enumerate(DURATION_BOUNDS_MS)
            ),
        )
        # `status + 0`: no index serves it, so the plan is the finished_at range. SQLite (no
        # ANALYZE) otherwise walked ix_s_tasks_status_id: every finished task, every time.
        .where(t.finished_at >= start, t.finished_at < end, (t.status + 0).in_(FINAL_CODES))
        .group_by(t.identifier)
    )
    if identifier is not None:
        stmt = stmt.where(t.identifier == identifier)
    return stmt


def _aggregated(conn: Connection, stmt: Select[Any]) -> dict[str, Totals]:
    found: dict[str, Totals] = {}
    for row in conn.execute(stmt).mappings():
        cumulative = [int(row[f"le_{i}"]) for i in range(len(DURATION_BOUNDS_MS))]
        counted = int(row["duration_count"])
        edges = [0, *cumulative, counted]
        found[str(row["identifier"])] = Totals(
            completed=int(row["completed"]),
            failed=int(row["failed"]),
            cancelled=int(row["cancelled"]),
            duration_ms_sum=int(row["duration_ms_sum"]),
            duration_count=counted,
            memory_sum=int(row["memory_sum"]),
            memory_count=int(row["memory_count"]),
            buckets=tuple(edges[i + 1] - edges[i] for i in range(BUCKET_COUNT)),
            last_finished_at=row["last_finished_at"],
        )
    return found


_WATERMARK = select(state.c.value).where(state.c.name == WATERMARK)
# Executed with one parameter set per row: the sums already include the stored values.
_UPDATE_ROW = (
    update(stats)
    .where(stats.c.hour == bindparam("b_hour"), stats.c.identifier == bindparam("b_identifier"))
    .values(
        {
            name: bindparam(name, type_=stats.c[name].type)
            for name in Totals().to_row()  # every column besides the key
        }
    )
)


def _watermark_of(value: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value["at"]))


class StatsStore:
    """The SQL of statistics, on top of a Store's connections."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the roll-up ---------------------------------------------------------------------------

    def watermark(self) -> dt.datetime | None:
        """Every task that finished before this moment is in s_stats (None: never rolled up)."""
        with self.store.reading() as conn:
            return self._read_watermark(conn)

    @staticmethod
    def _read_watermark(conn: Connection) -> dt.datetime | None:
        value = conn.execute(_WATERMARK).scalar_one_or_none()
        return None if value is None else _watermark_of(value)

    def roll_up(self, until: dt.datetime, *, max_seconds: float | None = None) -> int:
        """Add the tasks that finished in ``[watermark, until)`` into s_stats; their number.

        One transaction per hour of finishes (a long backlog is never one huge transaction),
        each under the watermark's row lock, so processes rolling up at once take turns and
        every task is counted exactly once. With ``max_seconds``, stops after the chunk that
        passes that time (the rest waits for the next call). Nothing is written, not even the
        watermark, when no task finished in the range, so an idle call is two small reads.
        """
        watermark = self.watermark()
        if watermark is None:
            self._create_watermark(until)
            watermark = self.watermark()
        if watermark is None or watermark >= until or not self._finished_between(watermark, until):
            return 0
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        counted = 0
        while True:
            added, done = self.store.retrying(lambda: self._roll_up_chunk(until))
            counted += added
            if done or (deadline is not None and time.monotonic() > deadline):
                return counted

    def _create_watermark(self, until: dt.datetime) -> None:
        """Start at the oldest finish (or at ``until`` when none is older); a concurrent
        creator may win, then its row stands."""
        with self.store.reading() as conn:
            oldest = conn.execute(select(func.min(tasks.c.finished_at))).scalar_one_or_none()
        start = until if oldest is None else min(oldest, until)
        try:
            with self.store.writing() as conn:
                conn.execute(
                    insert(state).values(
                        name=WATERMARK, value={"at": start.isoformat()}, updated_at=utcnow()
                    )
                )
        except DatabaseError as err:
            if not isinstance(err.__cause__, IntegrityError):
                raise

    def _finished_between(self, start: dt.datetime, end: dt.datetime) -> bool:
        stmt = select(tasks.c.id).where(tasks.c.finished_at >= start, tasks.c.finished_at < end)
        with self.store.reading() as conn:
            return conn.execute(stmt.limit(1)).first() is not None

    def _roll_up_chunk(self, until: dt.datetime) -> tuple[int, bool]:
        """One transaction: lock the watermark, add the finishes of its hour, advance it.

        The lock is the row's FOR UPDATE on PostgreSQL and MariaDB; SQLite renders no FOR
        UPDATE, and its BEGIN IMMEDIATE already makes this the only writer. Returns the number
        of tasks added and whether the watermark reached ``until``.
        """
        with self.store.writing() as conn:
            value = conn.execute(_WATERMARK.with_for_update()).scalar_one()
            start = _watermark_of(value)
            if start >= until:
                return 0, True
            first = conn.execute(
                select(func.min(tasks.c.finished_at)).where(
                    tasks.c.finished_at >= start, tasks.c.finished_at < until
                )
            ).scalar_one_or_none()
            # Jump over hours without finishes; then every task of this chunk is of one hour.
            hour = hour_floor(first if first is not None else start)
            end = until if first is None else min(until, hour + HOUR)
            found = _aggregated(conn, _aggregate(start, end)) if first is not None else {}
            if found:
                self._add_into(conn, hour, found)
            conn.execute(
                update(state)
                .where(state.c.name == WATERMARK)
                .values(value={"at": end.isoformat()}, updated_at=utcnow())
            )
        return sum(totals.finished for totals in found.values()), end >= until

    @staticmethod
    def _add_into(conn: Connection, hour: dt.datetime, found: Mapping[str, Totals]) -> None:
        """Add ``found`` into the rows of ``hour`` and the all-time rows: read, then write.

        Only roll-ups write s_stats, and they hold the watermark lock, so nothing changes these
        rows between the read and the write.
        """
        keys = (hour, ALL_TIME)
        stored = {
            (row["hour"], row["identifier"]): Totals.from_row(row)
            for row in conn.execute(
                select(stats).where(stats.c.hour.in_(keys), stats.c.identifier.in_(list(found)))
            ).mappings()
        }
        updates: list[dict[str, Any]] = []
        inserts: list[dict[str, Any]] = []
        for identifier, totals in found.items():
            for key in keys:
                before = stored.get((key, identifier))
                if before is None:
                    inserts.append({"hour": key, "identifier": identifier, **totals.to_row()})
                else:
                    row = before.plus(totals).to_row()
                    updates.append({"b_hour": key, "b_identifier": identifier, **row})
        if updates:
            conn.execute(_UPDATE_ROW, updates)
        if inserts:
            conn.execute(insert(stats), inserts)

    # -- reads ---------------------------------------------------------------------------------

    def finished_since(
        self, since: dt.datetime | None, identifier: str | None = None
    ) -> dict[str, Totals]:
        """Per worker, the tasks that finished since the start of the hour of ``since`` (None:
        ever): the rolled-up rows plus the live tail since the watermark.

        One snapshot for the watermark, the rows and the tail, or a roll-up committing between
        them would move tasks from the tail into the rows unseen and count them twice:
        REPEATABLE READ on PostgreSQL and MariaDB (whose engines run READ COMMITTED), and
        SQLite's read transaction, which is one snapshot anyway.
        """
        start = None if since is None else hour_floor(since)
        with self.store.reading() as conn:
            if conn.dialect.name != "sqlite":  # SQLite names no such level
                conn.execution_options(isolation_level="REPEATABLE READ")
            watermark = self._read_watermark(conn)
            rolled = self._rollups(conn, start, identifier)
            tail_from = max((at for at in (watermark, start) if at is not None), default=ALL_TIME)
            tail = _aggregated(conn, _aggregate(tail_from, OPEN_END, identifier))
        return add_up([rolled, tail])

    def rollups(
        self, since: dt.datetime | None, identifier: str | None = None
    ) -> dict[str, Totals]:
        """Per worker, the rolled-up rows of hours from ``since`` on (None: the all-time rows)."""
        with self.store.reading() as conn:
            return self._rollups(conn, None if since is None else hour_floor(since), identifier)

    @staticmethod
    def _rollups(
        conn: Connection, since: dt.datetime | None, identifier: str | None
    ) -> dict[str, Totals]:
        stmt = select(stats)
        stmt = stmt.where(stats.c.hour == ALL_TIME if since is None else stats.c.hour >= since)
        if identifier is not None:
            stmt = stmt.where(stats.c.identifier == identifier)
        return add_up(
            {str(row["identifier"]): Totals.from_row(row)} for row in conn.execute(stmt).mappings()
        )

    def hourly(self, since: dt.datetime) -> dict[dt.datetime, Totals]:
        """Per hour from the hour of ``since`` on, every worker's rolled-up counts added up
        (completed, failed, cancelled only: added by the database, a row per hour)."""
        stmt = (
            select(
                stats.c.hour,
                func.sum(stats.c.completed).label("completed"),
                func.sum(stats.c.failed).label("failed"),
                func.sum(stats.c.cancelled).label("cancelled"),
            )
            .where(stats.c.hour >= hour_floor(since))
            .group_by(stats.c.hour)
        )
        with self.store.reading() as conn:
            return {
                row.hour: Totals(
                    completed=int(row.completed),
                    failed=int(row.failed),
                    cancelled=int(row.cancelled),
                )
                for row in conn.execute(stmt)
            }

    def tail(self, since: dt.datetime, identifier: str | None = None) -> dict[str, Totals]:
        """Per worker, straight from s_tasks: the tasks that finished at or after ``since``."""
        with self.store.reading() as conn:
            return _aggregated(conn, _aggregate(since, OPEN_END, identifier))

    def running(self) -> int:
        """Tasks running now (prefetched ones included): a range of ix_s_tasks_status_id."""
        stmt = select(func.count()).select_from(tasks).where(tasks.c.status == RUNNING)
        with self.store.reading() as conn:
            return int(conn.execute(stmt).scalar_one())

    def queued(self, cap: int = QUEUE_COUNT_CAP) -> tuple[int, bool]:
        """Tasks waiting in s_queue, counted up to ``cap``; and whether there are more."""
        some = select(queue.c.task_id).limit(cap + 1).subquery()
        with self.store.reading() as conn:
            found = int(conn.execute(select(func.count()).select_from(some)).scalar_one())
        return min(found, cap), found > cap

    def live_nodes(self, lease_seconds: float, now: dt.datetime | None = None) -> int:
        """Runner processes that heartbeated within the lease (as NodeStore.rescue_stale)."""
        cutoff = (now or utcnow()) - dt.timedelta(seconds=lease_seconds)
        stmt = select(func.count()).select_from(nodes).where(nodes.c.heartbeat_at >= cutoff)
        with self.store.reading() as conn:
            return int(conn.execute(stmt).scalar_one())
