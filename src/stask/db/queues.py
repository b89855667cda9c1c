"""Named-queue controls in ``s_queues``: pauses and cluster-wide limits, and how claims obey them.

A queue without a row is unpaused and unlimited. A claim that meets no paused or limited queue
runs the same single statement as before. Otherwise it claims queue by queue (``plan_claim``):
paused queues are left out, and a limited queue's row is locked and its running and recent
tasks counted before it gives at most the room left.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, insert, literal_column, select, text, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement, Label

from stask.db.tables import queue, queue_controls, tasks, workers
from stask.errors import DatabaseError
from stask.models import QueueInfo, Status, utcnow

if TYPE_CHECKING:
    from stask.db.store import Store

RUNNING = Status.RUNNING.code
# Every status code, written into the rate count so that (queue, status, started_at) serves it as
# a few index ranges: a started task may be pending again (retry), running, or finished.
EVERY_STATUS = tuple(sorted(status.code for status in Status))
CONTROLS_CACHE_SECONDS = 1.0
# A claim split per queue peeks at this many queues at most (see plan_claim).
MAX_SPLIT_QUEUES = 32

# The queues that have tasks in s_queue, in name order: a skip scan of ix_s_queue_claim, one
# index seek per queue (PostgreSQL and SQLite do not skip-scan `SELECT DISTINCT` themselves).
PRESENT_QUEUES_SQL = text(
    "WITH RECURSIVE present(name, n) AS ("
    " SELECT MIN(queue), 1 FROM s_queue"
    " UNION ALL"
    " SELECT (SELECT MIN(s_queue.queue) FROM s_queue WHERE s_queue.queue > present.name),"
    " present.n + 1 FROM present WHERE present.name IS NOT NULL AND present.n < :cap"
    ") SELECT name FROM present WHERE name IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class QueueControl:
    """One row of ``s_queues``."""

    name: str
    paused: bool = False
    paused_until: dt.datetime | None = None
    concurrency_limit: int | None = None
    rate_limit: int | None = None
    rate_period_seconds: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> QueueControl:
        return cls(
            name=row["name"],
            paused=bool(row["paused"]),
            paused_until=row["paused_until"],
            concurrency_limit=row["concurrency_limit"],
            rate_limit=row["rate_limit"],
            rate_period_seconds=row["rate_period_seconds"],
        )

    def paused_at(self, now: dt.datetime) -> bool:
        """Paused until resumed, or until a ``paused_until`` still ahead of ``now``."""
        return self.paused or (self.paused_until is not None and self.paused_until > now)

    @property
    def limited(self) -> bool:
        return self.concurrency_limit is not None or self.rate_limit is not None

    def rate_since(self, now: dt.datetime) -> dt.datetime | None:
        """Starts after this moment count against the rate limit (None: no rate limit)."""
        if self.rate_limit is None or self.rate_period_seconds is None:
            return None
        return now - dt.timedelta(seconds=self.rate_period_seconds)


@dataclass(frozen=True, slots=True)
class QueueScope:
    """The queues one claim statement takes from: ``include`` (None: any) minus ``exclude``.

    ``workers``, when set, narrows the claim's identifiers (a rate-limited worker's own claim);
    ``short``, when set, to tasks of those actions (``identifier:action``, claimed ahead).
    """

    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    workers: tuple[str, ...] | None = None
    short: tuple[str, ...] | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.include is not None:
            found.append(queue.c.queue.in_(self.include))
        if self.exclude:
            found.append(queue.c.queue.not_in(self.exclude))
        return found


class ControlCache:
    """The controlled queues, read again at most every ``ttl`` seconds.

    Every claim consults it, so runners on a database without controls pay one tiny read per
    second, not one per claim. A change made by another process is seen within ``ttl``; the
    limits themselves are read again under the queue's row lock by every claim that uses them.
    """

    def __init__(
        self,
        ttl: float = CONTROLS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[Connection], dict[str, Any]] | None = None,
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self.loader = loader or read_controls
        self._lock = threading.Lock()
        self._controls: dict[str, Any] = {}
        self._read_at: float | None = None
        self._generation = 0

    def current(self, conn: Connection) -> dict[str, Any]:
        with self._lock:
            generation = self._generation
            if self._read_at is not None and self.clock() - self._read_at < self.ttl:
                return self._controls
        found = self.loader(conn)
        with self._lock:
            if generation == self._generation:  # not forgotten meanwhile
                self._controls, self._read_at = found, self.clock()
        return found

    def forget(self) -> None:
        """Read again at the next claim (this process changed a control)."""
        with self._lock:
            self._generation += 1
            self._read_at = None


_SHARED_CACHES: dict[str, ControlCache] = {}
_SHARED_CACHES_LOCK = threading.Lock()


def shared_control_cache(database: str) -> ControlCache:
    """The cache of ``database``'s controls for this whole process.

    Shared by every store on that database here (the application's, a runner's own pool), so a
    pause or limit set in this process applies to its runners' next claim.
    """
    with _SHARED_CACHES_LOCK:
        return _SHARED_CACHES.setdefault(database, ControlCache())


def shared_worker_limits_cache(database: str) -> ControlCache:
    """The rate-limited workers of ``database`` (``read_worker_limits``), shared like the
    controls. Only the one-statement claim consults it, to know it may skip the split claim;
    a limit set elsewhere reaches it within the cache period."""
    with _SHARED_CACHES_LOCK:
        return _SHARED_CACHES.setdefault(
            f"workers:{database}", ControlCache(loader=read_worker_limits)
        )


def read_worker_limits(conn: Connection) -> dict[str, Any]:
    c = workers.c
    stmt = select(c.identifier, c.rate_limit, c.rate_period_seconds).where(
        c.rate_limit.is_not(None), c.rate_period_seconds.is_not(None)
    )
    return {name: WorkerLimit(name, rate, period) for name, rate, period in conn.execute(stmt)}


def read_controls(conn: Connection) -> dict[str, QueueControl]:
    """The queues with a pause or a limit set (rows with nothing set do not matter to claims)."""
    c = queue_controls.c
    stmt = select(queue_controls).where(
        c.paused.is_(True)
        | c.paused_until.is_not(None)
        | c.concurrency_limit.is_not(None)
        | c.rate_limit.is_not(None)
    )
    found = (QueueControl.from_row(row) for row in conn.execute(stmt).mappings())
    return {control.name: control for control in found}


def claimable_clauses(
    identifiers: Sequence[str], scope: QueueScope, now: Any
) -> list[ColumnElement[bool]]:
    """The WHERE of claimable queue rows, shared by every dialect's claim and by the peek."""
    named = scope.workers if scope.workers is not None else identifiers
    return [queue.c.run_at <= now, queue.c.identifier.in_(named), *scope.clauses()]


Claims = list[tuple[QueueScope, int]]


def held_back_queues(
    controls: Mapping[str, QueueControl], served: Sequence[str] | None, now: dt.datetime
) -> bool:
    """Whether a served queue is paused or limited now (a claim must then be split)."""
    return any(
        (not served or control.name in served) and (control.paused_at(now) or control.limited)
        for control in controls.values()
    )


def plan_claim(
    conn: Connection,
    controls: Mapping[str, QueueControl],
    served: Sequence[str] | None,
    identifiers: Sequence[str],
    limit: int,
    now: dt.datetime,
    present: Callable[[Connection, int], list[str]],
) -> Claims:
    """The claim statements to run, as (queues, how many) pairs, in this order.

    Without a paused or limited queue among the served ones, that is one statement over all of
    them, as ever. Otherwise each queue is claimed on its own (``queue = :q`` is a range of
    ix_s_queue_claim), a limited one within its room, after a peek that takes the first
    ``limit`` due tasks across those queues in claim order (priority, run_at, id) and so says
    how many each queue gives. Excluding held-back queues from one statement instead would make
    every claim walk past their backlog in ix_s_queue_order: ~40 ms per claim on PostgreSQL and
    ~250 ms on MariaDB behind 200,000 tasks of a paused queue. ``present`` lists the queues
    that have tasks (an index skip scan, dialect SQL); past MAX_SPLIT_QUEUES queues the
    unlimited ones go back to one statement.
    """
    wanted = list(dict.fromkeys(served)) if served else None
    if not held_back_queues(controls, served, now):
        return [(QueueScope(include=tuple(wanted) if wanted else None), limit)]
    relevant = [c for c in controls.values() if wanted is None or c.name in wanted]
    paused = {c.name for c in relevant if c.paused_at(now)}
    limited = sorted(c.name for c in relevant if c.limited and c.name not in paused)
    held_back = paused.union(limited)
    branches: Claims = []
    if wanted is None:
        found = present(conn, MAX_SPLIT_QUEUES + 1)
        if len(found) > MAX_SPLIT_QUEUES:
            branches.append((QueueScope(exclude=tuple(sorted(held_back))), limit))
        else:
            limited = [name for name in limited if name in found]
            open_names = [name for name in found if name not in held_back]
            branches += [(QueueScope(include=(name,)), limit) for name in open_names]
    else:
        open_names = [name for name in wanted if name not in held_back]
        if len(open_names) > MAX_SPLIT_QUEUES:
            branches.append((QueueScope(include=tuple(open_names)), limit))
        else:
            branches += [(QueueScope(include=(name,)), limit) for name in open_names]
    for name, room in room_left(conn, limited, now) if limited else ():
        if room is None or room > 0:
            branches.append((QueueScope(include=(name,)), limit if room is None else room))
    if len(branches) <= 1:
        return [(scope, min(cap, limit)) for scope, cap in branches]
    return _peek(conn, branches, identifiers, limit, now)


def _peek(
    conn: Connection, branches: Claims, identifiers: Sequence[str], limit: int, now: Any
) -> Claims:
    """How many of the first ``limit`` due tasks across ``branches`` each branch holds.

    One read without locks: each branch's first tasks (a short index range each), merged in
    claim order. The claims that follow lock with SKIP LOCKED as usual, so a task another
    claimer took meanwhile is replaced by the next one of the same queue, or missed this round.
    """
    counts = Counter(_peek_order(conn, branches, identifiers, limit, now))
    return [(branches[index][0], n) for index, n in counts.items()]


def _peek_order(
    conn: Connection, branches: Claims, identifiers: Sequence[str], limit: int, now: Any
) -> list[int]:
    """The branch of each of the first ``limit`` due tasks across ``branches``, in claim order."""
    parts = []
    for index, (scope, cap) in enumerate(branches):
        first = (
            select(
                literal_column(str(index)).label("branch"),
                queue.c.priority,
                queue.c.run_at,
                queue.c.task_id,
            )
            .where(*claimable_clauses(identifiers, scope, now))
            .order_by(queue.c.priority, queue.c.run_at, queue.c.task_id)
            .limit(min(cap, limit))
            .subquery(f"b{index}")
        )
        parts.append(select(first))
    if len(parts) == 1:
        return [0] * len(conn.execute(parts[0]).all())
    merged = union_all(*parts).subquery("merged")
    taken = conn.execute(
        select(merged.c.branch)
        .order_by(merged.c.priority, merged.c.run_at, merged.c.task_id)
        .limit(limit)
    ).scalars()
    return [int(index) for index in taken]


@dataclass(frozen=True, slots=True)
class WorkerLimit:
    """A worker's rate limit from its ``s_workers`` row (revision 0004)."""

    identifier: str
    rate_limit: int
    period_seconds: int

    def since(self, now: dt.datetime) -> dt.datetime:
        return now - dt.timedelta(seconds=self.period_seconds)


def worker_rooms(
    conn: Connection, limits: Sequence[WorkerLimit], now: dt.datetime
) -> dict[str, int]:
    """Lock the rate-limited workers' rows, then count; how many tasks each may start now.

    As ``room_left`` for queues: FOR UPDATE SKIP LOCKED (a worker whose row another claimer
    holds gets no room this round), then the counts in a statement of their own.
    """
    by_name = {limit.identifier: limit for limit in limits}
    locked = list(
        conn.execute(
            select(workers.c.identifier)
            .where(workers.c.identifier.in_(sorted(by_name)))
            .order_by(workers.c.identifier)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    rooms = dict.fromkeys(by_name, 0)
    if not locked:
        return rooms
    columns = [
        started_count(name, by_name[name].since(now), tasks.c.identifier).label(f"w_{n}")
        for n, name in enumerate(locked)
    ]
    counts = conn.execute(select(*columns)).one()
    for name, started in zip(locked, counts, strict=True):
        rooms[name] = max(0, by_name[name].rate_limit - int(started))
    return rooms


def within_worker_rooms(
    conn: Connection,
    claims: Claims,
    identifiers: Sequence[str],
    rooms: Mapping[str, int],
    limit: int,
    now: dt.datetime,
) -> Claims:
    """Split ``claims`` so each rate-limited worker takes at most its room, in claim order.

    Every claim becomes one branch for the unlimited workers and one per limited worker with
    room. A peek orders the branches' first tasks; walking it, a task is taken while both its
    claim (a limited queue's room) and its worker have room left, so neither limit is passed
    however the two combine.
    """
    plain = tuple(name for name in identifiers if name not in rooms)
    open_workers = [name for name in identifiers if rooms.get(name, 0) > 0]
    branches: Claims = []
    groups: list[tuple[int, str | None]] = []  # per branch: its claim, its limited worker
    for group, (scope, take) in enumerate(claims):
        if plain:
            branches.append((_narrowed(scope, plain), take))
            groups.append((group, None))
        for name in open_workers:
            branches.append((_narrowed(scope, (name,)), min(take, rooms[name])))
            groups.append((group, name))
    if not branches:
        return []
    claim_left = [take for _scope, take in claims]
    worker_left = dict(rooms)
    counts: Counter[int] = Counter()
    for index in _peek_order(conn, branches, identifiers, limit, now):
        group, limited = groups[index]
        if claim_left[group] <= 0 or (limited is not None and worker_left[limited] <= 0):
            continue
        claim_left[group] -= 1
        if limited is not None:
            worker_left[limited] -= 1
        counts[index] += 1
    return [(branches[index][0], n) for index, n in sorted(counts.items())]


def _narrowed(scope: QueueScope, names: tuple[str, ...]) -> QueueScope:
    return QueueScope(include=scope.include, exclude=scope.exclude, workers=names)


def room_left(
    conn: Connection, names: Sequence[str], now: dt.datetime
) -> tuple[tuple[str, int | None], ...]:
    """Lock the queues' rows, then count; how many tasks each queue may start now.

    The lock is FOR UPDATE SKIP LOCKED (SQLite: the claim's BEGIN IMMEDIATE already serializes):
    while one claimer holds a queue's row, the others skip that queue for this round instead of
    waiting, and only its holder can fill the queue's last slots. The counts run as a separate
    statement after the lock, because at READ COMMITTED a statement's snapshot is taken when it
    starts: counted in the locking statement, the running tasks of the claimer that held the lock
    just before would be missing. A queue whose row is skipped gets no room this round.
    """
    locked = [
        QueueControl.from_row(row)
        for row in conn.execute(
            select(queue_controls)
            .where(queue_controls.c.name.in_(names))
            .order_by(queue_controls.c.name)
            .with_for_update(skip_locked=True)
        ).mappings()
    ]
    columns: list[Label[int]] = []
    for control in locked:
        if control.paused_at(now) or not control.limited:
            continue
        if control.concurrency_limit is not None:
            columns.append(running_count(control.name).label(f"r_{len(columns)}"))
        since = control.rate_since(now)
        if since is not None:
            columns.append(started_count(control.name, since).label(f"s_{len(columns)}"))
    counts = iter(conn.execute(select(*columns)).one() if columns else ())
    rooms: list[tuple[str, int | None]] = []
    for control in locked:
        if control.paused_at(now):
            continue
        if not control.limited:
            rooms.append((control.name, None))
            continue
        room = []
        if control.concurrency_limit is not None:
            room.append(control.concurrency_limit - int(next(counts)))
        if control.rate_since(now) is not None:
            assert control.rate_limit is not None
            room.append(control.rate_limit - int(next(counts)))
        rooms.append((control.name, max(0, min(room))))
    return tuple(rooms)


def running_count(name: str) -> Any:
    """Tasks of the queue held by runners now: a range of ix_s_tasks_queue_status_started."""
    return (
        select(func.count())
        .select_from(tasks)
        .where(tasks.c.queue == name, tasks.c.status == RUNNING)
        .scalar_subquery()
    )


def started_count(name: str, since: dt.datetime, by: Any = tasks.c.queue) -> Any:
    """Tasks of the queue (or, ``by`` the identifier column, of the worker) whose latest attempt
    started after ``since``: one range per status of (queue | identifier, status, started_at)."""
    return (
        select(func.count())
        .select_from(tasks)
        .where(by == name, tasks.c.status.in_(EVERY_STATUS), tasks.c.started_at > since)
        .scalar_subquery()
    )


class QueueStore:
    """The operator side of queue controls (list, pause, resume, limits) on a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def change(self, name: str, values: Mapping[str, Any], *, create: bool = True) -> bool:
        """Set columns of the queue's row, inserting the row if missing and ``create`` is on.

        Whether a row was written. Two processes creating the same queue's row at once: the
        loser's INSERT fails on the key, and its second try updates the winner's row.
        """
        try:
            written = self._change(name, values, create)
        except DatabaseError as err:
            if not isinstance(err.__cause__, IntegrityError):
                raise
            written = self._change(name, values, create)
        self.store.control_cache.forget()
        return written

    def _change(self, name: str, values: Mapping[str, Any], create: bool) -> bool:
        with self.store.writing() as conn:
            now = utcnow()
            stmt = update(queue_controls).where(queue_controls.c.name == name)
            if conn.execute(stmt.values(updated_at=now, **values)).rowcount:
                return True
            if create:
                conn.execute(insert(queue_controls).values(name=name, updated_at=now, **values))
            return create

    def overview(self, names: Iterable[str] | None = None) -> list[QueueInfo]:
        """Every known queue (a row in s_queues, claimable or running tasks), or just ``names``.

        Pending counts read only the claimable set; running counts read only running tasks
        (the status range of an index): neither reads the finished history.
        """
        now = utcnow()
        only = sorted(set(names)) if names is not None else None
        with self.store.reading() as conn:
            stmt = select(queue_controls)
            pending_stmt = select(queue.c.queue, func.count()).group_by(queue.c.queue)
            running_stmt = (
                select(tasks.c.queue, func.count())
                .where(tasks.c.status == RUNNING)
                .group_by(tasks.c.queue)
            )
            if only is not None:
                stmt = stmt.where(queue_controls.c.name.in_(only))
                pending_stmt = pending_stmt.where(queue.c.queue.in_(only))
                running_stmt = running_stmt.where(tasks.c.queue.in_(only))
            controls = {
                row["name"]: QueueControl.from_row(row) for row in conn.execute(stmt).mappings()
            }
            pending = {str(q): int(n) for q, n in conn.execute(pending_stmt)}
            running = {str(q): int(n) for q, n in conn.execute(running_stmt)}
            started = _started_counts(conn, controls.values(), now)
        known = set(controls) | set(pending) | set(running)
        if only is not None:
            known |= set(only)
        infos = []
        for name in sorted(known):
            control = controls.get(name, QueueControl(name))
            timed = control.paused_until if not control.paused else None
            infos.append(
                QueueInfo(
                    name=name,
                    paused=control.paused_at(now),
                    paused_until=timed if timed is not None and timed > now else None,
                    concurrency_limit=control.concurrency_limit,
                    rate_limit=control.rate_limit,
                    rate_period_seconds=control.rate_period_seconds,
                    pending=pending.get(name, 0),
                    running=running.get(name, 0),
                    started_in_period=started.get(name),
                )
            )
        return infos


def _started_counts(
    conn: Connection, controls: Iterable[QueueControl], now: dt.datetime
) -> dict[str, int]:
    """Starts within the rate period of each rate-limited queue, in one statement."""
    columns: list[Label[int]] = []
    names: list[str] = []
    for control in controls:
        since = control.rate_since(now)
        if since is not None:
            columns.append(started_count(control.name, since).label(f"s_{len(columns)}"))
            names.append(control.name)
    if not columns:
        return {}
    counts = conn.execute(select(*columns)).one()
    return {name: int(n) for name, n in zip(names, counts, strict=True)}
