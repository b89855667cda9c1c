"""Queue administration: pausing, resuming and limiting named queues, and their overview; each
name, limit and pause time checked and refused with the bad value named."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from stask.db.queues import QueueStore
from stask.errors import InvalidQueueSetting
from stask.models import QueueInfo, to_utc_naive, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask

QUEUE_NAME_MAX = 100  # s_tasks.queue, s_queue.queue and s_queues.name are VARCHAR(100)
LIMIT_MAX = 2**31 - 1  # the limit columns are 32-bit INTEGER on every database


def check_queue_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidQueueSetting(f"queue name must be a non-empty string, got {name!r}")
    if len(name) > QUEUE_NAME_MAX:
        raise InvalidQueueSetting(
            f"queue name {name[:20]!r}... is {len(name)} characters - at most {QUEUE_NAME_MAX}"
        )
    return name


def _positive(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMIT_MAX:
        raise InvalidQueueSetting(
            f"{what} must be a positive integer (at most {LIMIT_MAX}), got {value!r}"
        )
    return value


def check_limits(concurrency: Any, rate: Any, period_seconds: Any) -> dict[str, int | None]:
    """The limit columns of ``s_queues``; None removes a limit."""
    values = {
        "concurrency_limit": _positive(concurrency, "concurrency"),
        "rate_limit": _positive(rate, "rate"),
        "rate_period_seconds": _positive(period_seconds, "period_seconds"),
    }
    if (rate is None) != (period_seconds is None):
        given = f"rate={rate!r}" if rate is not None else f"period_seconds={period_seconds!r}"
        raise InvalidQueueSetting(
            f"a rate limit needs both rate and period_seconds, got only {given} "
            "(e.g. rate=10, period_seconds=60 for at most 10 starts a minute)"
        )
    return values


def check_until(until: Any) -> dt.datetime | None:
    """A pause end in the future, as naive UTC (a naive ``until`` is read as UTC)."""
    if until is None:
        return None
    if not isinstance(until, dt.datetime):
        raise InvalidQueueSetting(f"until must be a datetime, got {type(until).__name__} {until!r}")
    moment = to_utc_naive(until)
    if moment <= utcnow():
        raise InvalidQueueSetting(
            f"until {until.isoformat()} is not in the future - give a later time, or no time "
            "to pause until resumed"
        )
    return moment


# -- queue administration (the facade's queue methods) -----------------------------------------


def overview(app: Stask, names: list[str] | None = None) -> list[QueueInfo]:
    """Every known queue (or those of ``names``): state and counts."""
    return QueueStore(app.store).overview(names)


def queue(app: Stask, name: str) -> QueueInfo:
    (info,) = overview(app, [check_queue_name(name)])
    return info


def pause(app: Stask, name: str, until: dt.datetime | None) -> QueueInfo:
    name = check_queue_name(name)
    moment = check_until(until)
    QueueStore(app.store).change(name, {"paused": moment is None, "paused_until": moment})
    return queue(app, name)


def resume(app: Stask, name: str) -> QueueInfo:
    name = check_queue_name(name)
    QueueStore(app.store).change(name, {"paused": False, "paused_until": None}, create=False)
    app.wake_local_runners()
    return queue(app, name)


def set_limits(
    app: Stask, name: str, concurrency: int | None, rate: int | None, period_seconds: int | None
) -> QueueInfo:
    name = check_queue_name(name)
    values = check_limits(concurrency, rate, period_seconds)
    QueueStore(app.store).change(name, values, create=any(v is not None for v in values.values()))
    app.wake_local_runners()
    return queue(app, name)
