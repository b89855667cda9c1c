"""Creating tasks: every argument checked (and named when wrong) before anything is written,
then one insert for one task or for a whole batch, and the local runner woken for due ones."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from stask.core import workers_admin
from stask.core.queues import check_queue_name
from stask.core.values import check_json
from stask.core.worker import normalize_action
from stask.errors import (
    InvalidOptions,
    InvalidState,
    UnknownAction,
    ValidationError,
    WorkerInactive,
)
from stask.models import JSONDict, NewTask, Priority, Task, to_utc_naive, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask
    from stask.core.worker import BaseWorker
    from stask.db.store import CallerConnection

CreateItem = tuple[str, str] | tuple[str, str, Mapping[str, Any] | None] | Mapping[str, Any]
CREATE_FIELDS = (
    "identifier", "action", "options", "priority", "run_at", "queue", "max_attempts",
    "started_by", "timeout", "deadline",
)  # fmt: skip
STARTED_BY_LENGTH = 100  # s_tasks.started_by


def check_options(options: Mapping[str, Any] | None) -> JSONDict:
    """Options must be a JSON object; name the first value that is not JSON."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidOptions(f"options must be a dict, got {type(options).__name__}")
    if not options:
        return {}
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


def _check_moment(name: str, value: object) -> dt.datetime | None:
    if value is not None and not isinstance(value, dt.datetime):
        raise ValidationError(
            f"{name} must be a datetime (aware, or naive meaning UTC) or None, got "
            f"{type(value).__name__} {value!r} - parse strings first, e.g. "
            "datetime.fromisoformat('2026-12-01T09:30:00+00:00')"
        )
    return to_utc_naive(value) if value is not None else None


def _positive_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValidationError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


# A worker's checked (identifier, action) -> the action's name and the worker's class.
CheckedWorkers = dict[tuple[str, str], tuple[str, "type[BaseWorker] | None"]]


def new_task(
    app: Stask,
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
    checked_workers: CheckedWorkers | None = None,
) -> NewTask:
    """A checked task to insert: its worker registered and active, its action known.

    ``checked_workers`` remembers the workers and actions already found registered and active
    (create_many checks each pair once per batch)."""
    for name, text in (("identifier", identifier), ("action", action)):
        if not isinstance(text, str):
            raise ValidationError(f"{name} must be a string, got {type(text).__name__} {text!r}")
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
    limit = app.settings.max_options_bytes
    if checked or limit < len("{}"):  # empty options are "{}": nothing to find in them
        check_json(checked, "the task's options", limit, "max_options_bytes")
    known = {} if checked_workers is None else checked_workers
    worker = known.get((identifier, action))
    if worker is None:
        worker = known[identifier, action] = _checked_worker(app, identifier, action)
    normalized, cls = worker
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
            else (cls.queue if cls and cls.queue else app.settings.default_queue)
        ),
        run_at=run_at_utc,
        max_attempts=attempts,
        started_by=started_by,
        timeout_seconds=_positive_seconds(timeout),
        expires_at=expires_at,
    )


def _checked_worker(
    app: Stask, identifier: str, action: str
) -> tuple[str, type[BaseWorker] | None]:
    """The normalized action and the worker's class; an error unless the worker is registered
    and active and has the action."""
    row = workers_admin.cached_record(app, identifier)
    if row is None:
        raise workers_admin.unknown_worker(app, identifier)
    normalized = _action_name(action)
    actions = list(row.actions)
    if normalized not in actions:
        raise UnknownAction(
            f"worker {identifier!r} has no action {action!r} (actions: "
            f"{', '.join(actions) or 'none'})"
        )
    if not row.active:
        raise WorkerInactive(
            f"worker {identifier!r} is inactive - activate it with "
            f"`stask workers activate {identifier}`"
        )
    return normalized, app.registry.get(identifier)


@functools.lru_cache(maxsize=1024)
def _action_name(action: str) -> str:
    """normalize_action, remembered: callers name the same few actions over and over."""
    return normalize_action(action)


def _enqueued(app: Stask, batch: Sequence[NewTask]) -> None:
    """Wake this process's runner when some of ``batch`` is due now."""
    now = utcnow()
    if any(item.run_at is None or item.run_at <= now for item in batch):
        app.wake_local_runners()


def create(app: Stask, new: NewTask, connection: CallerConnection | None = None) -> Task:
    """Insert one task checked by ``new_task`` (see ``Stask.create``)."""
    task = app.store.task_writes.insert_task(new, connection=connection)
    if connection is None:
        _enqueued(app, [new])
    return task


def rerun(app: Stask, task_id: int, *, started_by: str | None = None) -> Task:
    """A new task of ``task_id``'s worker and action with its options, priority, queue,
    attempts and timeout, linked to it (``reruns``). The options are the stored ones: a caller
    never sees secrets to send back. The worker must still exist and be active."""
    original = app.get(task_id)
    new = new_task(
        app, original.identifier, original.action, original.options,
        priority=original.priority, queue=original.queue, max_attempts=original.max_attempts,
        started_by=started_by, timeout=original.timeout_seconds,
    )  # fmt: skip
    with app.store.writing() as conn:
        task = app.store.task_writes.insert_task(new, connection=conn)
        app.store.task_writes.link_rerun(conn, task.id, original.id, utcnow())
    _enqueued(app, [new])
    return task


def create_many(
    app: Stask,
    items: Iterable[CreateItem],
    priority: str | Priority,
    connection: CallerConnection | None = None,
) -> list[int]:
    """Check every item, then insert them all (see ``Stask.create_many``)."""
    batch = []
    checked_workers: CheckedWorkers = {}
    for index, item in enumerate(items):
        try:
            batch.append(_create_item(app, checked_workers, item, priority))
        except (ValidationError, InvalidState) as err:  # the same error, naming the item
            raise type(err)(f"item {index} of create_many: {err.message}") from err
    ids = app.store.task_writes.insert_tasks(batch, connection=connection)
    if connection is None:
        _enqueued(app, batch)
    return ids


def _create_item(
    app: Stask, checked_workers: CheckedWorkers, item: CreateItem, priority: str | Priority
) -> NewTask:
    if isinstance(item, Mapping):
        unknown = sorted(str(key) for key in item if key not in CREATE_FIELDS)
        if unknown:
            raise ValidationError(
                f"unknown key(s) {', '.join(map(repr, unknown))} - use {', '.join(CREATE_FIELDS)}"
            )
        missing = [key for key in ("identifier", "action") if key not in item]
        if missing:
            raise ValidationError(f"missing key(s) {', '.join(map(repr, missing))}")
        fields = dict(item)
        fields.setdefault("priority", priority)
        return new_task(
            app,
            fields.pop("identifier"),
            fields.pop("action"),
            fields.pop("options", None),
            checked_workers=checked_workers,
            **fields,
        )
    if isinstance(item, tuple) and len(item) in (2, 3):
        options = item[2] if len(item) == 3 else None
        return new_task(
            app, item[0], item[1], options, priority=priority, checked_workers=checked_workers
        )
    raise ValidationError(
        f"each item must be (identifier, action[, options]) or a dict, got {item!r}"
    )
