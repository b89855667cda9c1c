"""Running one claimed task: call its action, turn what happened into a fenced outcome."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import inspect
import logging
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stask.core.context import LeaseLost, TaskCancelled, TaskContext
from stask.core.isolation import run_coroutine, run_in_child
from stask.core.values import Limits, storable_text
from stask.core.worker import BaseWorker
from stask.db.store import Store
from stask.errors import (
    DatabaseConflict,
    DatabaseError,
    DatabaseUnavailable,
    Retry,
    SchemaMissing,
    StaskError,
)
from stask.models import Claim, JSONDict, Outcome, Status, Task, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask

log = logging.getLogger("stask.executor")
ERROR_MESSAGE_LIMIT = 500


# Set while a Ctrl-C of the person running `stask run-pending` is being delivered: that
# KeyboardInterrupt stops the batch; one that task code raises is that attempt's failure.
INTERRUPTED = threading.Event()


@contextlib.contextmanager
def ctrl_c_stops_the_batch() -> Iterator[None]:
    """While a batch runs tasks in this (main) thread, a KeyboardInterrupt that a task raises
    is that task's failure; one from Ctrl-C (SIGINT) is marked so, and stops the batch."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum: int, frame: Any) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        INTERRUPTED.clear()


class StoreSink:
    """Progress and logs of running attempts, written through the store, fenced by claim."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # A failed snapshot or cancel check must not fail the task: the database may be back by the
    # next checkpoint, and the final state is recorded (with retries) by whoever records outcomes.
    def save_progress(self, claim: Claim, values: Mapping[str, Any]) -> bool | None:
        try:
            return self.store.claims.save_progress(claim, values)
        except DatabaseError as err:
            log.warning("task %s: progress not saved: %s", claim.id, err)
            return False

    def cancel_requested(self, claim: Claim) -> bool | None:
        try:
            return self.store.claims.cancel_flag(claim)
        except DatabaseError as err:
            log.warning("task %s: cancellation not checked: %s", claim.id, err)
            return False

    def write_logs(self, entries: list[JSONDict]) -> None:
        self.store.claims.insert_attempt_logs(entries)


# The process's peak RSS as last read: (monotonic time of the read, bytes).
_PEAK_READ: list[tuple[float, int]] = [(float("-inf"), 0)]
# A read this recent serves an attempt that began before it: getrusage holds the GIL, and a
# drain of short tasks spent a tenth of its Python time in it.
PEAK_FRESH_SECONDS = 0.01


def _peak_rss_bytes(began: float | None = None) -> int:
    """The peak RSS of this process so far (the attempt's ``peak_memory``): read again unless
    the last read is within ``PEAK_FRESH_SECONDS`` and after ``began``."""
    now = time.monotonic()
    at, peak = _PEAK_READ[0]
    if began is not None and began <= at and now - at <= PEAK_FRESH_SECONDS:
        return peak
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = int(usage if sys.platform == "darwin" else usage * 1024)
    _PEAK_READ[0] = (now, peak)
    return peak


def _error_line(exc: BaseException) -> str:
    try:
        text = f"{type(exc).__name__}: {exc}".strip()
    except Exception:  # an exception whose __str__ raises
        text = type(exc).__name__
    return storable_text(text, ERROR_MESSAGE_LIMIT)


def _traceback(exc: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:  # a pathological exception (its __str__ raises, a huge chain)
        text = _error_line(exc)
    return storable_text(text)


@dataclass(frozen=True, slots=True)
class Finished:
    """An attempt that ended, waiting to be recorded (possibly in a batch with others)."""

    task: Task
    outcome: Outcome
    logs: list[JSONDict]


class Executor:
    """Runs claimed tasks of one node in the calling thread."""

    def __init__(self, app: Stask, node_id: str, store: Store | None = None) -> None:
        self.app = app
        self.node_id = node_id
        # Starts, progress and logs go through ``store`` (a runner's own hot-path pool).
        self.store = store or app.store
        self.sink = StoreSink(self.store)
        self.limits = Limits.of(app.settings)

    def run(self, task: Task) -> Status | None:
        """Run one claimed task and record it; None if it was lost (cancelled before its start,
        rescued elsewhere). Whatever the task does, this returns (database errors aside)."""
        begun = self.begin(task)
        finished = self.execute(begun) if begun is not None else None
        if finished is None:
            return None
        try:
            accepted = self.app.store.claims.finish_many(
                [(task.claim, finished.outcome)], finished.logs
            )
        except Exception as exc:
            if not refused_value(exc):  # the database is away or busy: the caller's to handle
                raise
            # A value the database refused: record why instead, without the values.
            log.warning("task %s: could not record its outcome: %s", task.id, _error_line(exc))
            accepted = self.app.store.claims.finish_many([(task.claim, unrecordable(exc))])
        if task.id not in accepted:
            log.warning("task %s: finish refused, its claim no longer holds it", task.id)
            return None
        return finished.outcome.status

    def begin(self, task: Task) -> Task | None:
        """The task as its attempt starts: a prefetched one is started now (its attempt counted,
        its real start recorded). None: its claim lost it meanwhile (cancelled, rescued)."""
        if task.started_at is not None:
            return task
        now = utcnow()
        attempts = self.store.claims.start_attempt(task.claim, now)
        if attempts is None:
            return None
        return dataclasses.replace(task, attempts=attempts, started_at=now)

    def execute(
        self, task: Task, on_start: Callable[[TaskContext], None] | None = None
    ) -> Finished | None:
        """Run one started task to its outcome without recording it (the caller batches that).

        None when the task was lost while running (rescued elsewhere or released at shutdown).
        Anything else that goes wrong, in the task's code or in stask's around it, is the
        attempt's failure with its real reason.
        """
        started = time.monotonic()
        context = TaskContext(
            task,
            self.sink,
            self.app.settings.storage,
            timeout=task.timeout_seconds,
            limits=self.limits,
        )
        if on_start is not None:
            on_start(context)
        try:
            outcome = self._attempt(task, context)
        except LeaseLost:
            log.warning("task %s: lost to another node while running", task.id)
            return None
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt) and INTERRUPTED.is_set():
                raise
            log.warning("task %s: stask failed around it: %s", task.id, _error_line(exc))
            outcome = Outcome(Status.FAILED, message=_error_line(exc), error=_traceback(exc))
        return self._finished(task, context, outcome, started)

    def _attempt(self, task: Task, context: TaskContext) -> Outcome:
        if task.expires_at is not None and utcnow() > task.expires_at:
            return Outcome(
                Status.CANCELLED,
                message=f"Expired: not started before its deadline "
                f"{task.expires_at.isoformat(timespec='seconds')} UTC",
            )
        try:
            worker = self.app.worker_instance(task.identifier)
            method = worker.resolve_action(task.action) if worker else None
        except Exception as exc:  # the worker's __init__ (user code) raised
            failed = WorkerUnavailable(
                f"worker {task.identifier!r} could not be created: {_error_line(exc)}"
            )
            failed.__cause__ = exc
            return Outcome(Status.FAILED, message=_error_line(failed), error=_traceback(exc))
        if worker is None or method is None:
            return Outcome(
                Status.FAILED,
                message=f"worker {task.identifier!r} or its action {task.action!r} is not "
                "available in this process",
            )
        context.bind_worker(worker.get_config, task.timeout_seconds or worker.timeout)
        if worker.isolation == "process":
            return run_in_child(self, task, context, worker)
        return self.call_action(method, context, task, worker)

    def _finished(
        self, task: Task, context: TaskContext, outcome: Outcome, started: float
    ) -> Finished:
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
            peak_memory=_peak_rss_bytes(started),
            retry_at=outcome.retry_at,
            snooze=outcome.snooze,
        )
        logs = context.pending_logs()
        if outcome.error and outcome.status in (Status.FAILED, Status.PENDING):
            logs.append(
                context.log_entry(
                    "error",
                    outcome.message or "failed",
                    {"attempt": task.attempts, "traceback": outcome.error},
                )
            )
        return Finished(task, final, logs)

    def call_action(
        self, method: Any, context: TaskContext, task: Task, worker: BaseWorker
    ) -> Outcome:
        """Call the action in this thread (async ones on the event loop thread).

        Whatever it raises, BaseException included, is this attempt's outcome; only losing the
        task (LeaseLost) and the runner's own Ctrl-C go through."""
        try:
            returned = method(context, dict(task.options))
            if inspect.iscoroutine(returned):
                returned = run_coroutine(returned)
        except LeaseLost:
            raise
        except TaskCancelled:
            return Outcome(Status.CANCELLED, message="Cancelled while running")
        except Retry as snooze:
            return self.snoozed(task, snooze)
        except KeyboardInterrupt as exc:
            if INTERRUPTED.is_set():
                raise
            return self.failure(worker, task, exc)
        except BaseException as exc:  # SystemExit, RecursionError, MemoryError, ... too
            return self.failure(worker, task, exc)
        return self._success(context, returned)

    def snoozed(self, task: Task, snooze: Retry) -> Outcome:
        """``raise Retry(after=...)``: run again later as a new attempt, without using up the
        failure budget, at most ``settings.max_runs`` runs in all."""
        cap = self.app.settings.max_runs
        if task.attempts >= cap:
            return Outcome(
                Status.FAILED,
                message=f"Snoozed until it had run {task.attempts} times, the most one task may "
                "run (the setting max_runs)",
            )
        after = snooze.after if snooze.after == snooze.after else 0.0  # NaN: now
        when = utcnow() + dt.timedelta(seconds=min(max(0.0, after), MAX_SNOOZE_SECONDS))
        message = storable_text(str(snooze), ERROR_MESSAGE_LIMIT)
        return Outcome(Status.PENDING, message=message, retry_at=when, snooze=True)

    def failure(self, worker: BaseWorker, task: Task, exc: BaseException) -> Outcome:
        """A failed attempt: retry after backoff while attempts remain, else fail."""
        trace = _traceback(exc)
        line = _error_line(exc)
        # settings.max_runs bounds every task, whatever max_attempts it was given.
        if task.attempts < min(task.max_attempts, self.app.settings.max_runs):
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
            text = storable_text(err.message)
            return Outcome(Status.FAILED, message=storable_text(text, 2000), error=text)
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
        self.limits.result_json(result)
        return result


class WorkerUnavailable(StaskError):
    """The worker could not be created in this process."""


# A snooze longer than this is taken as this (a year): the datetime arithmetic stays in range.
MAX_SNOOZE_SECONDS = 366 * 86400.0


def refused_value(err: Exception) -> bool:
    """Whether recording failed on what was recorded (a value the database refused, a bug),
    not on the database being away or busy: recording the same outcome again would fail
    again, so it is replaced by ``unrecordable``."""
    if not isinstance(err, StaskError):
        return True
    return isinstance(err, DatabaseError) and not isinstance(
        err, DatabaseUnavailable | DatabaseConflict | SchemaMissing
    )


def unrecordable(exc: BaseException) -> Outcome:
    """The outcome that replaces one stask could not write (its values), saying why."""
    return Outcome(
        Status.FAILED,
        message=f"stask could not record this task's outcome: {_error_line(exc)}",
        error=_traceback(exc),
    )
