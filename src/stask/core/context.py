"""What an action receives: the task's identity and options, progress, logs and cancellation."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stask.core.values import Limits, check_json
from stask.errors import DatabaseError, ValidationError
from stask.models import LOG_LEVELS, Claim, JSONDict, Task, utcnow

# Progress snapshots reach the database at most this often per task (the final state always does).
PROGRESS_INTERVAL_SECONDS = 0.25
CANCEL_CHECK_INTERVAL_SECONDS = 0.5
_KEEP_RETURNED: Any = object()  # mark_finished without result= keeps the return value


class TaskCancelled(BaseException):
    """The task was cancelled while it ran.

    A BaseException, so an action's own ``except Exception`` cannot swallow the cancellation.
    """


class LeaseLost(BaseException):
    """This process no longer holds the task (it was rescued or finished elsewhere)."""


class TaskTimedOut(BaseException):
    """The attempt ran past its worker's timeout (checked at progress() / check_cancelled())."""


class ProgressSink(Protocol):
    """Where a context sends its snapshots and logs, fenced by the attempt's claim; the
    executor provides it."""

    def save_progress(self, claim: Claim, values: Mapping[str, Any]) -> bool | None: ...

    def cancel_requested(self, claim: Claim) -> bool | None: ...

    def write_logs(self, entries: list[JSONDict]) -> None: ...


@dataclass
class Snapshot:
    """The latest progress a task reported, and what was last written."""

    percent: int = 0
    processed: int = 0
    total: int = 0
    eta_seconds: int | None = None
    message: str | None = None
    written: tuple[int, int, int, str | None] = (0, 0, 0, None)
    written_at: float = 0.0
    baseline: tuple[float, float] | None = None  # (monotonic time, fraction done) of first report

    def values(self) -> JSONDict:
        return {
            "progress": self.percent,
            "processed": self.processed,
            "total": self.total,
            "eta_seconds": self.eta_seconds,
            "message": self.message,
        }

    @property
    def dirty(self) -> bool:
        return (self.percent, self.processed, self.total, self.message) != self.written


@dataclass
class Outcome:
    """What the action asked for with mark_finished / mark_failed."""

    kind: str | None = None  # "finished" | "failed"
    message: str | None = None
    result: Any = None
    has_result: bool = False
    logs: list[JSONDict] = field(default_factory=list)


class TaskContext:
    """Handed to ``task_<action>(self, task, options)``; one per attempt."""

    def __init__(
        self,
        task: Task,
        sink: ProgressSink,
        storage: Path,
        config: Callable[[str | None, Any], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.task = task
        self._claim = task.claim
        self._limits = limits or Limits()
        self._sink = sink
        self._storage = storage
        self._config = config
        self._clock = clock
        self._started = clock()
        self._snapshot = Snapshot(percent=task.progress, processed=task.processed, total=task.total)
        self._snapshot.written = (task.progress, task.processed, task.total, task.message)
        self._snapshot.message = task.message
        self._last_cancel_check = self._started
        self._logs_flushed_at = self._started
        self.timeout = timeout
        self._deadline = self._started + timeout if timeout else None
        self._abandoned = False
        self.outcome = Outcome()

    # -- identity ------------------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.task.id

    @property
    def options(self) -> JSONDict:
        return self.task.options

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, ..."""
        return self.task.attempts

    @property
    def max_attempts(self) -> int:
        return self.task.max_attempts

    @property
    def identifier(self) -> str:
        return self.task.identifier

    @property
    def action(self) -> str:
        return self.task.action

    # -- progress ------------------------------------------------------------------------------

    @property
    def percent(self) -> int:
        return self._snapshot.percent

    @property
    def processed(self) -> int:
        return self._snapshot.processed

    @property
    def total(self) -> int:
        return self._snapshot.total

    @property
    def eta_seconds(self) -> int | None:
        return self._estimate_eta(self._clock())

    @property
    def message(self) -> str | None:
        return self._snapshot.message

    def progress(
        self,
        processed: int | None = None,
        total: int | None = None,
        percent: int | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress; percent is computed from processed/total unless given (0-100).

        Cheap enough for a tight loop: the database sees at most a few snapshots per second.
        This is also where a cancellation requested by an operator stops the task.
        """
        snap = self._snapshot
        if total is not None:
            snap.total = total if type(total) is int and total >= 0 else _count("total", total)
        if processed is not None:
            snap.processed = (
                processed
                if type(processed) is int and processed >= 0
                else _count("processed", processed)
            )
        if percent is not None:
            if type(percent) is not int or not 0 <= percent <= 100:
                raise ValidationError(f"percent must be an integer 0-100, got {percent!r}")
            snap.percent = percent
        elif snap.total > 0:
            snap.percent = min(100, snap.processed * 100 // snap.total)
        if message is not None:
            snap.message = self._limits.message_text(message, "the progress message")
        now = self._clock()
        if self._deadline is not None or self._abandoned:
            self._check_limits(now)
        if snap.baseline is None:  # the ETA's rate is measured from the first report
            snap.baseline = (now, self._fraction())
        # The cheap comparison first: most calls in a tight loop end here.
        if now - snap.written_at < PROGRESS_INTERVAL_SECONDS:
            return
        if snap.dirty:
            self._write_snapshot(now)
        elif now - self._last_cancel_check >= CANCEL_CHECK_INTERVAL_SECONDS:
            self.check_cancelled()

    def _fraction(self) -> float:
        snap = self._snapshot
        if snap.total > 0:
            return min(1.0, snap.processed / snap.total)
        return snap.percent / 100

    def _estimate_eta(self, now: float) -> int | None:
        """Seconds left at the rate observed since the first report of this attempt."""
        done = self._fraction()
        snap = self._snapshot
        if done >= 1.0:
            return 0
        if snap.baseline is None:
            return None
        since, done_then = snap.baseline
        elapsed = now - since
        gained = done - done_then
        if gained <= 0 or elapsed <= 0:
            return None
        return round((1.0 - done) * elapsed / gained)

    def _write_snapshot(self, now: float) -> None:
        snap = self._snapshot
        snap.eta_seconds = self._estimate_eta(now)
        flag = self._sink.save_progress(self._claim, snap.values())
        snap.written = (snap.percent, snap.processed, snap.total, snap.message)
        snap.written_at = now
        self._last_cancel_check = now
        self._flush_logs()
        self._react(flag)

    def bind_worker(
        self, config: Callable[[str | None, Any], Any] | None, timeout: float | None
    ) -> None:
        """Attach the worker's config and its timeout, once its instance exists."""
        self._config = config
        self.timeout = timeout
        self._deadline = self._started + timeout if timeout else None

    def abandon(self) -> None:
        """This process gave the task up (shutdown): stop at the next checkpoint, record nothing."""
        self._abandoned = True

    def _check_limits(self, now: float) -> None:
        if self._abandoned:
            raise LeaseLost(f"task {self.id} was released by this process")
        if self._deadline is not None and now > self._deadline:
            raise TaskTimedOut(f"timed out after {self.timeout:g} s")

    def _react(self, cancel_flag: bool | None) -> None:
        if cancel_flag is None:
            raise LeaseLost(f"task {self.id} is no longer held by this process")
        if cancel_flag:
            raise TaskCancelled(f"task {self.id} was cancelled")

    def check_cancelled(self) -> None:
        """Stop here (raise) if an operator cancelled the task; cheap to call often."""
        now = self._clock()
        self._check_limits(now)
        if now - self._last_cancel_check < CANCEL_CHECK_INTERVAL_SECONDS:
            return
        self._last_cancel_check = now
        self._flush_logs()
        self._react(self._sink.cancel_requested(self._claim))

    def final_snapshot(self) -> Snapshot:
        return self._snapshot

    def absorb(self, snapshot: Snapshot, logs: list[JSONDict]) -> None:
        """Take over the progress and unwritten logs of the same attempt run elsewhere."""
        self._snapshot = snapshot
        self.outcome.logs.extend(logs)

    # -- logs ----------------------------------------------------------------------------------

    def log(self, level: str, message: str, **context: Any) -> None:
        """Add a line to the task's log (``level``: debug, info, warning, error, critical)."""
        if not isinstance(level, str) or level.lower() not in LOG_LEVELS:
            raise ValidationError(
                f"unknown log level {level!r} - use one of {', '.join(LOG_LEVELS)}"
            )
        text = self._limits.message_text(message, "the log line")
        if context:
            # Checked here, so a mistake fails this call and not the runner's batched write.
            check_json(
                context, "the log line's context", self._limits.log_context, "max_log_context_bytes"
            )
        self.outcome.logs.append(self.log_entry(level.lower(), text, context or None))
        # Lines go out with the next snapshot, or on their own at most every interval.
        if self._clock() - self._logs_flushed_at >= PROGRESS_INTERVAL_SECONDS:
            self._flush_logs()

    def log_entry(self, level: str, message: str, context: JSONDict | None) -> JSONDict:
        """A log line of this attempt, fenced by its claim when written."""
        return {
            "task_id": self.id,
            "token": self._claim.token,
            "ts": utcnow(),
            "level": level,
            "message": message,
            "context": context,
        }

    def info(self, message: str, **context: Any) -> None:
        self.log("info", message, **context)

    def warning(self, message: str, **context: Any) -> None:
        self.log("warning", message, **context)

    def error(self, message: str, **context: Any) -> None:
        self.log("error", message, **context)

    def _flush_logs(self) -> None:
        self._logs_flushed_at = self._clock()
        if self.outcome.logs:
            entries, self.outcome.logs = self.outcome.logs, []
            try:
                self._sink.write_logs(entries)
            except DatabaseError:  # kept for the next flush or the final record
                self.outcome.logs[:0] = entries

    def pending_logs(self) -> list[JSONDict]:
        entries, self.outcome.logs = self.outcome.logs, []
        return entries

    # -- ending --------------------------------------------------------------------------------

    def mark_finished(self, message: str | None = None, result: Any = _KEEP_RETURNED) -> None:
        """Complete the task when the action returns; ``result`` (JSON) replaces what it returns."""
        text = None if message is None else self._limits.message_text(message)
        if result is not _KEEP_RETURNED and not isinstance(result, Path):
            self._limits.result_json(result)
        self.outcome.kind = "finished"
        self.outcome.message = text
        if result is not _KEEP_RETURNED:
            self.outcome.result = result
            self.outcome.has_result = True

    def mark_failed(self, message: str) -> None:
        """Fail the task when the action returns, without retrying it."""
        self.outcome.kind = "failed"
        self.outcome.message = self._limits.message_text(message)

    # -- files and config ----------------------------------------------------------------------

    def storage_path(self, filename: str | None = None) -> Path:
        """This task's folder under storage (created), or a file in it."""
        folder = self._storage / "tasks" / str(self.id)
        folder.mkdir(parents=True, exist_ok=True)
        if filename is None:
            return folder
        target = (folder / filename).resolve()
        if folder.resolve() not in target.parents:
            raise ValidationError(f"file name {filename!r} leaves the task's storage folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def config(self, key: str | None = None, default: Any = None) -> Any:
        """The worker's settings (dot notation), as ``worker.get_config``."""
        if self._config is None:
            return default
        return self._config(key, default)


def _count(name: str, value: object) -> int:
    """The slow path of progress()'s check: a clear error, or an int subclass accepted."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)
