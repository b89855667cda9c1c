"""Worker schedules: slot arithmetic (DST included), validation, words, and firing exactly once."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stask import Stask
from stask.core import schedules
from stask.core.schedule_fields import DAYS
from stask.core.schedules import (
    Cron,
    Once,
    Periodic,
    Regular,
    Schedule,
    describe,
    due_slot,
    instant_of,
    latest_slot,
    next_runs,
    parse_schedule,
    resolve_action,
    slot_key,
    slots_between,
    wall_time,
)
from stask.db.store import Store
from stask.errors import ValidationError
from stask.models import NewTask
from tests.conftest import TEST_WORKERS
from tests.test_cli import assert_one_line_error, stask

D = dt.datetime
KYIV = "Europe/Kyiv"
RUNNER_WORKERS = [*TEST_WORKERS, "tests.schedule_workers"]


def utc(schedule: dict[str, Any], after: D, until: D) -> list[D]:
    return slots_between(parse_schedule(schedule), after, until)


def local(schedule: dict[str, Any], after: D, until: D) -> list[str]:
    """Slots as local wall times with their offset, as a person in the zone reads them."""
    parsed = parse_schedule(schedule)
    return [
        f"{schedules.local_time(parsed, slot):%m-%d %H:%M%z}"
        for slot in slots_between(parsed, after, until)
    ]


# -- slots of each type -------------------------------------------------------------------------


def test_manual_and_disabled_schedules_have_no_due_slot() -> None:
    assert utc({"type": "manual"}, D(2026, 1, 1), D(2027, 1, 1)) == []
    disabled = parse_schedule(
        {"type": "periodic", "frequency": "daily", "time": "05:00", "enabled": False}
    )
    assert not disabled.fires
    assert len(slots_between(disabled, D(2026, 1, 1), D(2026, 1, 3))) == 2  # it has slots...
    state = {"since": "2026-01-01T00:00:00Z"}
    assert due_slot(disabled, state, D(2026, 1, 3)).slot is None  # ...but never fires them


def test_once_fires_once_at_its_local_time() -> None:
    once = {"type": "once", "at": "2026-12-01T09:30", "timezone": KYIV}
    assert utc(once, D(2026, 1, 1), D(2030, 1, 1)) == [D(2026, 12, 1, 7, 30)]
    assert utc(once, D(2026, 12, 1, 7, 30), D(2030, 1, 1)) == []  # after is exclusive
    assert utc(once, D(2026, 1, 1), D(2026, 12, 1, 7, 30)) == [D(2026, 12, 1, 7, 30)]  # inclusive
    with_offset = parse_schedule({"type": "once", "at": "2026-12-01T09:30+00:00", "timezone": KYIV})
    assert with_offset.to_dict()["at"] == "2026-12-01T11:30"  # kept as the zone's wall time


def test_periodic_hourly_daily_weekly() -> None:
    hourly = {"type": "periodic", "frequency": "hourly", "minute": 15}
    assert utc(hourly, D(2026, 5, 1, 10, 15), D(2026, 5, 1, 13, 15)) == [
        D(2026, 5, 1, 11, 15), D(2026, 5, 1, 12, 15), D(2026, 5, 1, 13, 15),
    ]  # fmt: skip
    daily = {"type": "periodic", "frequency": "daily", "time": "05:00", "timezone": KYIV}
    assert local(daily, D(2026, 5, 1), D(2026, 5, 4)) == [
        "05-01 05:00+0300", "05-02 05:00+0300", "05-03 05:00+0300",
    ]  # fmt: skip
    weekly = {"type": "periodic", "frequency": "weekly", "days": ["thu", "MON"], "time": "05:00"}
    # 2026-05-04 is a Monday.
    assert utc(weekly, D(2026, 5, 1), D(2026, 5, 12)) == [
        D(2026, 5, 4, 5), D(2026, 5, 7, 5), D(2026, 5, 11, 5),
    ]  # fmt: skip
    assert parse_schedule(weekly).to_dict()["days"] == ["mon", "thu"]


def test_regular_fires_inside_its_window_only() -> None:
    regular = {"type": "regular", "start_time": "05:00", "end_time": "06:00", "interval": 15}
    assert [f"{s:%H:%M}" for s in utc(regular, D(2026, 5, 1), D(2026, 5, 2))] == [
        "05:00", "05:15", "05:30", "05:45", "06:00",
    ]  # fmt: skip
    hourly = {"type": "regular", "start_time": "05:30", "end_time": "08:00", "interval": "hourly"}
    assert [f"{s:%H:%M}" for s in utc(hourly, D(2026, 5, 1), D(2026, 5, 2))] == [
        "05:30", "06:30", "07:30",
    ]  # fmt: skip


def test_regular_window_across_midnight() -> None:
    overnight = {"type": "regular", "start_time": "23:00", "end_time": "01:00", "interval": 30}
    found = utc(overnight, D(2026, 4, 30, 23, 59), D(2026, 5, 2, 23, 30))
    assert [f"{slot:%d %H:%M}" for slot in found] == [
        "01 00:00", "01 00:30", "01 01:00", "01 23:00", "01 23:30",
        "02 00:00", "02 00:30", "02 01:00", "02 23:00", "02 23:30",
    ]  # fmt: skip
    assert describe(parse_schedule(overnight)) == (
        "Every 30 minutes from 23:00 to 01:00 the next day (UTC)"
    )


def test_cron_expression_in_its_time_zone() -> None:
    cron = {"type": "cron", "expression": "*/20 9-10 * * mon-fri", "timezone": KYIV}
    # Friday 2026-05-01, then the weekend, then Monday.
    assert local(cron, D(2026, 5, 1), D(2026, 5, 4, 23)) == [
        "05-01 09:00+0300", "05-01 09:20+0300", "05-01 09:40+0300",
        "05-01 10:00+0300", "05-01 10:20+0300", "05-01 10:40+0300",
        "05-04 09:00+0300", "05-04 09:20+0300", "05-04 09:40+0300",
        "05-04 10:00+0300", "05-04 10:20+0300", "05-04 10:40+0300",
    ]  # fmt: skip
    assert utc({"type": "cron", "expression": "@daily"}, D(2026, 5, 1), D(2026, 5, 3)) == [
        D(2026, 5, 2), D(2026, 5, 3),
    ]  # fmt: skip


def test_next_runs_and_latest_slot() -> None:
    daily = parse_schedule({"type": "periodic", "frequency": "daily", "time": "05:00"})
    assert next_runs(daily, D(2026, 5, 1, 5), 3) == [
        D(2026, 5, 2, 5),
        D(2026, 5, 3, 5),
        D(2026, 5, 4, 5),
    ]
    assert latest_slot(daily, D(2026, 4, 1), D(2026, 5, 1, 4, 59)) == D(2026, 4, 30, 5)
    assert latest_slot(daily, D(2026, 4, 30, 5), D(2026, 5, 1, 4, 59)) is None
    once = parse_schedule({"type": "once", "at": "2026-05-01T05:00"})
    assert next_runs(once, D(2026, 1, 1), 3) == [D(2026, 5, 1, 5)]


# -- daylight saving time (Kyiv: 2026-03-29 03:00 -> 04:00, 2026-10-25 04:00 -> 03:00) ----------

SPRING = (D(2026, 3, 28, 21), D(2026, 3, 29, 4))
AUTUMN = (D(2026, 10, 24, 21), D(2026, 10, 25, 4))


def test_spring_forward_fires_the_missing_hour_at_the_jump() -> None:
    hourly = {"type": "periodic", "frequency": "hourly", "minute": 30, "timezone": KYIV}
    assert local(hourly, *SPRING) == [
        "03-28 23:30+0200", "03-29 00:30+0200", "03-29 01:30+0200", "03-29 02:30+0200",
        "03-29 04:00+0300",  # 03:30 does not exist: it fires when the clock jumps
        "03-29 04:30+0300", "03-29 05:30+0300", "03-29 06:30+0300",
    ]  # fmt: skip
    daily = {"type": "periodic", "frequency": "daily", "time": "03:30", "timezone": KYIV}
    assert local(daily, *SPRING) == ["03-29 04:00+0300"]  # not skipped that day
    on_the_hour = {"type": "cron", "expression": "0 * * * *", "timezone": KYIV}
    slots = local(on_the_hour, *SPRING)
    assert slots.count("03-29 04:00+0300") == 1  # 03:00 and 04:00 land together, fire once
    assert len(slots) == 7  # 7 real hours, 7 runs


def test_fall_back_fires_a_repeated_wall_time_once() -> None:
    daily = {"type": "periodic", "frequency": "daily", "time": "03:30", "timezone": KYIV}
    assert local(daily, *AUTUMN) == ["10-25 03:30+0300"]  # the first 03:30 only
    hourly = {"type": "periodic", "frequency": "hourly", "minute": 0, "timezone": KYIV}
    assert local(hourly, *AUTUMN) == [
        "10-25 01:00+0300", "10-25 02:00+0300", "10-25 03:00+0300",  # the first 03:00 only
        "10-25 04:00+0200", "10-25 05:00+0200", "10-25 06:00+0200",
    ]  # fmt: skip
    regular = {
        "type": "regular", "start_time": "03:00", "end_time": "04:00", "interval": 15,
        "timezone": KYIV,
    }  # fmt: skip
    assert local(regular, *AUTUMN) == [
        "10-25 03:00+0300", "10-25 03:15+0300", "10-25 03:30+0300", "10-25 03:45+0300",
        "10-25 04:00+0200",
    ]  # fmt: skip


def test_latest_slot_inside_the_repeated_hour() -> None:
    hourly = parse_schedule({"type": "cron", "expression": "*/15 * * * *", "timezone": KYIV})
    # 01:20 UTC is the second 03:20 in Kyiv; the first 03:45 (00:45 UTC) is the latest slot.
    assert latest_slot(hourly, D(2026, 10, 24), D(2026, 10, 25, 1, 20)) == D(2026, 10, 25, 0, 45)
    assert latest_slot(hourly, D(2026, 10, 24), D(2026, 10, 25, 2, 0)) == D(2026, 10, 25, 2, 0)


def test_instant_of_a_missing_wall_time_is_the_jump() -> None:
    zone = ZoneInfo(KYIV)
    assert instant_of(D(2026, 3, 29, 3, 0), zone) == D(2026, 3, 29, 1, 0)
    assert instant_of(D(2026, 3, 29, 3, 59), zone) == D(2026, 3, 29, 1, 0)
    assert instant_of(D(2026, 10, 25, 3, 30), zone) == D(2026, 10, 25, 0, 30)
    # Samoa skipped 30 December 2011 entirely.
    assert instant_of(D(2011, 12, 30, 12), ZoneInfo("Pacific/Apia")) == D(2011, 12, 30, 10)


# -- properties ---------------------------------------------------------------------------------

ZONES = [
    "UTC", KYIV, "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Apia",
    "Antarctica/Troll", "America/Santiago",
]  # fmt: skip
CRONS = ["*/10 9-17 * * mon-fri", "0 * * * *", "30 2 * * *", "15,45 1-3 * * 0", "0 0 29 2 *"]
times = st.times().map(lambda t: f"{t:%H:%M}")
# Samoa's skipped day (2011-12-30) and a year of DST changes elsewhere.
WINTER_2011 = st.datetimes(D(2011, 12, 20), D(2012, 1, 10))
SUMMER_2026 = st.datetimes(D(2026, 3, 1), D(2026, 11, 1))


def _schedules() -> st.SearchStrategy[dict[str, Any]]:
    zone = st.sampled_from(ZONES)
    return st.one_of(
        st.builds(
            lambda m, z: {"type": "periodic", "frequency": "hourly", "minute": m, "timezone": z},
            st.integers(0, 59), zone,
        ),
        st.builds(
            lambda t, z: {"type": "periodic", "frequency": "daily", "time": t, "timezone": z},
            times, zone,
        ),
        st.builds(
            lambda d, t, z: {
                "type": "periodic", "frequency": "weekly", "days": d, "time": t, "timezone": z,
            },
            st.lists(st.sampled_from(DAYS), min_size=1, unique=True), times, zone,
        ),
        st.builds(
            lambda a, b, i, z: {
                "type": "regular", "start_time": a, "end_time": b, "interval": i, "timezone": z,
            },
            times, times, st.sampled_from(schedules.INTERVALS), zone,
        ).filter(lambda raw: raw["start_time"] != raw["end_time"]),
        st.builds(
            lambda e, z: {"type": "cron", "expression": e, "timezone": z},
            st.sampled_from(CRONS), zone,
        ),
        st.builds(
            lambda at, z: {"type": "once", "at": f"{at:%Y-%m-%dT%H:%M}", "timezone": z},
            WINTER_2011 | SUMMER_2026,
            zone,
        ),
    )  # fmt: skip


def wall_matches(schedule: Schedule, wall: D) -> bool:
    """The schedule's definition, written independently of the code under test."""
    if isinstance(schedule, Once):
        return wall == schedule.at
    if isinstance(schedule, Cron):
        return bool(croniter.match(schedule.standard, wall))
    if isinstance(schedule, Periodic):
        if schedule.frequency == "hourly":
            return wall.minute == schedule.minute
        on_day = schedule.frequency == "daily" or wall.weekday() in schedule.days
        return on_day and wall.time() == schedule.time
    assert isinstance(schedule, Regular)
    for day in (wall.date(), wall.date() - dt.timedelta(days=1)):
        start = D.combine(day, schedule.start_time)
        end_day = day if schedule.end_time > schedule.start_time else day + dt.timedelta(days=1)
        end = D.combine(end_day, schedule.end_time)
        step = dt.timedelta(minutes=schedule.interval)
        if start <= wall <= end and (wall - start) % step == dt.timedelta(0):
            return True
    return False


def expected_slots(schedule: Schedule, after: D, until: D) -> list[D]:
    """Brute force: every wall-clock minute around the range, kept if the schedule matches it."""
    zone = schedule.zone
    # Wall times outside the range fire inside it only in a repeated hour (at most 2 h in ZONES).
    wall = wall_time(after, zone).replace(second=0, microsecond=0) - dt.timedelta(hours=3)
    end = wall_time(until, zone) + dt.timedelta(hours=3)
    found = set()
    while wall <= end:
        if wall_matches(schedule, wall):
            instant = instant_of(wall, zone)
            if after < instant <= until:
                found.add(instant)
        wall += dt.timedelta(minutes=1)
    return sorted(found)


@settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    raw=_schedules(),
    after=WINTER_2011 | SUMMER_2026,
    span=st.timedeltas(dt.timedelta(0), dt.timedelta(hours=40)),
)
def test_slots_match_a_brute_force_of_the_definition(
    raw: dict[str, Any], after: D, span: dt.timedelta
) -> None:
    schedule = parse_schedule(raw)
    until = after + span
    found = slots_between(schedule, after, until)
    assert all(a < b for a, b in itertools.pairwise(found))  # strictly increasing
    assert all(after < slot <= until for slot in found)
    assert found == expected_slots(schedule, after, until)
    assert latest_slot(schedule, after, until) == (found[-1] if found else None)


@settings(max_examples=80, deadline=None, database=None)
@given(
    raw=_schedules(),
    after=WINTER_2011 | SUMMER_2026,
    first=st.timedeltas(dt.timedelta(0), dt.timedelta(days=3)),
    second=st.timedeltas(dt.timedelta(0), dt.timedelta(days=3)),
)
def test_slots_split_and_resume_consistently(
    raw: dict[str, Any], after: D, first: dt.timedelta, second: dt.timedelta
) -> None:
    schedule = parse_schedule(raw)
    middle, until = after + first, after + first + second
    whole = slots_between(schedule, after, until)
    assert whole == slots_between(schedule, after, middle) + slots_between(schedule, middle, until)
    assert next_runs(schedule, after, 4) == whole[:4] or len(whole) < 4
    assert parse_schedule(schedule.to_dict()) == schedule  # stored form round-trips
    for slot in whole:  # firing at a slot's instant picks that slot
        assert latest_slot(schedule, after, slot) == slot


# -- validation, actions, words -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        ("daily", ("schedule must be an object",)),
        ({"type": "daily"}, ("'type'", "manual, once, periodic, regular, cron", "'daily'")),
        ({"type": "manual", "intervall": 5}, ("unknown schedule field 'intervall'", "interval")),
        ({"type": "periodic"}, ("'frequency'", "hourly, daily, weekly")),
        ({"type": "periodic", "frequency": "hourly", "minute": 60}, ("'minute'", "0 to 59")),
        ({"type": "periodic", "frequency": "daily"}, ("'time'", "HH:MM")),
        ({"type": "periodic", "frequency": "daily", "time": "24:00"}, ("'time'", "'24:00'")),
        ({"type": "periodic", "frequency": "weekly", "time": "05:00"}, ("'days'", "mon, tue")),
        (
            {"type": "periodic", "frequency": "weekly", "time": "05:00", "days": ["mon", "fun"]},
            ("'days'", "'fun'"),
        ),
        (
            {"type": "regular", "start_time": "05:00", "end_time": "23:00", "interval": 10},
            ("'interval'", "5, 15, 30, 60"),
        ),
        (
            {"type": "regular", "start_time": "05:00", "end_time": "05:00", "interval": 15},
            ("'end_time'", "other than the start"),
        ),
        ({"type": "once", "at": "tomorrow"}, ("'at'", "2026-12-01T09:30")),
        ({"type": "cron", "expression": "61 * * * *"}, ("'expression'", "5 fields")),
        ({"type": "cron", "expression": "* * * * * *"}, ("'expression'", "5 fields")),
        ({"type": "cron", "expression": "R * * * *"}, ("random (R) or hashed (H)",)),
        ({"type": "cron", "expression": "0 0 31 2 *"}, ("never matches",)),
        ({"type": "manual", "timezone": "Mars/Olympus"}, ("'timezone'", "IANA", "Europe/Kyiv")),
        ({"type": "manual", "enabled": "yes"}, ("'enabled'", "true or false")),
        ({"type": "manual", "options": [1]}, ("'options'", "object")),
        ({"type": "manual", "options": {"x": float("nan")}}, ("'options'",)),
        ({"type": "manual", "action": ""}, ("'action'",)),
        (
            {"type": "periodic", "frequency": "daily", "time": "05:00", "minute": 5},
            ("'minute' does not apply to daily schedules", "they use: time"),
        ),
    ],
)
def test_invalid_schedules_name_the_field_and_the_allowed_values(
    raw: Any, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_schedule(raw, strict=True)
    for fragment in fragments:
        assert fragment in caught.value.message


def test_stored_schedules_are_read_leniently() -> None:
    merged = {
        "type": "regular",
        "start_time": "05:00",
        "end_time": "23:00",
        "interval": 60,
        "time": "05:00",
    }
    assert parse_schedule(merged).to_dict() == {
        "type": "regular", "start_time": "05:00", "end_time": "23:00", "interval": 60,
    }  # fmt: skip
    assert parse_schedule(None) == schedules.Manual()


def test_resolve_action() -> None:
    plain = parse_schedule({"type": "cron", "expression": "@daily"})
    assert resolve_action(plain, ["make", "publish"], "report") == "make"
    assert resolve_action(plain, ["build"], "digest") == "build"
    named = parse_schedule({"type": "cron", "expression": "@daily", "action": "Publish"})
    assert resolve_action(named, ["make", "publish"], "report") == "publish"
    with pytest.raises(ValidationError, match=r"'action' is required.*use one of a, b"):
        resolve_action(plain, ["a", "b"], "x")
    with pytest.raises(
        ValidationError, match=r"'action' must be one of worker 'digest'.*\(build\)"
    ):
        resolve_action(named, ["build"], "digest")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"type": "manual"}, "Manual: runs only when started by hand"),
        (
            {"type": "once", "at": "2026-12-01T09:30", "timezone": KYIV},
            "Once at 2026-12-01 09:30 (Europe/Kyiv)",
        ),
        (
            {"type": "periodic", "frequency": "hourly", "minute": 15},
            "Every hour at minute 15 (UTC)",
        ),
        ({"type": "periodic", "frequency": "daily", "time": "05:00"}, "Every day at 05:00 (UTC)"),
        (
            {"type": "periodic", "frequency": "weekly", "days": "fri,mon,tue", "time": "05:00"},
            "Every Monday, Tuesday and Friday at 05:00 (UTC)",
        ),
        (
            {
                "type": "regular",
                "start_time": "05:00",
                "end_time": "23:00",
                "interval": 15,
                "timezone": KYIV,
            },
            "Every 15 minutes between 05:00 and 23:00 (Europe/Kyiv)",
        ),
        (
            {
                "type": "regular",
                "start_time": "05:00",
                "end_time": "23:00",
                "interval": 60,
                "enabled": False,
            },
            "Every hour between 05:00 and 23:00 (UTC) - disabled",
        ),
        (
            {"type": "cron", "expression": "*/10 9-17 * * mon-fri", "timezone": KYIV},
            "Every 10 minutes, between 09:00 and 17:59, Monday through Friday (Europe/Kyiv)",
        ),
        ({"type": "cron", "expression": "@hourly"}, "Every hour (UTC)"),
    ],
)
def test_describe(raw: dict[str, Any], words: str) -> None:
    assert describe(parse_schedule(raw)) == words


def test_slot_key() -> None:
    assert (
        slot_key("report", "make", D(2026, 12, 1, 7, 30))
        == "sched:report:make:2026-12-01T07:30:00Z"
    )
    aware = D(2026, 12, 1, 9, 30, tzinfo=ZoneInfo(KYIV))
    assert slot_key("report", "make", aware) == "sched:report:make:2026-12-01T07:30:00Z"
    with pytest.raises(ValidationError, match="longer than 255"):
        slot_key("report", "x" * 250, D(2026, 12, 1))


def test_due_slot_fires_the_latest_missed_slot_once_and_never_an_older_one() -> None:
    every_15 = parse_schedule({"type": "cron", "expression": "*/15 * * * *"})
    first = due_slot(every_15, None, D(2026, 5, 1, 10, 7))
    assert (first.slot, first.state, first.changed) == (
        None,
        {"since": "2026-05-01T10:07:00Z"},
        True,
    )
    down = due_slot(every_15, first.state, D(2026, 5, 1, 13, 7))  # three hours without a runner
    assert (down.slot, down.skipped) == (D(2026, 5, 1, 13, 0), True)
    assert down.state == {"since": "2026-05-01T10:07:00Z", "last_slot": "2026-05-01T13:00:00Z"}
    assert not due_slot(every_15, down.state, D(2026, 5, 1, 13, 14)).changed
    assert due_slot(every_15, down.state, D(2026, 5, 1, 12, 50)).slot is None  # a lagging clock
    on_time = due_slot(every_15, down.state, D(2026, 5, 1, 13, 15))
    assert (on_time.slot, on_time.skipped) == (D(2026, 5, 1, 13, 15), False)


# -- the store's unique insert ------------------------------------------------------------------


def _new(key: str, identifier: str = "mailer", action: str = "send") -> NewTask:
    return NewTask(identifier=identifier, action=action, options={"key": key}, unique_key=key)


def test_insert_unique_tasks_creates_each_key_once(app: Stask) -> None:
    first = app.store.task_writes.insert_unique_tasks([_new("a"), _new("b")])
    assert len(first) == 2
    again = app.store.task_writes.insert_unique_tasks([_new("b"), _new("c"), _new("c")])
    assert len(again) == 1
    assert app.get(again[0]).unique_key == "c"
    assert app.get(again[0]).options == {"key": "c"}
    assert app.store.task_reads.queued_count() == 3  # queue rows only for tasks created
    assert app.store.task_writes.insert_unique_tasks([]) == []
    with pytest.raises(ValueError, match="unique_key"):
        app.store.task_writes.insert_unique_tasks(
            [NewTask(identifier="mailer", action="send", options={})]
        )


def test_insert_unique_tasks_from_threads(app: Stask, make_store: Any) -> None:
    stores: list[Store] = [make_store() for _ in range(3)]
    start = threading.Barrier(len(stores))

    def insert(store: Store) -> list[int]:
        start.wait(10)
        return store.task_writes.insert_unique_tasks([_new(f"k{i}") for i in range(20)])

    with ThreadPoolExecutor(len(stores)) as pool:
        created = list(pool.map(insert, stores))
    assert sum(len(ids) for ids in created) == 20
    assert app.count() == 20


# -- firing exactly once, with a clock the test controls ----------------------------------------


@pytest.fixture
def runners(app: Stask, db_url: str, storage: Path) -> Iterator[list[Stask]]:
    """Three runner processes' worth of Stask apps on one database, with the schedule workers."""
    made = [
        Stask(database_url=db_url, storage=storage, workers=RUNNER_WORKERS, use_entry_points=False)
        for _ in range(3)
    ]
    made[0].discover()
    yield made
    for runner in made:
        runner.close()


def fire_together(runners: list[Stask], now: D) -> list[list[int]]:
    """Every runner calls enqueue_due_schedules(now) at the same moment, on its own thread."""
    start = threading.Barrier(len(runners))

    def fire(runner: Stask) -> list[int]:
        start.wait(10)
        return runner.enqueue_due_schedules(now)

    with ThreadPoolExecutor(len(runners)) as pool:
        return list(pool.map(fire, runners))


def test_three_runners_create_exactly_one_task_per_slot(runners: list[Stask]) -> None:
    t0 = D(2030, 3, 4, 7, 58)  # a Monday, 09:58 in Kyiv
    every_15 = {
        "type": "regular", "start_time": "09:00", "end_time": "18:00", "interval": 15,
        "timezone": KYIV, "options": {"format": "pdf"},
    }  # fmt: skip
    runners[0].set_schedule("report", every_15, now=t0)
    runners[0].set_schedule(
        "digest",
        {"type": "periodic", "frequency": "daily", "time": "12:00", "timezone": KYIV},
        now=t0,
    )
    clock = [t0 + dt.timedelta(minutes=4 * step) for step in range(16)]  # 09:58 .. 10:58 Kyiv
    clock += [D(2030, 3, 4, 12, 1), D(2030, 3, 4, 12, 1), D(2030, 3, 4, 12, 10)]  # down 3 hours
    clock += [D(2030, 3, 4, 11, 59)]  # a runner whose clock lags: nothing older may fire
    created: list[int] = []
    for now in clock:
        per_runner = fire_together(runners, now)
        ids = [task_id for found in per_runner for task_id in found]
        assert len(ids) == len(set(ids))  # no id reported by two runners
        created += ids

    report = runners[0].list(worker="report", limit=100)
    assert sorted(task.id for task in report) == sorted(
        task_id for task_id in created if runners[0].get(task_id).identifier == "report"
    )
    keys = Counter(task.unique_key for task in report)
    assert all(count == 1 for count in keys.values())
    zone = ZoneInfo(KYIV)
    fired = sorted(
        f"{task.run_at.replace(tzinfo=dt.UTC).astimezone(zone):%H:%M}" for task in report
    )
    # 10:00 .. 10:45 on time; 10:58 + 3 hours down: only 14:00 (13:00 .. 13:45 skipped); then 14:00
    # again is not refired at 14:10, and the lagging 13:59 clock fires nothing older.
    assert fired == ["10:00", "10:15", "10:30", "10:45", "14:00"]
    for task in report:
        assert task.action == "make"  # the worker's make action by default
        assert task.options == {"format": "pdf"}
        assert task.started_by == "schedule"
        assert task.unique_key == slot_key("report", "make", task.run_at)
    (digest,) = runners[0].list(worker="digest")
    assert (digest.action, f"{digest.run_at:%H:%M}") == ("build", "10:00")  # 12:00 Kyiv
    skipped = [entry.message for entry in runners[0].get_last_logs(max(t.id for t in report))]
    assert skipped == ["Scheduled run for 2030-03-04 14:00 EET; earlier missed runs were skipped"]
    state = runners[0].stored_settings("report")["schedule_state"]
    assert state == {"since": "2030-03-04T07:58:00Z", "last_slot": "2030-03-04T12:00:00Z"}


def test_the_unique_key_holds_when_the_state_is_stale(runners: list[Stask]) -> None:
    runner = runners[0]
    t0 = D(2030, 3, 4, 10, 0)
    runner.set_schedule("digest", {"type": "cron", "expression": "0 * * * *"}, now=t0)
    (task_id,) = runner.enqueue_due_schedules(D(2030, 3, 4, 11, 30))
    runner.update_config("digest", {"schedule_state.last_slot": "2030-03-04T10:00:00Z"})
    assert runner.enqueue_due_schedules(D(2030, 3, 4, 11, 30)) == []  # same slot, key taken
    assert runner.count(worker="digest") == 1
    assert runner.get(task_id).unique_key == "sched:digest:build:2030-03-04T11:00:00Z"


def test_what_does_not_fire(runners: list[Stask], caplog: pytest.LogCaptureFixture) -> None:
    runner = runners[0]
    t0, later = D(2030, 3, 4, 10, 0), D(2030, 3, 5, 10, 0)
    daily = {"type": "periodic", "frequency": "daily", "time": "05:00"}
    runner.set_schedule("digest", {**daily, "enabled": False}, now=t0)
    runner.set_schedule("mailer", daily, now=t0)
    runner.deactivate("mailer")
    runner.set_schedule("report", daily, now=t0)
    # Stored by hand: an action the worker cannot resolve, and a broken schedule.
    runner.update_config(
        "inventory", {"schedule": daily, "schedule_state.since": "2030-03-04T10:00:00Z"}
    )
    runner.update_config("report", {"schedule": {**daily, "interval": "often", "type": "regular"}})
    with caplog.at_level(logging.WARNING, logger="stask"):
        assert runner.enqueue_due_schedules(later) == []
    assert (
        "schedule of worker inventory skipped: schedule field 'action' is required" in caplog.text
    )
    assert "schedule of worker report skipped: schedule field 'start_time'" in caplog.text
    runner.set_schedule("report", daily, now=t0)
    assert len(runner.enqueue_due_schedules(later)) == 1  # a valid schedule fires again


def test_a_schedule_seen_without_state_starts_counting_then(runners: list[Stask]) -> None:
    runner = runners[0]
    runner.update_config("digest", {"schedule": {"type": "cron", "expression": "*/5 * * * *"}})
    assert runner.enqueue_due_schedules(D(2030, 3, 4, 10, 2)) == []  # no storm from the past
    assert runner.stored_settings("digest")["schedule_state"] == {"since": "2030-03-04T10:02:00Z"}
    assert len(runner.enqueue_due_schedules(D(2030, 3, 4, 10, 5))) == 1


def test_set_schedule_validates_before_storing(runners: list[Stask]) -> None:
    runner = runners[0]
    with pytest.raises(ValidationError, match="'action' is required"):
        runner.set_schedule("inventory", {"type": "cron", "expression": "@daily"})
    with pytest.raises(ValidationError, match="'action' must be one of"):
        runner.set_schedule("digest", {"type": "cron", "expression": "@daily", "action": "fly"})
    assert runner.schedule("inventory") == schedules.Manual()
    assert "schedule" not in runner.stored_settings("digest")
    runner.set_schedule("inventory", {"type": "manual"})  # manual needs no action
    stored = runner.set_schedule(
        "inventory", {"type": "cron", "expression": "@daily", "action": "Sync-Stock"}
    )
    assert runner.schedule("inventory") == stored
    assert runner.get_config("inventory", "schedule") == {
        "type": "cron", "expression": "@daily", "action": "sync_stock",
    }  # fmt: skip


def test_set_schedule_refuses_a_once_that_has_passed(runners: list[Stask]) -> None:
    runner = runners[0]
    once = {"type": "once", "at": "2030-03-04T12:30", "timezone": KYIV, "action": "make"}
    with pytest.raises(ValidationError, match=r"Once at 2030-03-04 12:30 \(Europe/Kyiv\) has"):
        runner.set_schedule("report", once, now=D(2030, 3, 4, 10, 30))  # 12:30 in Kyiv
    assert "schedule" not in runner.stored_settings("report")  # nothing stored
    runner.set_schedule("report", once, now=D(2030, 3, 4, 10, 29))
    assert runner.enqueue_due_schedules(D(2030, 3, 4, 10, 29)) == []
    assert len(runner.enqueue_due_schedules(D(2030, 3, 4, 10, 30))) == 1


# -- the command line ---------------------------------------------------------------------------


def test_cli_schedule_set_list_and_run_due(runners: list[Stask], cli_env: dict[str, str]) -> None:
    env = {**cli_env, "STASK_WORKERS": ",".join(RUNNER_WORKERS)}
    done = stask(
        env, "schedule", "set", "report", "regular", "--start", "05:00", "--end", "25:00", code=2
    )
    assert_one_line_error(done, "--end", "HH:MM", "'25:00'")
    done = stask(env, "schedule", "set", "inventory", "daily", "--time", "05:00", code=2)
    assert_one_line_error(done, "--action", "sync_stock")
    done = stask(env, "schedule", "set", "report", "once", "--at", "2020-01-01T10:00", code=2)
    assert_one_line_error(done, "Once at 2020-01-01 10:00 (UTC)", "already passed", "later time")
    assert "schedule" not in runners[0].stored_settings("report")  # nothing stored

    done = stask(
        env, "schedule", "set", "report", "weekly", "--days", "mon,thu", "--time", "05:00",
        "--timezone", KYIV, "--action", "publish", "-o", "to=all", "-o", "pages=3",
    )  # fmt: skip
    assert done.stdout.startswith(
        "Schedule of report: Every Monday and Thursday at 05:00 (Europe/Kyiv)"
    )
    stask(env, "schedule", "set", "digest", "cron", "--cron", "0 6 * * *")
    listed = {
        entry["identifier"]: entry
        for entry in json.loads(stask(env, "schedule", "list", "--json").stdout)
    }
    report = listed["report"]
    assert report["schedule"] == {
        "type": "periodic", "frequency": "weekly", "time": "05:00", "days": ["mon", "thu"],
        "timezone": KYIV, "action": "publish", "options": {"to": "all", "pages": 3},
    }  # fmt: skip
    assert report["action"] == "publish"
    assert len(report["next_runs"]) == 3
    assert all(
        run.endswith(("+02:00", "+03:00")) and "T05:00:00" in run for run in report["next_runs"]
    )
    assert listed["mailer"]["description"] == "Manual: runs only when started by hand"
    assert listed["mailer"]["next_runs"] == []
    table = stask(env, "schedule", "list").stdout
    assert "Every Monday and Thursday at 05:00 (Europe/Kyiv)" in table
    assert "At 06:00 (UTC)" in table

    # 2031-01-06 is a Monday: 05:00 in Kyiv is 03:00 UTC.
    due = stask(env, "schedule", "run-due", "--now", "2031-01-06T06:30:00Z", "--json").stdout
    created = {task["identifier"]: task for task in json.loads(due)}
    assert set(created) == {"report", "digest"}
    assert created["report"]["unique_key"] == "sched:report:publish:2031-01-06T03:00:00Z"
    assert created["report"]["options"] == {"to": "all", "pages": 3}
    assert created["digest"]["action"] == "build"
    again = stask(env, "schedule", "run-due", "--now", "2031-01-06T06:30:00Z").stdout
    assert again.strip() == "No schedule is due."
    text = stask(env, "schedule", "run-due", "--now", "2031-01-07T06:30:00Z").stdout
    assert text.startswith("Created 1 task(s): #")
    assert text.strip().endswith("digest build")
