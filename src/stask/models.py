"""Value objects: what crosses the layers (tasks, workers, logs, queues, outcomes, filters,
nodes) as frozen dataclasses, statuses and priorities as str enums."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from stask.errors import ValidationError

JSONDict = dict[str, Any]


class Status(enum.StrEnum):
    """Task life-cycle; the value is what every API speaks, ``code`` is what the database stores."""

    PENDING = "pending"
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def code(self) -> int:
        return _STATUS_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> Status:
        return _STATUS_BY_CODE[code]

    @classmethod
    def parse(cls, value: str | int | Status) -> Status:
        if isinstance(value, Status):
            return value
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            code = int(value)
            if code in _STATUS_BY_CODE:
                return _STATUS_BY_CODE[code]
        elif value.lower() in cls._value2member_map_:
            return cls(value.lower())
        names = ", ".join(s.value for s in cls)
        raise ValidationError(f"unknown status {value!r} - use one of: {names}")

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


_STATUS_CODES = {
    Status.PENDING: 10,
    Status.PREPARING: 30,
    Status.RUNNING: 50,
    Status.COMPLETED: 80,
    Status.CANCELLED: 90,
    Status.FAILED: 100,
}
_STATUS_BY_CODE = {code: status for status, code in _STATUS_CODES.items()}
FINAL_STATUSES = frozenset({Status.COMPLETED, Status.CANCELLED, Status.FAILED})


class Priority(enum.StrEnum):
    """Claim order: high before normal before low; ``weight`` is the stored, sortable number."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def weight(self) -> int:
        return _PRIORITY_WEIGHTS[self]

    @classmethod
    def from_weight(cls, weight: int) -> Priority:
        return _PRIORITY_BY_WEIGHT[weight]

    @classmethod
    def parse(cls, value: str | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, str) and value.lower() in cls._value2member_map_:
            return cls(value.lower())
        raise ValidationError(f"unknown priority {value!r} - use one of: high, normal, low")


_PRIORITY_WEIGHTS = {Priority.HIGH: 1, Priority.NORMAL: 5, Priority.LOW: 10}
_PRIORITY_BY_WEIGHT = {weight: p for p, weight in _PRIORITY_WEIGHTS.items()}


@dataclass(frozen=True, slots=True)
class Ahead:
    """What a turn may claim beyond the runner's free slots (runner/pace.py): of the due tasks
    in claim order, the first ``free`` whatever their action, then only tasks of the ``short``
    actions (``identifier:action`` keys). A runner never holds a long task another could run.
    """

    free: int
    short: tuple[str, ...]


class Claim(NamedTuple):
    """One claim of one task: the id and the token its claim wrote. Every write the attempt
    makes (start, progress, logs, outcome) is fenced by both, so a claim that was rescued,
    cancelled or claimed again elsewhere can no longer write."""

    id: int
    token: str


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=dt.UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Task:
    """One row of ``s_tasks``: what was asked, where it is, and how it ended."""

    id: int
    identifier: str
    action: str
    status: Status
    priority: Priority
    queue: str
    options: JSONDict
    result: Any
    progress: int
    processed: int
    total: int
    eta_seconds: int | None
    message: str | None
    error: str | None
    attempts: int
    max_attempts: int
    run_at: dt.datetime
    unique_key: str | None
    started_by: str | None
    locked_by: str | None
    locked_at: dt.datetime | None
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    updated_at: dt.datetime
    duration_ms: int | None
    peak_memory: int | None
    timeout_seconds: float | None = None
    expires_at: dt.datetime | None = None
    # Written by the claim that holds the task; every write of that attempt is fenced by it.
    claim_token: str | None = None

    @property
    def claim(self) -> Claim:
        """The fence of this claim's writes (only meaningful for a task a runner holds)."""
        return Claim(self.id, self.claim_token or "")

    @property
    def is_finished(self) -> bool:
        return self.status.is_final

    @property
    def display_status(self) -> str:
        """``scheduled`` or ``retrying`` for a pending task that waits for its ``run_at``."""
        if self.status is Status.PENDING and self.run_at > utcnow():
            return "retrying" if self.attempts > 0 else "scheduled"
        return self.status.value

    @property
    def result_file(self) -> str | None:
        """The storage-relative path of the downloadable result, if the task produced one."""
        if isinstance(self.result, dict) and isinstance(self.result.get("file"), str):
            return str(self.result["file"])
        return None

    def to_dict(self) -> JSONDict:
        data = asdict(self)
        del data["claim_token"]  # the runner's fence, not the task's data
        data["status"] = self.status.value
        data["status_code"] = self.status.code
        data["display_status"] = self.display_status
        data["priority"] = self.priority.value
        for key, value in data.items():
            if isinstance(value, dt.datetime):
                data[key] = _iso(value)
        return data


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One row of ``s_workers`` plus whether its class can be imported here."""

    id: int
    identifier: str
    class_path: str
    scope: str
    title: str
    description: str
    icon: str
    actions: tuple[str, ...]
    active: bool
    position: int
    settings: JSONDict
    orphaned: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    # Cluster-wide: at most rate_limit of its tasks started per rate_period_seconds.
    rate_limit: int | None = None
    rate_period_seconds: int | None = None

    def to_dict(self) -> JSONDict:
        data = asdict(self)
        data["actions"] = list(self.actions)
        data["created_at"] = _iso(self.created_at)
        data["updated_at"] = _iso(self.updated_at)
        return data


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line of a task's log."""

    id: int
    task_id: int
    ts: dt.datetime
    level: str
    message: str
    context: JSONDict = field(default_factory=dict)

    def to_dict(self) -> JSONDict:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "ts": _iso(self.ts),
            "level": self.level,
            "message": self.message,
            "context": self.context,
        }


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A named queue as operators see it: its controls (``s_queues``) and what it holds now."""

    name: str
    paused: bool  # paused at this moment (indefinitely, or until ``paused_until``)
    paused_until: dt.datetime | None  # when a timed pause lifts itself; None if not timed
    concurrency_limit: int | None
    rate_limit: int | None
    rate_period_seconds: int | None
    pending: int  # waiting in the claimable set, scheduled ones included
    running: int  # claimed by a runner (prefetched ones included)
    started_in_period: int | None = None  # rate-limited queues: starts within the period

    def to_dict(self) -> JSONDict:
        data = asdict(self)
        data["paused_until"] = _iso(self.paused_until)
        return data


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One row of ``s_workers`` as stored (``WorkerInfo`` adds what this process knows)."""

    id: int
    identifier: str
    class_path: str
    scope: str
    title: str
    description: str | None
    icon: str
    actions: tuple[str, ...]
    active: bool
    position: int
    settings: JSONDict
    created_at: dt.datetime
    updated_at: dt.datetime
    rate_limit: int | None = None
    rate_period_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    """What a caller asks for; the store's task writes turn it into rows."""

    identifier: str
    action: str
    options: JSONDict
    priority: Priority = Priority.NORMAL
    queue: str = "default"
    run_at: dt.datetime | None = None
    max_attempts: int = 3
    started_by: str | None = None
    # Honoured by insert_unique_tasks: a second task with the same key is never created.
    unique_key: str | None = None
    timeout_seconds: float | None = None
    expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Filters for listing and counting tasks; empty means all."""

    statuses: tuple[Status, ...] = ()
    identifier: str | None = None
    action: str | None = None
    queue: str | None = None
    created_after: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt ended, for the fenced write that records it."""

    status: Status
    message: str | None = None
    result: Any = None
    error: str | None = None
    progress: int | None = None
    processed: int | None = None
    total: int | None = None
    duration_ms: int | None = None
    peak_memory: int | None = None
    retry_at: dt.datetime | None = None
    # A snooze (`raise Retry(after=...)`): the run counts as an attempt, and the task gets one
    # more, so snoozing does not use up its failure budget (bounded by settings.max_runs).
    snooze: bool = False


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A runner process as it registers in ``s_nodes``."""

    id: str
    host: str
    pid: int
    concurrency: int
    queues: list[str]
    version: str


@dataclass(frozen=True, slots=True)
class Rescue:
    """What one rescue pass did."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    dead_nodes: list[str] = field(default_factory=list)
    # Ended as cancelled: an operator asked to cancel them while their runner was silent.
    cancelled: list[int] = field(default_factory=list)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def utcnow() -> dt.datetime:
    """Naive UTC, the only kind of datetime stored: SQLite has no time zones."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def to_utc_naive(value: dt.datetime) -> dt.datetime:
    """Accept aware datetimes in any zone and naive ones meant as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """What a task list, count, export or bulk action selects; empty fields select all.

    ``identifiers`` limits the rows to workers a caller may see (None: no limit; an empty
    tuple: nothing). Listing pages by id, newest first: ``before_id`` is the keyset cursor.
    """

    task_id: int | None = None
    statuses: tuple[Status, ...] = ()
    identifier: str | None = None
    identifiers: tuple[str, ...] | None = None
    action: str | None = None
    queue: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    meta: tuple[tuple[str, str], ...] = ()
    before_id: int | None = None
    # The oldest id a search reads (a scan window, see core/listing.py); None: no floor.
    from_id: int | None = None

    @property
    def scans(self) -> bool:
        """Whether no index orders this query's rows, so finding them reads rows one by one
        (a ``meta`` value, an action, a queue or a date range, without an id)."""
        return self.task_id is None and bool(
            self.meta
            or self.action
            or self.queue
            or self.created_from is not None
            or self.created_to is not None
        )

    def to_dict(self) -> JSONDict:
        return {
            "task_id": self.task_id,
            "statuses": [s.value for s in self.statuses],
            "identifier": self.identifier,
            "identifiers": None if self.identifiers is None else list(self.identifiers),
            "action": self.action,
            "queue": self.queue,
            "created_from": _iso(self.created_from),
            "created_to": _iso(self.created_to),
            "meta": [list(pair) for pair in self.meta],
        }

    @classmethod
    def from_dict(cls, data: JSONDict) -> TaskQuery:
        def moment(value: Any) -> dt.datetime | None:
            return None if value is None else to_utc_naive(dt.datetime.fromisoformat(value))

        identifiers = data.get("identifiers")
        return cls(
            task_id=data.get("task_id"),
            statuses=tuple(Status.parse(s) for s in data.get("statuses") or ()),
            identifier=data.get("identifier"),
            identifiers=None if identifiers is None else tuple(identifiers),
            action=data.get("action"),
            queue=data.get("queue"),
            created_from=moment(data.get("created_from")),
            created_to=moment(data.get("created_to")),
            meta=tuple((str(k), str(v)) for k, v in data.get("meta") or ()),
        )
