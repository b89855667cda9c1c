"""Running one claimed task: call its action, turn what happened into a fenced outcome."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import resource
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stask.core.context import LeaseLost, TaskCancelled, TaskContext, TaskTimedOut
from stask.core.isolation import run_coroutine, run_in_child
from stask.core.worker import BaseWorker
from stask.db.rows import Outcome
from stask.db.store import Store
from stask.errors import DatabaseError, Retry, StaskError
from stask.models import JSONDict, Status, Task, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask

log = logging.getLogger("stask.executor")
ERROR_MESSAGE_LIMIT = 500


class StoreSink:
    """Progress and logs of one node's tasks, written through the store and fenced by node."""

    def __init__(self, store: Store, node_id: str) -> None:
        self.store = store
        self.node_id = node_id

    # A failed snapshot or cancel check must not fail the task: the database may be back by the
    # next checkpoint, and the final state is recorded (with retries) by whoever records outcomes.
    def save_progress(self, task_id: int, values: Mapping[str, Any]) -> bool | None:
        try:
            return self.store.save_progress(task_id, self.node_id, values)
        except DatabaseError as err:
            log.warning("task %s: progress not saved: %s", task_id, err)
            return False

    def cancel_requested(self, task_id: int) -> bool | None:
        try:
            return self.store.cancel_flag(task_id, self.node_id)
        except DatabaseError as err:
            log.warning("task %s: cancellation not checked: %s", task_id, err)
            return False

    def write_logs(self, entries: list[JSONDict]) -> None:
        self.store.insert_logs(entries)


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _error_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= ERROR_MESSAGE_LIMIT else text[: ERROR_MESSAGE_LIMIT - 1] + "…"


@dataclass(frozen=True, slots=True)
class Finished:
    """An attempt that ended, waiting to be recorded (possibly in a batch with others)."""

    task: Task
    outcome: Outcome
    logs: list[JSONDict]


class Executor:
    """Runs claimed tasks of one node in the calling thread."""

    def __init__(self, app: Stask, node_id: str) -> None:
        self.app = app
        self.node_id = node_id
        self.sink = StoreSink(app.store, node_id)

    def run(self, task: Task) -> Status | None:
        """Run one claimed task and record it; None if another node took it over meanwhile."""
        finished = self.execute(task)
        if finished is None:
            return None
        if task.id not in self.app.store.finish_many(
            self.node_id, [(task.id, finished.outcome)], finished.logs
        ):
            log.warning("task %s: finish refused, another node holds it now", task.id)
            return None
        return finished.outcome.status

    def execute(
        self, task: Task, on_start: Callable[[TaskContext], None] | None = None
    ) -> Finished | None:
        """Run one claimed task to its outcome without recording it (the caller batches that).

        None when the task was lost while running (rescued elsewhere or released at shutdown).
        """
        started = time.monotonic()
        worker = self.app.worker_instance(task.identifier)
        method = worker.resolve_action(task.action) if worker else None
        context = TaskContext(
            task,
            self.sink,
            self.app.settings.storage,
            config=worker.get_config if worker else None,
            timeout=task.timeout_seconds or (worker.timeout if worker else None),
        )
        if on_start is not None:
            on_start(context)
        if task.expires_at is not None and utcnow() > task.expires_at:
            outcome = Outcome(
                Status.CANCELLED,
                message=f"Expired: not started before its deadline "
                f"{task.expires_at.isoformat(timespec='seconds')} UTC",
            )
        elif worker is None or method is None:
            outcome = Outcome(
                Status.FAILED,
                message=f"worker {task.identifier!r} or its action {task.action!r} is not "
                "available in this process",
            )
        else:
            try:
                if worker.isolation == "process":
                    outcome = run_in_child(self, task, context, worker)
                else:
                    outcome = self.call_action(method, context, task, worker)
            except LeaseLost:
                log.warning("task %s: lost to another node while running", task.id)
                return None
        snap = context.final_snapshot()
        final = Outcome(
            outcome.status,
            message=outcome.message,
            result=outcome.result,
            error=outcome.error,
            progress=100 if outcome.status is Status.COMPLETED else snap.percent,
            processed=snap.processed,
            total=snap.total,
            duration_ms=round((time.monotonic() - started) * 1000),
            peak_memory=_peak_rss_bytes(),
            retry_at=outcome.retry_at,
            refund_attempt=outcome.refund_attempt,
        )
        logs = context.pending_logs()
        if outcome.error and outcome.status in (Status.FAILED, Status.PENDING):
            logs.append(self._log_entry(task, "error", outcome.message or "failed", outcome.error))
        return Finished(task, final, logs)

    def _log_entry(self, task: Task, level: str, message: str, error: str) -> JSONDict:
        return {
            "task_id": task.id,
            "ts": utcnow(),
            "level": level,
            "message": message,
            "context": {"attempt": task.attempts, "traceback": error},
        }

    def call_action(
        self, method: Any, context: TaskContext, task: Task, worker: BaseWorker
    ) -> Outcome:
        """Call the action in this thread (async ones on the event loop thread)."""
        try:
            returned = method(context, dict(task.options))
            if inspect.iscoroutine(returned):
                returned = run_coroutine(returned)
        except TaskCancelled:
            return Outcome(Status.CANCELLED, message="Cancelled while running")
        except Retry as snooze:
            when = utcnow() + dt.timedelta(seconds=max(0.0, snooze.after))
            return Outcome(Status.PENDING, message=str(snooze), retry_at=when, refund_attempt=True)
        except TaskTimedOut as timed_out:
            return self.failure(worker, task, timed_out)
        except Exception as exc:
            return self.failure(worker, task, exc)
        return self._success(context, returned)

    def failure(self, worker: BaseWorker, task: Task, exc: BaseException) -> Outcome:
        """A failed attempt: retry after backoff while attempts remain, else fail."""
        trace = "".join(traceback.format_exception(exc))
        line = _error_line(exc)
        if task.attempts < task.max_attempts:
            delay = worker.backoff(task.attempts)
            return Outcome(
                Status.PENDING,
                message=f"Attempt {task.attempts} of {task.max_attempts} failed: {line}; "
                f"retrying in {delay:.0f} s",
                error=trace,
                retry_at=utcnow() + dt.timedelta(seconds=delay),
            )
        return Outcome(Status.FAILED, message=line, error=trace)

    def _success(self, context: TaskContext, returned: Any) -> Outcome:
        wanted = context.outcome
        if wanted.kind == "failed":
            return Outcome(Status.FAILED, message=wanted.message, error=wanted.message)
        result = wanted.result if wanted.has_result else returned
        try:
            stored = self._storable_result(result)
        except StaskError as err:
            return Outcome(Status.FAILED, message=err.message, error=err.message)
        return Outcome(Status.COMPLETED, message=wanted.message or context.message, result=stored)

    def _storable_result(self, result: Any) -> Any:
        """JSON as it is; a Path under storage becomes a downloadable file reference."""
        if isinstance(result, Path):
            root = self.app.settings.storage.resolve()
            path = result.resolve()
            if root not in path.parents or not path.is_file():
                raise StaskError(
                    f"result file {result} is not a file under storage {root} - write it to "
                    "task.storage_path(name)"
                )
            return {
                "file": str(path.relative_to(root)),
                "name": path.name,
                "size": path.stat().st_size,
            }
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise StaskError(
                f"the action returned a value that is not JSON ({err}) - return dicts, lists, "
                "strings, numbers, booleans or None, or a Path to a file under storage"
            ) from err
        return result
