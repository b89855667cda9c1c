"""The ``Store``: one database's engine and connections, and the repositories that hold its SQL.

A ``Store`` opens transactions (``writing``, ``reading``, ``retrying``) and tells runners about new
tasks (``announce``, ``wake_source``); it runs no statement of its own beyond ``ping``. Every
statement lives in a repository beside it, one job each:

- ``claims`` (db/claims.py): the hot path - claim, start, progress, finish, attempt logs;
- ``task_reads`` / ``task_writes`` (db/task_reads.py, db/task_writes.py): reading and inserting;
- ``actions`` (db/actions.py): an operator's cancel, retry and delete;
- ``housekeeping`` (db/housekeeping.py): pruning, upkeep, emptying;
- ``workers`` (db/worker_rows.py): ``s_workers``; ``logs`` (db/logs.py): ``s_task_logs``;
- ``NodeStore`` (db/nodes.py) and ``QueueStore`` (db/queues.py): liveness and queue controls.

Where SQL must differ, ``stask.db.dialects`` has one Store per database, naming its own
repositories (``claims_type``, ...) beside its connection hooks.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.engine import URL

from stask.db.actions import OperatorActions
from stask.db.engine import translate_errors
from stask.db.housekeeping import Housekeeping
from stask.db.logs import TaskLogs
from stask.db.queues import shared_control_cache, shared_worker_limits_cache
from stask.db.tables import workers
from stask.db.task_reads import TaskReads
from stask.db.worker_rows import WorkerRows
from stask.errors import DatabaseConflict, StaskError

if TYPE_CHECKING:
    from stask.db.claims import Claims
    from stask.db.notify import WakeSource
    from stask.db.task_writes import TaskWrites

# A caller's own connection (``Stask.create(connection=...)``): its transaction, its commit.
CallerConnection = Connection

T = TypeVar("T")
# How often a transaction the database aborted as a deadlock victim (or after a lock wait
# timeout) is run again before the error goes to the caller.
TRANSIENT_RETRIES = 8


class Store:
    """Connections to one database, and its repositories. Dialects set the ``*_type`` below."""

    dialect = "generic"
    claims_type: ClassVar[type[Claims]]
    task_writes_type: ClassVar[type[TaskWrites]]
    housekeeping_type: ClassVar[type[Housekeeping]] = Housekeeping

    def __init__(self, engine: Engine, url: URL) -> None:
        self.engine = engine
        self.url = url
        database = url.render_as_string(hide_password=False)
        self.control_cache = shared_control_cache(database)
        self.worker_limits = shared_worker_limits_cache(database)
        self.claims = self.claims_type(self)
        self.task_reads = TaskReads(self)
        self.task_writes = self.task_writes_type(self)
        self.actions = OperatorActions(self)
        self.housekeeping = self.housekeeping_type(self)
        self.workers = WorkerRows(self)
        self.logs = TaskLogs(self)

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

    def one_statement(self) -> contextlib.AbstractContextManager[Connection]:
        """Where a statement that is a whole transaction runs (PostgreSQL: autocommit)."""
        return self.writing()

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

    # -- wake-ups ----------------------------------------------------------------------------

    def announce(self, conn: Connection, rows: Sequence[Mapping[str, Any]], now: Any) -> None:
        """Tell idle runners that ``conn``'s transaction inserted tasks (``rows`` with their
        ``run_at``) of which some may be due ``now`` (PostgreSQL: NOTIFY; SQLite: wake file)."""
        return  # MariaDB has no push: its runners poll adaptively

    def wake_source(self, on_wake: Callable[[], None]) -> WakeSource | None:
        """What wakes an idle runner when another process enqueues (None: polling only)."""
        return None
