"""``Stask``: the one object applications, the CLI and the web layer call."""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import json
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, RowMapping

from stask.core import executor as executor_module
from stask.core import schedules
from stask.core.config import deep_merge
from stask.core.executor import Executor
from stask.core.liveness import Liveness
from stask.core.operations import Operations
from stask.core.queues import check_limits, check_queue_name, check_until
from stask.core.registry import Registry, import_class
from stask.core.values import check_json
from stask.core.worker import BaseWorker, normalize_action
from stask.db.dialects import store_for
from stask.db.engine import build_engine, parse_url, translate_errors
from stask.db.nodes import NodeStore
from stask.db.queues import QueueStore
from stask.db.rows import NewTask, TaskFilter
from stask.db.store import Store
from stask.errors import (
    InvalidOptions,
    InvalidState,
    ResultNotFound,
    StaskError,
    TaskNotFound,
    UnknownAction,
    UnknownWorker,
    ValidationError,
    WorkerInactive,
)
from stask.models import (
    LOG_LEVELS,
    JSONDict,
    LogEntry,
    Priority,
    QueueInfo,
    Status,
    Task,
    WorkerInfo,
    to_utc_naive,
    utcnow,
)
from stask.settings import Settings, load_settings

WORKER_CACHE_SECONDS = 2.0
SCHEDULED_BY = "schedule"  # started_by of tasks a schedule created
log = logging.getLogger("stask")
CreateItem = tuple[str, str] | tuple[str, str, Mapping[str, Any] | None] | Mapping[str, Any]


def check_options(options: Mapping[str, Any] | None) -> JSONDict:
    """Options must be a JSON object; name the first value that is not JSON."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidOptions(f"options must be a dict, got {type(options).__name__}")
    for key, value in options.items():
        if not isinstance(key, str):
            raise InvalidOptions(f"option names must be strings, got {key!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InvalidOptions(
                f"option {key!r} is not JSON ({type(value).__name__}: {err}) - pass strings, "
                "numbers, booleans, None, lists or dicts (convert dates and paths to strings)"
            ) from err
    return dict(options)


MAX_TASK_ID = 2**63 - 1  # s_tasks.id is a signed 64-bit integer on every database
CREATE_FIELDS = (
    "identifier", "action", "options", "priority", "run_at", "queue", "max_attempts",
    "started_by", "timeout", "deadline",
)  # fmt: skip
STARTED_BY_LENGTH = 100  # s_tasks.started_by


def check_task_id(task_id: object) -> int:
    """A task id as the database can hold it: an int (not a bool) in 1..2**63-1.

    A non-int is a ValidationError; an int out of that range can name no task: TaskNotFound
    (rather than the driver's overflow error).
    """
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ValidationError(f"a task id must be an int, got {type(task_id).__name__} {task_id!r}")
    if not 1 <= task_id <= MAX_TASK_ID:
        raise TaskNotFound(
            f"no task has id {task_id} (task ids are whole numbers from 1 to {MAX_TASK_ID})"
        )
    return task_id


def _check_moment(name: str, value: object) -> dt.datetime | None:
    if value is not None and not isinstance(value, dt.datetime):
        raise ValidationError(
            f"{name} must be a datetime (aware, or naive meaning UTC) or None, got "
            f"{type(value).__name__} {value!r} - parse strings first, e.g. "
            "datetime.fromisoformat('2026-12-01T09:30:00+00:00')"
        )
    return to_utc_naive(value) if value is not None else None


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TASK_ID:
        raise ValidationError(f"{name} must be a non-negative int, got {value!r}")
    return value


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
        self._instances: dict[str, BaseWorker] = {}
        self._rows: dict[str, RowMapping] = {}
        self._rows_at = 0.0
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

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()
            self._store = None

    def __enter__(self) -> Stask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- workers -------------------------------------------------------------------------------

    def _metadata(self, cls: type[BaseWorker]) -> JSONDict:
        return {
            "class_path": cls.class_path(),
            "scope": cls.scope,
            "title": cls.display_title(),
            "description": cls.description,
            "icon": cls.icon,
            "actions": sorted(cls.actions()),
        }

    def _info(self, row: Mapping[Any, Any]) -> WorkerInfo:
        # The registry decides what this process runs (by identifier), so a worker it knows is
        # not orphaned even if its stored class path is stale (moved class; rescan updates it).
        cls = self.registry.get(row["identifier"]) or import_class(row["class_path"])
        defaults = _worker_defaults(self, cls) if cls is not None else {}
        return WorkerInfo(
            id=int(row["id"]),
            identifier=row["identifier"],
            class_path=row["class_path"],
            scope=row["scope"],
            title=row["title"],
            description=row["description"] or "",
            icon=row["icon"],
            actions=tuple(row["actions"] or ()),
            active=bool(row["active"]),
            position=int(row["position"]),
            settings=deep_merge(defaults, row["settings"] or {}),
            orphaned=cls is None,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            rate_limit=row["rate_limit"],
            rate_period_seconds=row["rate_period_seconds"],
        )

    def _forget_rows(self) -> None:
        self._rows_at = 0.0

    def _worker_rows(self) -> dict[str, RowMapping]:
        """Registered workers, cached briefly: creating a task checks them every time."""
        if time.monotonic() - self._rows_at > WORKER_CACHE_SECONDS:
            self._rows = {row["identifier"]: row for row in self.store.list_workers()}
            self._rows_at = time.monotonic()
        return self._rows

    def discover(self) -> list[WorkerInfo]:
        """Register workers found in code that are not registered yet; returns the new ones."""
        classes = self.registry.reload()
        known = {row["identifier"] for row in self.store.list_workers()}
        added = []
        for position, (identifier, cls) in enumerate(sorted(classes.items()), start=len(known)):
            if identifier in known:
                continue
            values = {
                "identifier": identifier,
                "active": True,
                "position": position,
                "settings": {},
                **self._metadata(cls),
            }
            if self.store.insert_worker(values):
                added.append(identifier)
        self._forget_rows()
        return [self.worker(identifier) for identifier in added]

    def rescan(self) -> list[WorkerInfo]:
        """Refresh the stored metadata (class path, title, actions, ...) of registered workers."""
        classes = self.registry.reload()
        updated = []
        for row in self.store.list_workers():
            cls = classes.get(row["identifier"]) or import_class(row["class_path"])
            if cls is None:
                continue
            values = self._metadata(cls)
            if any(row[key] != value for key, value in values.items()):
                self.store.update_worker(row["identifier"], values)
                updated.append(row["identifier"])
        self._forget_rows()
        return [self.worker(identifier) for identifier in updated]

    def clean_orphaned(self) -> list[str]:
        """Remove registered workers whose class can no longer be imported; their tasks stay."""
        self.registry.reload()
        orphaned = [info.identifier for info in self.workers() if info.orphaned]
        self.store.delete_workers(orphaned)
        self._forget_rows()
        return orphaned

    def workers(self, *, active_only: bool = False) -> list[WorkerInfo]:
        infos = [self._info(row) for row in self.store.list_workers()]
        return [info for info in infos if info.active or not active_only]

    def _row(self, identifier: str) -> RowMapping:
        row = self.store.get_worker(identifier)
        if row is None:
            raise self._unknown_worker(identifier)
        return row

    def _unknown_worker(self, identifier: str) -> UnknownWorker:
        known = sorted(row["identifier"] for row in self.store.list_workers())
        listing = ", ".join(known) if known else "none"
        return UnknownWorker(
            f"no worker {identifier!r} is registered (registered: {listing}) - check the "
            "identifier, or run `stask workers discover` after adding its module to STASK_WORKERS"
        )

    def worker(self, identifier: str) -> WorkerInfo:
        return self._info(self._row(identifier))

    def _set_active(self, identifier: str, active: bool) -> WorkerInfo:
        if not self.store.update_worker(identifier, {"active": active}):
            raise self._unknown_worker(identifier)
        self._forget_rows()
        return self.worker(identifier)

    def activate(self, identifier: str) -> WorkerInfo:
        return self._set_active(identifier, True)

    def deactivate(self, identifier: str) -> WorkerInfo:
        return self._set_active(identifier, False)

    def set_worker_rate_limit(
        self, identifier: str, rate: int | None, period_seconds: int | None
    ) -> WorkerInfo:
        """At most ``rate`` of the worker's tasks started per ``period_seconds``, counted across
        every runner and queue (None and None: no limit). Retries count as starts."""
        limits = check_limits(None, rate, period_seconds)
        values = {key: limits[key] for key in ("rate_limit", "rate_period_seconds")}
        if not self.store.update_worker(identifier, values):
            raise self._unknown_worker(identifier)
        self._forget_rows()
        self._wake_local_runners()
        return self.worker(identifier)

    def worker_instance(self, identifier: str) -> BaseWorker | None:
        """The live instance of a worker this process can run, or None."""
        instance = self._instances.get(identifier)
        if instance is None:
            cls = self.registry.get(identifier)
            if cls is None:
                return None
            instance = self._instances[identifier] = cls(self)
        return instance

    def stored_settings(self, identifier: str) -> JSONDict:
        return dict(self._row(identifier)["settings"] or {})

    def change_stored_settings(
        self, identifier: str, change: Callable[[JSONDict], JSONDict]
    ) -> JSONDict:
        changed = self.store.change_worker_settings(identifier, change)
        if changed is None:
            raise self._unknown_worker(identifier)
        return changed

    def _configurable(self, identifier: str) -> BaseWorker:
        """An instance for config access, even of a worker this process does not run."""
        instance = self.worker_instance(identifier)
        if instance is not None:
            return instance
        cls = import_class(self._row(identifier)["class_path"])
        return cls(self) if cls is not None else BaseWorker(self, identifier=identifier)

    def get_config(self, identifier: str, key: str | None = None, default: Any = None) -> Any:
        return self._configurable(identifier).get_config(key, default)

    def set_config(self, identifier: str, key: str, value: Any) -> None:
        self._configurable(identifier).set_config(key, value)

    def update_config(self, identifier: str, values: Mapping[str, Any]) -> None:
        self._configurable(identifier).update_config(values)

    # -- creating tasks ------------------------------------------------------------------------

    def _new_task(
        self,
        identifier: str,
        action: str,
        options: Mapping[str, Any] | None,
        *,
        priority: str | Priority = Priority.NORMAL,
        run_at: dt.datetime | None = None,
        queue: str | None = None,
        max_attempts: int | None = None,
        started_by: str | None = None,
        timeout: float | None = None,
        deadline: dt.datetime | None = None,
    ) -> NewTask:
        for name, text in (("identifier", identifier), ("action", action)):
            if not isinstance(text, str):
                raise ValidationError(
                    f"{name} must be a string, got {type(text).__name__} {text!r}"
                )
        if started_by is not None and (
            not isinstance(started_by, str) or len(started_by) > STARTED_BY_LENGTH
        ):
            raise ValidationError(
                f"started_by must be a string of at most {STARTED_BY_LENGTH} characters or "
                f"None, got {started_by!r}"
            )
        run_at_utc = _check_moment("run_at", run_at)
        expires_at = _check_moment("deadline", deadline)
        checked = check_options(options)
        check_json(
            checked, "the task's options", self.settings.max_options_bytes, "max_options_bytes"
        )
        rows = self._worker_rows()
        row = rows.get(identifier)
        if row is None:
            self._forget_rows()
            row = self._worker_rows().get(identifier)
            if row is None:
                raise self._unknown_worker(identifier)
        normalized = normalize_action(action)
        actions = list(row["actions"] or ())
        if normalized not in actions:
            raise UnknownAction(
                f"worker {identifier!r} has no action {action!r} (actions: "
                f"{', '.join(actions) or 'none'})"
            )
        if not row["active"]:
            raise WorkerInactive(
                f"worker {identifier!r} is inactive - activate it with "
                f"`stask workers activate {identifier}`"
            )
        cls = self.registry.get(identifier)
        attempts = max_attempts if max_attempts is not None else (cls.max_attempts if cls else 3)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValidationError(f"max_attempts must be a positive integer, got {attempts!r}")
        return NewTask(
            identifier=identifier,
            action=normalized,
            options=checked,
            priority=Priority.parse(priority),
            # An explicit name is checked: "" (an unset variable in a script) used to mean the
            # default queue, and a name too long for the column failed only in the INSERT.
            queue=(
                check_queue_name(queue)
                if queue is not None
                else (cls.queue if cls and cls.queue else self.settings.default_queue)
            ),
            run_at=run_at_utc,
            max_attempts=attempts,
            started_by=started_by,
            timeout_seconds=_positive_seconds(timeout),
            expires_at=expires_at,
        )

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after this process commits new tasks that are due now.

        The runner in this process registers its wake-up here, so a same-process enqueue is
        picked up without waiting for a poll. (With ``connection=`` the caller commits, so
        there is nothing to hook; the runner's poll or NOTIFY finds those.)
        """
        self._enqueue_callbacks.append(callback)

    def _enqueued(self, batch: Sequence[NewTask]) -> None:
        now = utcnow()
        if any(item.run_at is None or item.run_at <= now for item in batch):
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
        connection: Connection | None = None,
    ) -> Task:
        """Queue one task. With ``connection`` it commits (or rolls back) with the caller's work.

        ``timeout`` (seconds per attempt) overrides the worker's; a task not started by
        ``deadline`` expires (cancelled) instead of running late.
        """
        new = self._new_task(
            identifier,
            action,
            options,
            priority=priority,
            run_at=run_at,
            queue=queue,
            max_attempts=max_attempts,
            started_by=started_by,
            timeout=timeout,
            deadline=deadline,
        )
        task = self.store.insert_task(new, connection=connection)
        if connection is None:
            self._enqueued([new])
        return task

    def create_many(
        self,
        items: Iterable[CreateItem],
        *,
        priority: str | Priority = Priority.NORMAL,
        connection: Connection | None = None,
    ) -> list[int]:
        """Queue many tasks with one INSERT; all are checked before any is written.

        Each item is ``(identifier, action)``, ``(identifier, action, options)`` or a dict with
        the keyword arguments of ``create``.
        """
        batch = []
        for index, item in enumerate(items):
            try:
                batch.append(self._create_item(item, priority))
            except (ValidationError, InvalidState) as err:  # the same error, naming the item
                raise type(err)(f"item {index} of create_many: {err.message}") from err
        ids = self.store.insert_tasks(batch, connection=connection)
        if connection is None:
            self._enqueued(batch)
        return ids

    def _create_item(self, item: CreateItem, priority: str | Priority) -> NewTask:
        if isinstance(item, Mapping):
            unknown = sorted(str(key) for key in item if key not in CREATE_FIELDS)
            if unknown:
                raise ValidationError(
                    f"unknown key(s) {', '.join(map(repr, unknown))} - use "
                    f"{', '.join(CREATE_FIELDS)}"
                )
            missing = [key for key in ("identifier", "action") if key not in item]
            if missing:
                raise ValidationError(f"missing key(s) {', '.join(map(repr, missing))}")
            fields = dict(item)
            fields.setdefault("priority", priority)
            return self._new_task(
                fields.pop("identifier"),
                fields.pop("action"),
                fields.pop("options", None),
                **fields,
            )
        if isinstance(item, tuple) and len(item) in (2, 3):
            options = item[2] if len(item) == 3 else None
            return self._new_task(item[0], item[1], options, priority=priority)
        raise ValidationError(
            f"each item must be (identifier, action[, options]) or a dict, got {item!r}"
        )

    # -- reading tasks -------------------------------------------------------------------------

    def get(self, task_id: int) -> Task:
        task = self.store.get_task(check_task_id(task_id))
        if task is None:
            raise TaskNotFound(f"no task has id {task_id}")
        return task

    def _filter(
        self,
        status: str | Status | Sequence[str | Status] | None,
        worker: str | None,
        action: str | None,
        queue: str | None,
    ) -> TaskFilter:
        if status is None:
            statuses: tuple[Status, ...] = ()
        elif isinstance(status, str | Status):
            statuses = (Status.parse(status),)
        else:
            statuses = tuple(Status.parse(s) for s in status)
        return TaskFilter(
            statuses=statuses,
            identifier=worker,
            action=normalize_action(action) if action else None,
            queue=queue,
        )

    def list(
        self,
        *,
        status: str | Status | Sequence[str | Status] | None = None,
        worker: str | None = None,
        action: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        offset: int = 0,
        before_id: int | None = None,
    ) -> list[Task]:
        """Newest first. ``before_id`` pages without OFFSET over a large history."""
        if limit < 1 or limit > 10_000 or offset < 0:
            raise ValidationError("limit must be 1-10000 and offset >= 0")
        return self.store.list_tasks(
            self._filter(status, worker, action, queue),
            limit=limit,
            offset=offset,
            before_id=before_id,
        )

    def count(
        self,
        *,
        status: str | Status | Sequence[str | Status] | None = None,
        worker: str | None = None,
        action: str | None = None,
        queue: str | None = None,
    ) -> int:
        return self.store.count_tasks(self._filter(status, worker, action, queue))

    def stats(self, *, worker: str | None = None) -> dict[str, int]:
        """Task counts per status and in total (the seed's ``getStats``)."""
        where = TaskFilter(identifier=worker) if worker else None
        counts = {status.value: n for status, n in self.store.count_by_status(where).items()}
        counts["total"] = sum(counts.values())
        return counts

    def result_file(self, task_id: int) -> Path:
        """The downloadable file a task produced."""
        check_task_id(task_id)
        task = self.get(task_id)
        relative = task.result_file
        if relative is None:
            raise ResultNotFound(f"task {task_id} has no result file")
        path = (self.settings.storage / relative).resolve()
        if self.settings.storage.resolve() not in path.parents or not path.is_file():
            raise ResultNotFound(f"the result file of task {task_id} ({relative}) is gone")
        return path

    # -- changing tasks ------------------------------------------------------------------------

    def cancel(self, task_id: int) -> Task:
        """Cancel a pending task now; ask a running one to stop at its next progress()."""
        check_task_id(task_id)
        found = self.store.cancel(task_id, "Cancelled before it started")
        if found is None:
            raise TaskNotFound(f"no task has id {task_id}")
        before, ended = found
        if before.is_final:
            raise InvalidState(f"task {task_id} is already {before.value}; nothing to cancel")
        # A task a runner holds but has not started yet (prefetched) ends at once, like a
        # pending one: its runner's start is fenced and finds it gone.
        message = "Cancelled before it started" if ended else "Cancellation requested"
        self.log(task_id, "warning", message)
        return self.get(task_id)

    def retry(self, task_id: int) -> Task:
        """Queue a failed or cancelled task again."""
        check_task_id(task_id)
        before = self.store.requeue_finished(task_id)
        if before is None:
            raise TaskNotFound(f"no task has id {task_id}")
        if before not in (Status.FAILED, Status.CANCELLED):
            raise InvalidState(
                f"task {task_id} is {before.value}; only failed or cancelled tasks can be retried"
            )
        self.log(task_id, "info", "Queued again by an operator")
        return self.get(task_id)

    def delete(self, task_id: int) -> None:
        """Delete a task that is not running, with its logs and files."""
        check_task_id(task_id)
        before = self.store.delete_task(task_id)
        if before is None:
            raise TaskNotFound(f"no task has id {task_id}")
        if not (before is Status.PENDING or before.is_final):
            raise InvalidState(f"task {task_id} is {before.value} - cancel it first")
        shutil.rmtree(self.settings.storage / "tasks" / str(task_id), ignore_errors=True)

    # -- running -------------------------------------------------------------------------------

    def process_pending(self, batch_size: int = 100) -> int:
        """Fire due schedule slots, then run up to ``batch_size`` due tasks in this process,
        one claim at a time, in order: one cron line (`stask run-pending`) does both.

        Claiming one at a time keeps tasks not yet started in the queue, where a higher
        priority task created meanwhile can still go first and another host can take them.
        """
        if batch_size < 1:
            raise ValidationError(f"batch size must be at least 1, got {batch_size}")
        identifiers = list(self.registry.classes())
        self.enqueue_due_schedules()  # each slot once, however many hosts run this at once
        executor = Executor(self, self.node_id)
        liveness = Liveness(
            NodeStore(self.store),
            self.node_id,
            lease_seconds=self.settings.lease_seconds,
            heartbeat_seconds=self.settings.heartbeat_seconds,
            on_tick=self.store.maintain,  # a cron-only host resets SQLite's WAL here
        )
        liveness.start()
        done = 0
        try:
            with executor_module.ctrl_c_stops_the_batch():
                while done < batch_size:
                    claimed = self.store.claim(self.node_id, identifiers, 1)
                    if not claimed:
                        break
                    try:
                        executor.run(claimed[0])
                    except KeyboardInterrupt:  # the person's Ctrl-C, not the task's own
                        NodeStore(self.store).release(
                            [claimed[0].claim], "Released: run-pending was interrupted"
                        )
                        raise
                    done += 1
        finally:
            liveness.stop()
        liveness.tick()  # once per batch too, however short (failures are logged)
        return done

    # -- queues (stask.db.queues: pauses and limits every runner obeys) ------------------------

    def queues(self) -> builtins.list[QueueInfo]:
        """Every known queue (with controls, pending or running tasks): its state and counts."""
        return QueueStore(self.store).overview()

    def queue(self, name: str) -> QueueInfo:
        """One queue's state and counts; a queue nobody used yet shows as empty and active."""
        (info,) = QueueStore(self.store).overview([check_queue_name(name)])
        return info

    def pause_queue(self, name: str, until: dt.datetime | None = None) -> QueueInfo:
        """Stop every runner claiming from ``name`` until resumed, or until ``until`` if given
        (a naive datetime is UTC). Running tasks finish; runners see it within about a second."""
        name = check_queue_name(name)
        moment = check_until(until)
        QueueStore(self.store).change(name, {"paused": moment is None, "paused_until": moment})
        return self.queue(name)

    def resume_queue(self, name: str) -> QueueInfo:
        """Let runners claim from ``name`` again (a no-op for a queue that is not paused)."""
        name = check_queue_name(name)
        QueueStore(self.store).change(name, {"paused": False, "paused_until": None}, create=False)
        self._wake_local_runners()
        return self.queue(name)

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
        name = check_queue_name(name)
        values = check_limits(concurrency, rate, period_seconds)
        QueueStore(self.store).change(
            name, values, create=any(v is not None for v in values.values())
        )
        self._wake_local_runners()
        return self.queue(name)

    def _wake_local_runners(self) -> None:
        """A queue may have room now: a runner in this process claims without waiting for its
        poll (runners elsewhere see the change within their control cache period)."""
        for callback in self._enqueue_callbacks:
            callback()

    # -- housekeeping --------------------------------------------------------------------------

    def clean_old_tasks(self, days: int = 30) -> int:
        """Delete finished tasks older than ``days`` with their logs and files."""
        removed = self.store.delete_finished_before(_days_ago(days))
        for task_id in removed:
            shutil.rmtree(self.settings.storage / "tasks" / str(task_id), ignore_errors=True)
        return len(removed)

    def clean_old_logs(self, days: int = 30) -> int:
        return self.store.delete_logs_before(_days_ago(days))

    def clean_old_files(self, days: int = 30) -> int:
        """Remove task folders older than ``days`` whose task no longer exists."""
        root = self.settings.storage / "tasks"
        if not root.is_dir():
            return 0
        cutoff = time.time() - days * 86400
        candidates = {
            int(path.name): path
            for path in root.iterdir()
            if path.is_dir() and path.name.isdigit() and path.stat().st_mtime < cutoff
        }
        existing = self.store.existing_task_ids(list(candidates))
        for task_id, path in candidates.items():
            if task_id not in existing:
                shutil.rmtree(path, ignore_errors=True)
        return len(set(candidates) - existing)

    # -- logs (the seed's log API) -------------------------------------------------------------

    def log(self, task_id: int, level: str, message: str, **context: Any) -> None:
        """Add a line to an existing task's log (TaskNotFound, and nothing written, if there
        is no such task)."""
        check_task_id(task_id)
        if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
            raise ValidationError(
                f"unknown log level {level!r} - use one of {', '.join(LOG_LEVELS)}"
            )
        level = level.lower()
        if not isinstance(message, str):
            raise ValidationError(
                f"a log message must be a string, got {type(message).__name__} {message!r}"
            )
        for key, value in context.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise ValidationError(
                    f"log context {key!r} is not JSON ({type(value).__name__}: {err})"
                ) from err
        # Checked, then inserted: a task deleted in between leaves a line clean_old_logs removes.
        if not self.store.existing_task_ids([task_id]):
            raise TaskNotFound(f"no task has id {task_id}; nothing was logged")
        self.store.insert_logs(
            [
                {
                    "task_id": task_id,
                    "ts": utcnow(),
                    "level": level,
                    "message": message,
                    "context": context or None,
                }
            ]
        )

    def get_logs(self, task_id: int, *, after_id: int | None = None) -> builtins.list[LogEntry]:
        check_task_id(task_id)
        if after_id is not None:
            _check_count("after_id", after_id)
        return self.store.get_logs(task_id, after_id=after_id)

    def get_last_logs(self, task_id: int, count: int = 10) -> builtins.list[LogEntry]:
        check_task_id(task_id)
        return self.store.get_logs(task_id, last=_check_count("count", count))

    def get_error_logs(self, task_id: int) -> builtins.list[LogEntry]:
        check_task_id(task_id)
        return self.store.get_logs(task_id, levels=("error", "critical"))

    def clear_logs(self, task_id: int) -> int:
        check_task_id(task_id)
        return self.store.delete_task_logs(task_id)

    # -- schedules (stask.core.schedules) ------------------------------------------------------

    def schedule(self, identifier: str) -> schedules.Schedule:
        """The worker's schedule from its settings; manual when it has none."""
        return schedules.parse_schedule(self.get_config(identifier, schedules.SCHEDULE_KEY))

    def set_schedule(
        self,
        identifier: str,
        schedule: Mapping[str, Any] | schedules.Schedule,
        *,
        now: dt.datetime | None = None,
    ) -> schedules.Schedule:
        """Validate and store a worker's schedule; it fires for slots after ``now`` only, so a
        ``once`` at or before ``now`` is refused (ValidationError): it could never fire."""
        parsed = schedules.parse_schedule(schedule, strict=True)
        info = self.worker(identifier)
        moment = to_utc_naive(now) if now is not None else utcnow()
        if parsed.type != "manual":
            action = schedules.resolve_action(parsed, info.actions, identifier)
            schedules.slot_key(identifier, action, moment)  # refuses names too long for a key
        if isinstance(parsed, schedules.Once) and not schedules.next_runs(parsed, moment, 1):
            raise ValidationError(
                f"schedule of {identifier}: {parsed.when()} ({parsed.timezone}) has already "
                "passed, so it would never fire - give a later time (a once schedule fires "
                "only for a time after it is set)"
            )
        since = schedules.stamp(moment)
        self.update_config(
            identifier,
            {schedules.SCHEDULE_KEY: parsed.to_dict(), f"{schedules.STATE_KEY}.since": since},
        )
        return parsed

    def enqueue_due_schedules(self, now: dt.datetime | None = None) -> builtins.list[int]:
        """Create the task of each active worker's latest due schedule slot; the ids created.

        Any number of runners may call this at once: each slot's task is created exactly once,
        and slots missed while no runner was up fire once, as the latest of them.
        """
        moment = to_utc_naive(now) if now is not None else utcnow()
        created: builtins.list[int] = []
        for info in self.workers(active_only=True):
            if self.registry.get(info.identifier) is None:
                continue  # another host's worker: its runners fire it
            try:
                created.extend(self._fire_schedule(info, moment))
            except Exception as err:  # one broken schedule or worker must not stop the others
                reason = (
                    err.message if isinstance(err, StaskError) else f"{type(err).__name__}: {err}"
                )
                log.warning("schedule of worker %s skipped: %s", info.identifier, reason)
        return created

    def _fire_schedule(self, info: WorkerInfo, now: dt.datetime) -> builtins.list[int]:
        schedule = schedules.parse_schedule(info.settings.get(schedules.SCHEDULE_KEY))
        state = info.settings.get(schedules.STATE_KEY)
        if not schedule.fires or not schedules.due_slot(schedule, state, now).changed:
            return []  # the common case, decided without a lock
        action = schedules.resolve_action(schedule, info.actions, info.identifier)
        template = self._new_task(
            info.identifier, action, schedule.options, started_by=SCHEDULED_BY
        )
        fired: builtins.list[schedules.Due] = []

        def plan(stored: JSONDict) -> tuple[JSONDict | None, builtins.list[NewTask]]:
            # Decided again under the worker's lock: another runner may have fired meanwhile.
            due = schedules.due_slot(schedule, stored.get(schedules.STATE_KEY), now)
            if not due.changed:
                return None, []
            new = []
            if due.slot is not None:
                fired.append(due)
                key = schedules.slot_key(info.identifier, action, due.slot)
                new.append(dataclasses.replace(template, run_at=due.slot, unique_key=key))
            return {**stored, schedules.STATE_KEY: due.state}, new

        ids = self.store.change_worker_settings_with_tasks(info.identifier, plan) or []
        for task_id, due in zip(ids, fired, strict=False):
            assert due.slot is not None
            local = schedules.local_time(schedule, due.slot)
            missed = "; earlier missed runs were skipped" if due.skipped else ""
            self.log(task_id, "info", f"Scheduled run for {local:%Y-%m-%d %H:%M %Z}{missed}")
        return ids


def _worker_defaults(app: Stask, cls: type[BaseWorker]) -> JSONDict:
    """A worker's default settings; {} (logged) when its ``__init__`` or ``settings()`` raise,
    so one broken worker does not break listing the others or firing their schedules."""
    try:
        defaults = cls(app).settings()
    except Exception as err:
        log.warning(
            "worker %s: its settings() failed: %s: %s", cls.__name__, type(err).__name__, err
        )
        return {}
    return dict(defaults) if isinstance(defaults, Mapping) else {}


def _positive_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _days_ago(days: int) -> dt.datetime:
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ValidationError(f"days must be a non-negative integer, got {days!r}")
    return utcnow() - dt.timedelta(days=days)
