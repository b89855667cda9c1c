"""Validation of single schedule fields; each error names the field and what it accepts."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stask.core.worker import normalize_action
from stask.errors import ValidationError
from stask.models import JSONDict

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_WORDS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
CRON_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")
# Random (R) and hashed (H) cron fields differ between processes: runners would disagree.
_CRON_RANDOM = re.compile(r"\b[hr]\b", re.IGNORECASE)
_CRON_EXAMPLE = "e.g. '*/10 9-17 * * mon-fri'"


def invalid(name: str, allowed: str, got: Any) -> ValidationError:
    return ValidationError(f"schedule field {name!r} must be {allowed}, got {got!r}")


def timezone(value: Any) -> ZoneInfo:
    allowed = "an IANA time zone name such as UTC or Europe/Kyiv"
    if not isinstance(value, str) or not value:
        raise invalid("timezone", allowed, value)
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise invalid("timezone", allowed, value) from err


def action(value: Any) -> str | None:
    if value is None:
        return None
    normalized = normalize_action(value) if isinstance(value, str) else ""
    if not normalized:
        raise invalid("action", "the name of one of the worker's actions", value)
    return normalized


def options(value: Any) -> JSONDict:
    allowed = "an object of JSON values"
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise invalid("options", allowed, value)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise invalid("options", allowed, value) from err
    return dict(value)


def enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise invalid("enabled", "true or false", value)
    return value


def integer(name: str, value: Any, allowed: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise invalid(name, allowed, value)


def time(name: str, value: Any) -> dt.time:
    allowed = "a time HH:MM from 00:00 to 23:59"
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if match is None or int(match[1]) > 23 or int(match[2]) > 59:
        raise invalid(name, allowed, value)
    return dt.time(int(match[1]), int(match[2]))


def days(value: Any) -> tuple[int, ...]:
    allowed = f"a list of days from {', '.join(DAYS)}"
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise invalid("days", allowed, value)
    words = [word.lower() for word in DAY_WORDS]
    found = set()
    for item in items:
        name = item.strip().lower() if isinstance(item, str) else ""
        if name in DAYS:
            found.add(DAYS.index(name))
        elif name in words:
            found.add(words.index(name))
        else:
            raise invalid("days", allowed, item)
    return tuple(sorted(found))


def at(value: Any, zone: ZoneInfo) -> dt.datetime:
    allowed = "a date and time such as 2026-12-01T09:30 (in the schedule's time zone)"
    if not isinstance(value, str):
        raise invalid("at", allowed, value)
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise invalid("at", allowed, value) from err
    if parsed.tzinfo is not None:  # an explicit offset wins; keep it as wall time of the zone
        parsed = parsed.astimezone(zone).replace(tzinfo=None)
    return parsed.replace(microsecond=0)


def expression(value: Any) -> str:
    allowed = (
        f"a cron expression of 5 fields (minute hour day month weekday, {_CRON_EXAMPLE}) "
        f"or one of {', '.join(CRON_ALIASES)}"
    )
    if not isinstance(value, str):
        raise invalid("expression", allowed, value)
    from croniter import CroniterBadDateError, croniter  # only cron schedules need it

    text = " ".join(value.split())
    standard = CRON_ALIASES.get(text.lower(), text)
    if len(standard.split()) != 5 or not croniter.is_valid(standard):
        raise invalid("expression", allowed, value)
    if _CRON_RANDOM.search(standard):
        raise ValidationError(
            f"schedule field 'expression' must not use random (R) or hashed (H) values - every "
            f"runner must compute the same times, got {value!r}"
        )
    try:
        croniter(standard, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except CroniterBadDateError as err:
        raise ValidationError(
            f"schedule field 'expression' never matches a date (like 31 February), got {value!r}"
        ) from err
    return text
