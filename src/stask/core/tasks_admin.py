"""Tasks as operators see them: reading and counting, cancel / retry / delete, result files,
the log API (``log``, ``get_logs``, ...) and cleaning old tasks, logs and files."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stask.core.worker import normalize_action
from stask.errors import InvalidState, ResultNotFound, TaskNotFound, ValidationError
from stask.models import LOG_LEVELS, LogEntry, Status, Task, TaskFilter, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask

MAX_TASK_ID = 2**63 - 1  # s_tasks.id is a signed 64-bit integer on every database
StatusFilter = str | Status | Sequence[str | Status] | None


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


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TASK_ID:
        raise ValidationError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _days_ago(days: int) -> dt.datetime:
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ValidationError(f"days must be a non-negative integer, got {days!r}")
    return utcnow() - dt.timedelta(days=days)


def _task_folder(app: Stask, task_id: int) -> Path:
    return app.settings.storage / "tasks" / str(task_id)


# -- reading -----------------------------------------------------------------------------------


def get(app: Stask, task_id: int) -> Task:
    task = app.store.task_reads.get_task(check_task_id(task_id))
    if task is None:
        raise TaskNotFound(f"no task has id {task_id}")
    return task


def task_filter(
    status: StatusFilter, worker: str | None, action: str | None, queue: str | None
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


def list_tasks(
    app: Stask, where: TaskFilter, limit: int, offset: int, before_id: int | None
) -> list[Task]:
    if limit < 1 or limit > 10_000 or offset < 0:
        raise ValidationError("limit must be 1-10000 and offset >= 0")
    return app.store.task_reads.list_tasks(where, limit=limit, offset=offset, before_id=before_id)


def count(app: Stask, where: TaskFilter) -> int:
    return app.store.task_reads.count_tasks(where)


def stats(app: Stask, worker: str | None) -> dict[str, int]:
    """Task counts per status and in total (the seed's ``getStats``)."""
    where = TaskFilter(identifier=worker) if worker else None
    by_status = app.store.task_reads.count_by_status(where)
    counts = {status.value: n for status, n in by_status.items()}
    counts["total"] = sum(counts.values())
    return counts


def count_by_worker(app: Stask) -> dict[str, int]:
    return app.store.task_reads.count_by_worker()


def result_file(app: Stask, task_id: int) -> Path:
    """The downloadable file a task produced."""
    check_task_id(task_id)
    task = get(app, task_id)
    relative = task.result_file
    if relative is None:
        raise ResultNotFound(f"task {task_id} has no result file")
    try:  # a NUL byte, or a name the OS refuses, is no file of ours either
        path = (app.settings.storage / relative).resolve()
        inside = app.settings.storage.resolve() in path.parents and path.is_file()
    except (ValueError, OSError):
        inside = False
    if not inside:
        raise ResultNotFound(f"the result file of task {task_id} ({relative}) is gone")
    return path


# -- changing ----------------------------------------------------------------------------------


def cancel(app: Stask, task_id: int) -> Task:
    """Cancel a pending task now; ask a running one to stop at its next progress()."""
    check_task_id(task_id)
    found = app.store.actions.cancel(task_id, "Cancelled before it started")
    if found is None:
        raise TaskNotFound(f"no task has id {task_id}")
    before, ended = found
    if before.is_final:
        raise InvalidState(f"task {task_id} is already {before.value}; nothing to cancel")
    # A task a runner holds but has not started yet (prefetched) ends at once, like a
    # pending one: its runner's start is fenced and finds it gone.
    message = "Cancelled before it started" if ended else "Cancellation requested"
    log(app, task_id, "warning", message)
    return get(app, task_id)


def retry(app: Stask, task_id: int) -> Task:
    """Queue a failed or cancelled task again."""
    check_task_id(task_id)
    before = app.store.actions.requeue_finished(task_id)
    if before is None:
        raise TaskNotFound(f"no task has id {task_id}")
    if before not in (Status.FAILED, Status.CANCELLED):
        raise InvalidState(
            f"task {task_id} is {before.value}; only failed or cancelled tasks can be retried"
        )
    log(app, task_id, "info", "Queued again by an operator")
    return get(app, task_id)


def delete(app: Stask, task_id: int) -> None:
    """Delete a task that is not running, with its logs and files."""
    check_task_id(task_id)
    before = app.store.actions.delete_task(task_id)
    if before is None:
        raise TaskNotFound(f"no task has id {task_id}")
    if not (before is Status.PENDING or before.is_final):
        raise InvalidState(f"task {task_id} is {before.value} - cancel it first")
    shutil.rmtree(_task_folder(app, task_id), ignore_errors=True)


# -- housekeeping ------------------------------------------------------------------------------


def clean_old_tasks(app: Stask, days: int) -> int:
    """Delete finished tasks older than ``days`` with their logs and files."""
    removed = app.store.housekeeping.delete_finished_before(_days_ago(days))
    for task_id in removed:
        shutil.rmtree(_task_folder(app, task_id), ignore_errors=True)
    return len(removed)


def clean_old_logs(app: Stask, days: int) -> int:
    return app.store.housekeeping.delete_logs_before(_days_ago(days))


def clean_old_files(app: Stask, days: int) -> int:
    """Remove task folders older than ``days`` whose task no longer exists."""
    root = app.settings.storage / "tasks"
    if not root.is_dir():
        return 0
    cutoff = time.time() - days * 86400
    candidates = {
        int(path.name): path
        for path in root.iterdir()
        if path.is_dir() and path.name.isdigit() and path.stat().st_mtime < cutoff
    }
    existing = app.store.task_reads.existing_task_ids(list(candidates))
    for task_id, path in candidates.items():
        if task_id not in existing:
            shutil.rmtree(path, ignore_errors=True)
    return len(set(candidates) - existing)


# -- logs (the seed's log API) -----------------------------------------------------------------


def log(app: Stask, task_id: int, level: str, message: str, **context: Any) -> None:
    """Add a line to an existing task's log (TaskNotFound, and nothing written, if there is no
    such task)."""
    check_task_id(task_id)
    if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
        raise ValidationError(f"unknown log level {level!r} - use one of {', '.join(LOG_LEVELS)}")
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
    if not app.store.task_reads.existing_task_ids([task_id]):
        raise TaskNotFound(f"no task has id {task_id}; nothing was logged")
    entry = {
        "task_id": task_id,
        "ts": utcnow(),
        "level": level,
        "message": message,
        "context": context or None,
    }
    app.store.logs.insert_logs([entry])


def get_logs(
    app: Stask,
    task_id: int,
    *,
    after_id: int | None = None,
    last: int | None = None,
    levels: Sequence[str] | None = None,
) -> list[LogEntry]:
    check_task_id(task_id)
    if after_id is not None:
        _check_count("after_id", after_id)
    if last is not None:
        last = _check_count("count", last)
    return app.store.logs.get_logs(task_id, after_id=after_id, last=last, levels=levels)


def clear_logs(app: Stask, task_id: int) -> int:
    check_task_id(task_id)
    return app.store.logs.delete_task_logs(task_id)
