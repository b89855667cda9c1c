"""``Stask``: the one object applications, the CLI and the web layer call.

Each method delegates to the module of its area: creating tasks (core/creating.py), tasks as
operators see them and their logs (core/tasks_admin.py), workers and their settings
(core/workers_admin.py), queues (core/queues.py), schedules (core/scheduling.py) and running
tasks in this process (core/running.py).
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stask.core import creating, running, schedules, scheduling, tasks_admin, workers_admin
from stask.core import queues as queue_admin
from stask.core.cache import TTLCache
from stask.core.creating import CreateItem
from stask.core.operations import Operations
from stask.core.registry import Registry
from stask.core.tasks_admin import StatusFilter
from stask.core.worker import BaseWorker
from stask.db.dialects import store_for
from stask.db.engine import build_engine, parse_url, safe_url, translate_errors
from stask.db.store import Store
from stask.models import JSONDict, LogEntry, Priority, QueueInfo, Task, WorkerInfo, WorkerRecord
from stask.settings import Settings, load_settings

if TYPE_CHECKING:
    from stask.db.store import CallerConnection


class Stask(Operations):
    """Create, run, watch and manage tasks. Settings come from arguments, env and stask.toml."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        database_url: str | None = None,
        storage: str | Path | None = None,
        workers: Sequence[str] | None = None,
        use_entry_points: bool = True,
    ) -> None:
        self.settings = settings or load_settings(
            database_url=database_url,
            storage=storage,
            workers=list(workers) if workers is not None else None,
        )
        self.url = parse_url(self.settings.database_url)
        self.registry = Registry(self.settings.workers, use_entry_points=use_entry_points)
        self.node_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._store: Store | None = None
        self.instances: dict[str, BaseWorker] = {}  # live workers this process runs
        # Rows of registered workers by identifier (see core/workers_admin.py).
        self.worker_cache: TTLCache[str, WorkerRecord] = TTLCache(
            workers_admin.WORKER_CACHE_ENTRIES, workers_admin.WORKER_CACHE_SECONDS
        )
        self._enqueue_callbacks: list[Callable[[], None]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = store_for(build_engine(self.settings.database_url), self.url)
        return self._store

    def migrate(self) -> None:
        """Create or upgrade the tables (the only way the schema changes)."""
        from stask.db.migrate import upgrade  # Alembic is only needed here; keep start-up fast

        engine = build_engine(self.settings.database_url, create=True)
        with translate_errors(self.url):
            upgrade(engine)
        if self._store is None:
            self._store = store_for(engine, self.url)
        else:
            engine.dispose()

    def database_label(self) -> str:
        """The database URL with its password masked, for messages."""
        return safe_url(self.url)

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
            self._store = None

    def __enter__(self) -> Stask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers (core/workers_admin.py) -------------------------------------------------------

    def discover(self) -> builtins.list[WorkerInfo]:
        """Register workers found in code that are not registered yet; returns the new ones."""
        return workers_admin.discover(self)

    def rescan(self) -> builtins.list[WorkerInfo]:
        """Refresh the stored metadata (class path, title, actions, ...) of registered workers."""
        return workers_admin.rescan(self)

    def clean_orphaned(self) -> builtins.list[str]:
        """Remove registered workers whose class can no longer be imported; their tasks stay."""
        return workers_admin.clean_orphaned(self)

    def workers(self, *, active_only: bool = False) -> builtins.list[WorkerInfo]:
        return workers_admin.workers(self, active_only=active_only)

    def worker(self, identifier: str) -> WorkerInfo:
        return workers_admin.worker(self, identifier)

    def activate(self, identifier: str) -> WorkerInfo:
        workers_admin.update(self, identifier, {"active": True})
        return self.worker(identifier)

    def deactivate(self, identifier: str) -> WorkerInfo:
        workers_admin.update(self, identifier, {"active": False})
        return self.worker(identifier)

    def set_worker_rate_limit(
        self, identifier: str, rate: int | None, period_seconds: int | None
    ) -> WorkerInfo:
        """At most ``rate`` of the worker's tasks started per ``period_seconds``, counted across
        every runner and queue (None and None: no limit). Retries count as starts."""
        values = workers_admin.rate_limit_values(rate, period_seconds)
        workers_admin.update(self, identifier, values)
        self.wake_local_runners()
        return self.worker(identifier)

    def worker_instance(self, identifier: str) -> BaseWorker | None:
        """The live instance of a worker this process can run, or None."""
        return workers_admin.worker_instance(self, identifier)

    def stored_settings(self, identifier: str) -> JSONDict:
        return workers_admin.stored_settings(self, identifier)

    def change_stored_settings(
        self, identifier: str, change: Callable[[JSONDict], JSONDict]
    ) -> JSONDict:
        return workers_admin.change_stored_settings(self, identifier, change)

    def get_config(self, identifier: str, key: str | None = None, default: Any = None) -> Any:
        return workers_admin.configurable(self, identifier).get_config(key, default)

    def set_config(self, identifier: str, key: str, value: Any) -> None:
        workers_admin.configurable(self, identifier).set_config(key, value)

    def update_config(self, identifier: str, values: Mapping[str, Any]) -> None:
        workers_admin.configurable(self, identifier).update_config(values)

    def task_counts_by_worker(self) -> dict[str, int]:
        """How many tasks each worker has, in every status."""
        return tasks_admin.count_by_worker(self)

    # -- the worker cache (core/cache.py) ------------------------------------------------------

    def cache_stats(self) -> dict[str, Any]:
        """The worker cache's hits, misses, evictions, hit_rate (percent), cache_size (entries)
        and memory_usage (approximate bytes)."""
        return self.worker_cache.stats()

    def clear_cache(self, identifier: str | None = None) -> int:
        """Drop the cached rows of one worker, or of all; how many entries were dropped."""
        if identifier is None:
            return self.worker_cache.clear()
        return int(self.worker_cache.pop(identifier))

    # -- creating tasks (core/creating.py) -----------------------------------------------------

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after this process commits new tasks that are due now.

        The runner in this process registers its wake-up here, so a same-process enqueue is
        picked up without waiting for a poll. (With ``connection=`` the caller commits, so
        there is nothing to hook; the runner's poll or NOTIFY finds those.)
        """
        self._enqueue_callbacks.append(callback)

    def wake_local_runners(self) -> None:
        """New tasks, or room in a queue: a runner in this process claims without waiting for
        its poll (runners elsewhere see a control change within their cache period)."""
        for callback in self._enqueue_callbacks:
            callback()

    def create(
        self,
        identifier: str,
        action: str,
        options: Mapping[str, Any] | None = None,
        *,
        priority: str | Priority = Priority.NORMAL,
        run_at: dt.datetime | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        started_by: str | None = None,
        timeout: float | None = None,
        deadline: dt.datetime | None = None,
        connection: CallerConnection | None = None,
    ) -> Task:
        """Queue one task. With ``connection`` it commits (or rolls back) with the caller's work.

        ``timeout`` (seconds per attempt) overrides the worker's; a task not started by
        ``deadline`` expires (cancelled) instead of running late.
        """
        new = creating.new_task(
            self, identifier, action, options, priority=priority, run_at=run_at, queue=queue,
            max_attempts=max_attempts, started_by=started_by, timeout=timeout, deadline=deadline,
        )  # fmt: skip
        return creating.create(self, new, connection)

    def create_many(
        self,
        items: Iterable[CreateItem],
        *,
        priority: str | Priority = Priority.NORMAL,
        connection: CallerConnection | None = None,
    ) -> builtins.list[int]:
        """Queue many tasks in one transaction; all are checked before any is written.

        Each item is ``(identifier, action)``, ``(identifier, action, options)`` or a dict with
        the keyword arguments of ``create``.
        """
        return creating.create_many(self, items, priority, connection)

    # -- tasks (core/tasks_admin.py) -----------------------------------------------------------

    def get(self, task_id: int) -> Task:
        return tasks_admin.get(self, task_id)

    def list(
        self,
        *,
        status: StatusFilter = None,
        worker: str | None = None,
        action: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
        before_id: int | None = None,
    ) -> builtins.list[Task]:
        """Newest first. ``before_id`` pages without OFFSET over a large history."""
        where = tasks_admin.task_filter(status, worker, action, queue)
        return tasks_admin.list_tasks(self, where, limit, offset, before_id)

    def count(
        self,
        *,
        status: StatusFilter = None,
        worker: str | None = None,
        action: str | None = None,
        queue: str | None = None,
    ) -> int:
        return tasks_admin.count(self, tasks_admin.task_filter(status, worker, action, queue))

    def stats(self, *, worker: str | None = None) -> dict[str, int]:
        """Task counts per status and in total (the seed's ``getStats``)."""
        return tasks_admin.stats(self, worker)

    def result_file(self, task_id: int) -> Path:
        """The downloadable file a task produced."""
        return tasks_admin.result_file(self, task_id)

    def cancel(self, task_id: int) -> Task:
        """Cancel a pending task now; ask a running one to stop at its next progress()."""
        return tasks_admin.cancel(self, task_id)

    def retry(self, task_id: int) -> Task:
        """Queue a failed or cancelled task again."""
        return tasks_admin.retry(self, task_id)

    def rerun(self, task_id: int, *, started_by: str | None = None) -> Task:
        """Run a task again as a new task, whatever its state ("Run again"); linked both ways
        (``reruns``). ``retry`` instead requeues a failed or cancelled task under its own id."""
        return creating.rerun(self, task_id, started_by=started_by)

    def reruns(self, task_id: int) -> tuple[int | None, builtins.list[int]]:
        """The task ``task_id`` was run again from (or None), and the newest 20 run from it."""
        return self.store.task_reads.reruns(task_id)

    def delete(self, task_id: int) -> None:
        """Delete a task that is not running, with its logs and files."""
        tasks_admin.delete(self, task_id)

    def clean_old_tasks(self, days: int = 30) -> int:
        """Delete finished tasks older than ``days`` with their logs and files."""
        return tasks_admin.clean_old_tasks(self, days)

    def clean_old_logs(self, days: int = 30) -> int:
        return tasks_admin.clean_old_logs(self, days)

    def clean_old_files(self, days: int = 30) -> int:
        """Remove task folders older than ``days`` whose task no longer exists."""
        return tasks_admin.clean_old_files(self, days)

    # -- logs (the seed's log API, core/tasks_admin.py) ----------------------------------------

    def log(self, task_id: int, level: str, message: str, **context: Any) -> None:
        """Add a line to an existing task's log (TaskNotFound, and nothing written, if there
        is no such task)."""
        tasks_admin.log(self, task_id, level, message, **context)

    def get_logs(self, task_id: int, *, after_id: int | None = None) -> builtins.list[LogEntry]:
        return tasks_admin.get_logs(self, task_id, after_id=after_id)

    def get_last_logs(self, task_id: int, count: int = 10) -> builtins.list[LogEntry]:
        return tasks_admin.get_logs(self, task_id, last=count)

    def get_error_logs(self, task_id: int) -> builtins.list[LogEntry]:
        return tasks_admin.get_logs(self, task_id, levels=("error", "critical"))

    def clear_logs(self, task_id: int) -> int:
        return tasks_admin.clear_logs(self, task_id)

    # -- running (core/running.py) -------------------------------------------------------------

    def process_pending(self, batch_size: int = 100) -> int:
        """Fire due schedule slots, then run up to ``batch_size`` due tasks in this process,
        one claim at a time, in order: one cron line (`stask run-pending`) does both.

        Claiming one at a time keeps tasks not yet started in the queue, where a higher
        priority task created meanwhile can still go first and another host can take them.
        """
        return running.process_pending(self, batch_size)

    # -- queues (core/queues.py: pauses and limits every runner obeys) -------------------------

    def queues(self) -> builtins.list[QueueInfo]:
        """Every known queue (with controls, pending or running tasks): its state and counts."""
        return queue_admin.overview(self)

    def queue(self, name: str) -> QueueInfo:
        """One queue's state and counts; a queue nobody used yet shows as empty and active."""
        return queue_admin.queue(self, name)

    def pause_queue(self, name: str, until: dt.datetime | None = None) -> QueueInfo:
        """Stop every runner claiming from ``name`` until resumed, or until ``until`` if given
        (a naive datetime is UTC). Running tasks finish; runners see it within about a second."""
        return queue_admin.pause(self, name, until)

    def resume_queue(self, name: str) -> QueueInfo:
        """Let runners claim from ``name`` again (a no-op for a queue that is not paused)."""
        return queue_admin.resume(self, name)

    def set_queue_limits(
        self,
        name: str,
        concurrency: int | None = None,
        rate: int | None = None,
        period_seconds: int | None = None,
    ) -> QueueInfo:
        """Set ``name``'s cluster-wide limits as a whole (None: no such limit): at most
        ``concurrency`` of its tasks running at once, at most ``rate`` started per
        ``period_seconds``. Held across all runners; prefetched tasks count as running."""
        return queue_admin.set_limits(self, name, concurrency, rate, period_seconds)

    # -- schedules (core/scheduling.py) --------------------------------------------------------

    def schedule(self, identifier: str) -> schedules.Schedule:
        """The worker's schedule from its settings; manual when it has none."""
        return scheduling.schedule(self, identifier)

    def set_schedule(
        self,
        identifier: str,
        schedule: Mapping[str, Any] | schedules.Schedule,
        *,
        now: dt.datetime | None = None,
    ) -> schedules.Schedule:
        """Validate and store a worker's schedule; it fires for slots after ``now`` only, so a
        ``once`` at or before ``now`` is refused (ValidationError): it could never fire."""
        return scheduling.set_schedule(self, identifier, schedule, now)

    def enqueue_due_schedules(self, now: dt.datetime | None = None) -> builtins.list[int]:
        """Create the task of each active worker's latest due schedule slot; the ids created.

        Any number of runners may call this at once: each slot's task is created exactly once,
        and slots missed while no runner was up fire once, as the latest of them.
        """
        return scheduling.enqueue_due_schedules(self, now)
