"""Worker schedules: a typed model of ``settings["schedule"]``, its slots in UTC, and words.

Slots are wall-clock times in the schedule's time zone, returned as naive UTC like every stask
datetime. Clock changes never fire a slot twice: a wall time that happens twice (clocks go back)
fires once, at its first occurrence; a wall time that does not exist (clocks go forward) fires
when the clock jumps, at the end of the gap; slots that land on the same instant fire once.

Firing exactly once (``Stask.enqueue_due_schedules``) rests on two things:

- Each slot's task carries ``unique_key = slot_key(...)`` (``sched:<worker>:<action>:<slot>``),
  and the store inserts it with "on conflict do nothing": however many runners ask, one row.
- The worker's stored settings keep ``schedule_state = {"since": ..., "last_slot": ...}``
  (naive UTC, ISO): ``last_slot`` is the newest slot fired, ``since`` when the schedule was set.
  Runners read and advance it under the worker row's lock, in the same transaction as the
  insert, so they serialize per worker and only the latest due slot after
  ``max(since, last_slot)`` fires: missed slots after downtime run once, never as a storm, and
  never older than a slot already fired. The state lives beside the schedule (not derived from
  the newest ``sched:`` task) because tasks are pruned and deleted, and a pruned history would
  make a past ``once`` slot fire again. A schedule seen without state starts counting from then.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

from stask.core import schedule_fields as fields
from stask.errors import ValidationError
from stask.models import JSONDict, to_utc_naive

if TYPE_CHECKING:
    from croniter import croniter

SCHEDULE_KEY = "schedule"
STATE_KEY = "schedule_state"
TYPES = ("manual", "once", "periodic", "regular", "cron")
FREQUENCIES = ("hourly", "daily", "weekly")
INTERVALS = (5, 15, 30, 60)
DEFAULT_ACTION = "make"
UNIQUE_KEY_LENGTH = 255  # s_tasks.unique_key
COMMON_FIELDS = ("type", "timezone", "action", "options", "enabled")
FIELDS: dict[str, tuple[str, ...]] = {
    "manual": (),
    "once": ("at",),
    "hourly": ("frequency", "minute"),
    "daily": ("frequency", "time"),
    "weekly": ("frequency", "days", "time"),
    "regular": ("start_time", "end_time", "interval"),
    "cron": ("expression",),
}
ALL_FIELDS = frozenset(COMMON_FIELDS).union(*FIELDS.values())

_UTC = dt.UTC
_SECOND = dt.timedelta(seconds=1)


# -- the model --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """What every schedule has; subclasses say when it fires, as wall-clock times."""

    type: ClassVar[str] = ""
    timezone: str = "UTC"
    action: str | None = None
    options: JSONDict = field(default_factory=dict)
    enabled: bool = True

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def fires(self) -> bool:
        """Whether runners create tasks for it at all."""
        return self.enabled and self.type != "manual"

    def to_dict(self) -> JSONDict:
        data: JSONDict = {"type": self.type, **self._fields()}
        if self.timezone != "UTC":
            data["timezone"] = self.timezone
        if self.action is not None:
            data["action"] = self.action
        if self.options:
            data["options"] = dict(self.options)
        if not self.enabled:
            data["enabled"] = False
        return data

    def _fields(self) -> JSONDict:
        return {}

    def walls_after(self, start: dt.datetime) -> Iterator[dt.datetime]:
        """Wall-clock slots later than ``start``, ascending."""
        return iter(())

    def walls_until(self, end: dt.datetime) -> Iterator[dt.datetime]:
        """Wall-clock slots at or before ``end``, descending."""
        return iter(())

    def when(self) -> str:
        return "Manual: runs only when started by hand"


@dataclass(frozen=True, slots=True, kw_only=True)
class Manual(Schedule):
    type: ClassVar[str] = "manual"


@dataclass(frozen=True, slots=True, kw_only=True)
class Once(Schedule):
    type: ClassVar[str] = "once"
    at: dt.datetime

    def _fields(self) -> JSONDict:
        return {"at": self.at.isoformat(timespec="minutes" if not self.at.second else "seconds")}

    def walls_after(self, start: dt.datetime) -> Iterator[dt.datetime]:
        return iter([self.at] if self.at > start else [])

    def walls_until(self, end: dt.datetime) -> Iterator[dt.datetime]:
        return iter([self.at] if self.at <= end else [])

    def when(self) -> str:
        return f"Once at {self.at:%Y-%m-%d %H:%M}"


class _Daily(Schedule, abc.ABC):
    """A schedule whose wall-clock slots are the same kind of list every day."""

    __slots__ = ()

    @abc.abstractmethod
    def day_walls(self, day: dt.date) -> list[dt.datetime]:
        """The slots of one day, in wall-clock time of the schedule's zone."""

    def walls_after(self, start: dt.datetime) -> Iterator[dt.datetime]:
        day = start.date() - dt.timedelta(days=1)  # a regular window may cross midnight
        while day < dt.date.max:
            yield from (wall for wall in self.day_walls(day) if wall > start)
            day += dt.timedelta(days=1)

    def walls_until(self, end: dt.datetime) -> Iterator[dt.datetime]:
        day = end.date()
        while day > dt.date.min:
            yield from (wall for wall in reversed(self.day_walls(day)) if wall <= end)
            day -= dt.timedelta(days=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Periodic(_Daily):
    type: ClassVar[str] = "periodic"
    frequency: str
    minute: int = 0
    time: dt.time = dt.time(0, 0)
    days: tuple[int, ...] = ()

    def _fields(self) -> JSONDict:
        if self.frequency == "hourly":
            return {"frequency": "hourly", "minute": self.minute}
        found: JSONDict = {"frequency": self.frequency, "time": f"{self.time:%H:%M}"}
        if self.frequency == "weekly":
            found["days"] = [fields.DAYS[day] for day in self.days]
        return found

    def day_walls(self, day: dt.date) -> list[dt.datetime]:
        if self.frequency == "hourly":
            return [dt.datetime.combine(day, dt.time(hour, self.minute)) for hour in range(24)]
        if self.frequency == "weekly" and day.weekday() not in self.days:
            return []
        return [dt.datetime.combine(day, self.time)]

    def when(self) -> str:
        if self.frequency == "hourly":
            return f"Every hour at minute {self.minute}"
        if self.frequency == "daily":
            return f"Every day at {self.time:%H:%M}"
        return f"Every {_join([fields.DAY_WORDS[day] for day in self.days])} at {self.time:%H:%M}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Regular(_Daily):
    """Every ``interval`` minutes from ``start_time`` to ``end_time`` (inclusive) each day.

    An end before the start is a window across midnight (22:00 to 02:00 the next day).
    """

    type: ClassVar[str] = "regular"
    start_time: dt.time
    end_time: dt.time
    interval: int

    def _fields(self) -> JSONDict:
        return {
            "start_time": f"{self.start_time:%H:%M}",
            "end_time": f"{self.end_time:%H:%M}",
            "interval": self.interval,
        }

    def day_walls(self, day: dt.date) -> list[dt.datetime]:
        wall = dt.datetime.combine(day, self.start_time)
        end_day = day if self.end_time > self.start_time else day + dt.timedelta(days=1)
        end = dt.datetime.combine(end_day, self.end_time)
        step = dt.timedelta(minutes=self.interval)
        found = []
        while wall <= end:
            found.append(wall)
            wall += step
        return found

    def when(self) -> str:
        every = "Every hour" if self.interval == 60 else f"Every {self.interval} minutes"
        window = f"between {self.start_time:%H:%M} and {self.end_time:%H:%M}"
        if self.end_time < self.start_time:
            window = f"from {self.start_time:%H:%M} to {self.end_time:%H:%M} the next day"
        return f"{every} {window}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Cron(Schedule):
    type: ClassVar[str] = "cron"
    expression: str

    @property
    def standard(self) -> str:
        """The five-field form (aliases such as ``@daily`` expanded)."""
        return fields.CRON_ALIASES.get(self.expression.lower(), self.expression)

    def _fields(self) -> JSONDict:
        return {"expression": self.expression}

    def walls_after(self, start: dt.datetime) -> Iterator[dt.datetime]:
        from croniter import croniter  # only cron schedules need it: keep runners small

        return _cron_walls(croniter(self.standard, start), forward=True)

    def walls_until(self, end: dt.datetime) -> Iterator[dt.datetime]:
        from croniter import croniter

        # croniter's get_prev is strictly earlier; start one minute past `end`'s minute.
        start = end.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        return _cron_walls(croniter(self.standard, start), forward=False)

    def when(self) -> str:
        from cron_descriptor import ExpressionDescriptor, Options

        options = Options()
        options.use_24hour_time_format = True
        try:
            return str(ExpressionDescriptor(self.standard, options).get_description())
        except Exception:  # a dialect cron-descriptor lacks must not break a listing
            return f"Cron {self.expression!r}"


def _cron_walls(iterator: croniter, *, forward: bool) -> Iterator[dt.datetime]:
    from croniter import CroniterBadDateError

    while True:
        try:
            wall = iterator.get_next(dt.datetime) if forward else iterator.get_prev(dt.datetime)
        except (CroniterBadDateError, OverflowError):  # no further match (e.g. 31 February)
            return
        yield wall


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


# -- parsing and validation -------------------------------------------------------------------


def parse_schedule(raw: Any, *, strict: bool = False) -> Schedule:
    """A validated schedule from its stored form; None is manual.

    ``strict`` also refuses fields the type does not use (for input). Stored schedules are read
    leniently: a worker's default schedule is deep-merged with the stored one, so fields of
    another type may linger.
    """
    if raw is None:
        return Manual()
    if isinstance(raw, Schedule):
        return raw
    if not isinstance(raw, Mapping):
        raise ValidationError(
            f"a schedule must be an object such as {{'type': 'manual'}}, got {raw!r}"
        )
    unknown = sorted(str(key) for key in raw if key not in ALL_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown schedule field {unknown[0]!r} - use: {', '.join(sorted(ALL_FIELDS))}"
        )
    kind = raw.get("type", "manual")
    if kind not in TYPES:
        raise fields.invalid("type", f"one of {', '.join(TYPES)}", kind)
    frequency = raw.get("frequency")
    if kind == "periodic" and frequency not in FREQUENCIES:
        raise fields.invalid("frequency", f"one of {', '.join(FREQUENCIES)}", frequency)
    variant = str(frequency) if kind == "periodic" else str(kind)
    if strict:
        used = set(COMMON_FIELDS).union(FIELDS[variant])
        extra = sorted(key for key in raw if key not in used)
        if extra:
            uses = ", ".join(f for f in FIELDS[variant] if f != "frequency") or "no other fields"
            raise ValidationError(
                f"schedule field {extra[0]!r} does not apply to {variant} schedules "
                f"(they use: {uses})"
            )
    zone = fields.timezone(raw.get("timezone", "UTC"))
    common: dict[str, Any] = {
        "timezone": zone.key,
        "action": fields.action(raw.get("action")),
        "options": fields.options(raw.get("options")),
        "enabled": fields.enabled(raw.get("enabled", True)),
    }
    build: dict[str, Callable[[], Schedule]] = {
        "manual": lambda: Manual(**common),
        "once": lambda: Once(at=fields.at(raw.get("at"), zone), **common),
        "periodic": lambda: _periodic(variant, raw, common),
        "regular": lambda: _regular(raw, common),
        "cron": lambda: Cron(expression=fields.expression(raw.get("expression")), **common),
    }
    return build[kind]()


def _periodic(frequency: str, raw: Mapping[str, Any], common: dict[str, Any]) -> Periodic:
    if frequency == "hourly":
        minute = fields.integer("minute", raw.get("minute", 0), "a minute from 0 to 59")
        if not 0 <= minute <= 59:
            raise fields.invalid("minute", "a minute from 0 to 59", raw.get("minute"))
        return Periodic(frequency=frequency, minute=minute, **common)
    time = fields.time("time", raw.get("time"))
    if frequency == "daily":
        return Periodic(frequency=frequency, time=time, **common)
    return Periodic(frequency=frequency, time=time, days=fields.days(raw.get("days")), **common)


def _regular(raw: Mapping[str, Any], common: dict[str, Any]) -> Regular:
    start = fields.time("start_time", raw.get("start_time"))
    end = fields.time("end_time", raw.get("end_time"))
    if start == end:
        allowed = "a time other than the start (an end before the start crosses midnight)"
        raise fields.invalid("end_time", allowed, raw.get("end_time"))
    allowed = f"one of {', '.join(map(str, INTERVALS))} (minutes)"
    interval = raw.get("interval")
    number = 60 if interval == "hourly" else fields.integer("interval", interval, allowed)
    if number not in INTERVALS:
        raise fields.invalid("interval", allowed, interval)
    return Regular(start_time=start, end_time=end, interval=number, **common)


def resolve_action(schedule: Schedule, actions: Sequence[str], identifier: str) -> str:
    """The action a schedule runs: its own, else the worker's ``make``, else its only action."""
    if schedule.action is not None:
        if schedule.action not in actions:
            raise fields.invalid(
                "action",
                f"one of worker {identifier!r}'s actions ({', '.join(actions)})",
                schedule.action,
            )
        return schedule.action
    if DEFAULT_ACTION in actions:
        return DEFAULT_ACTION
    if len(actions) == 1:
        return actions[0]
    raise ValidationError(
        f"schedule field 'action' is required for worker {identifier!r}: it has no action "
        f"{DEFAULT_ACTION!r} and several others - use one of {', '.join(actions)}"
    )


# -- slots ------------------------------------------------------------------------------------


def wall_time(instant: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The naive wall-clock time in ``zone`` of a naive UTC instant."""
    return instant.replace(tzinfo=_UTC).astimezone(zone).replace(tzinfo=None)


def local_time(schedule: Schedule, slot: dt.datetime) -> dt.datetime:
    """A naive UTC slot as an aware datetime in the schedule's zone, for display."""
    return slot.replace(tzinfo=_UTC).astimezone(schedule.zone)


def instant_of(wall: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The naive UTC instant a wall-clock slot fires at (see the module docstring for DST)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC).replace(tzinfo=None)
    if wall_time(first, zone) == wall:
        return first  # exists; for a repeated wall time fold=0 is the first occurrence
    # In a gap: find the jump, the first second whose wall time is past `wall`.
    low = wall.replace(tzinfo=zone, fold=1).astimezone(_UTC).replace(tzinfo=None)
    high = first
    while high - low > _SECOND:
        middle = low + dt.timedelta(seconds=int((high - low).total_seconds()) // 2)
        if wall_time(middle, zone) > wall:
            high = middle
        else:
            low = middle
    return high


def iter_slots(schedule: Schedule, after: dt.datetime) -> Iterator[dt.datetime]:
    """Slots later than ``after`` (naive UTC), strictly increasing, without end."""
    zone = schedule.zone
    last = to_utc_naive(after)
    for wall in schedule.walls_after(wall_time(last, zone)):
        instant = instant_of(wall, zone)
        if instant > last:  # instants never decrease as walls increase; equal ones fire once
            last = instant
            yield instant


def slots_between(schedule: Schedule, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """Slots in ``(after, until]``, ascending (naive UTC)."""
    until = to_utc_naive(until)
    found = []
    for slot in iter_slots(schedule, after):
        if slot > until:
            break
        found.append(slot)
    return found


def next_runs(schedule: Schedule, after: dt.datetime, n: int) -> list[dt.datetime]:
    """The first ``n`` slots later than ``after`` (fewer if the schedule ends)."""
    found: list[dt.datetime] = []
    for slot in iter_slots(schedule, after):
        if len(found) >= n:
            break
        found.append(slot)
    return found


def latest_slot(schedule: Schedule, after: dt.datetime, until: dt.datetime) -> dt.datetime | None:
    """The latest slot in ``(after, until]``, without walking the older ones."""
    after, until = to_utc_naive(after), to_utc_naive(until)
    zone = schedule.zone
    wall = wall_time(until, zone)
    # When `until` is the second pass of a repeated hour, later wall times of the first pass
    # fire earlier than `until`: start above them (by the length of the repeat).
    repeat = wall.replace(tzinfo=zone, fold=0).utcoffset() or dt.timedelta(0)
    repeat -= wall.replace(tzinfo=zone, fold=1).utcoffset() or dt.timedelta(0)
    for candidate in schedule.walls_until(wall + max(repeat, dt.timedelta(0))):
        instant = instant_of(candidate, zone)
        if instant <= after:
            return None
        if instant <= until:
            return instant
    return None


def slot_key(identifier: str, action: str, slot: dt.datetime) -> str:
    """The unique key of a slot's task: ``sched:<identifier>:<action>:<slot ISO, UTC>``."""
    key = f"sched:{identifier}:{action}:{to_utc_naive(slot).isoformat(timespec='seconds')}Z"
    if len(key) > UNIQUE_KEY_LENGTH:
        raise ValidationError(
            f"the slot key {key!r} is longer than {UNIQUE_KEY_LENGTH} characters - shorten "
            "the worker's identifier or action name"
        )
    return key


def describe(schedule: Schedule) -> str:
    """The schedule in words, e.g. "Every 15 minutes between 05:00 and 23:00 (Europe/Kyiv)"."""
    if schedule.type == "manual":
        text = schedule.when()
    else:
        text = f"{schedule.when()} ({schedule.timezone})"
    return text if schedule.enabled else f"{text} - disabled"


# -- firing state -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """What a runner should do for one schedule now: the slot to fire and the state to store."""

    slot: dt.datetime | None
    state: JSONDict
    changed: bool = False  # the state must be stored
    skipped: bool = False  # older missed slots were passed over for this one


def stamp(value: dt.datetime) -> str:
    """How the firing state writes a naive UTC time."""
    return f"{to_utc_naive(value).isoformat(timespec='seconds')}Z"


def read_stamp(state: Mapping[str, Any], key: str) -> dt.datetime | None:
    """A time the firing state holds, or None if it is missing or unreadable."""
    value = state.get(key)
    try:
        return to_utc_naive(dt.datetime.fromisoformat(value)) if isinstance(value, str) else None
    except ValueError:
        return None


def due_slot(schedule: Schedule, state: Any, now: dt.datetime) -> Due:
    """The latest slot due at ``now`` after the last one fired, and the state after firing it."""
    now = to_utc_naive(now)
    stored = dict(state) if isinstance(state, Mapping) else {}
    marks = [
        mark for mark in (read_stamp(stored, "since"), read_stamp(stored, "last_slot")) if mark
    ]
    if not marks:
        # First seen without state (set by hand or a class default): count from now on.
        return Due(None, {**stored, "since": stamp(now)}, changed=True)
    lower = max(marks)
    slot = latest_slot(schedule, lower, now) if schedule.fires else None
    if slot is None:
        return Due(None, stored)
    skipped = latest_slot(schedule, lower, slot - _SECOND) is not None
    return Due(slot, {**stored, "last_slot": stamp(slot)}, changed=True, skipped=skipped)
