"""Checks for queue controls: names, limits and pause times, refused with the bad value named."""

from __future__ import annotations

import datetime as dt
from typing import Any

from stask.errors import InvalidQueueSetting
from stask.models import to_utc_naive, utcnow

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
