"""Statistics on every database: the roll-up behind its watermark, and the seed's summary,
per-worker figures and alerts, checked against tasks of known outcomes and durations."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import delete, event, insert, select

from stask import Stask
from stask.core.stats import Statistics, duration_quantile_ms
from stask.db.stats import ALL_TIME, BUCKET_COUNT, DURATION_BOUNDS_MS, StatsStore, Totals
from stask.db.store import Store
from stask.db.tables import state, stats, tasks
from stask.models import Status, utcnow
from stask.settings import Settings

NOW = dt.datetime(2025, 1, 16, 10, 30)
MIB = 1024 * 1024
GRACE = dt.timedelta(seconds=30)


def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(2025, 1, 16, hour, minute, second)


def ended(
    identifier: str,
    status: Status,
    finished_at: dt.datetime | None,
    duration_ms: int | None = None,
    memory: int | None = None,
) -> dict[str, Any]:
    """The row of a task that ended as ``status`` (or runs, for RUNNING) at ``finished_at``."""
    return {
        "identifier": identifier,
        "action": "sync_stock",
        "status": status.code,
        "priority": 5,
        "queue": "default",
        "meta": {},
        "run_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
        "finished_at": finished_at,
        "duration_ms": duration_ms,
        "peak_memory": memory,
    }


def insert_tasks(store: Store, rows: Sequence[dict[str, Any]]) -> None:
    with store.writing() as conn:
        conn.execute(insert(tasks), list(rows))


def known_tasks() -> list[dict[str, Any]]:
    """Two workers over two hours (plus one task just before and one in the live tail)."""
    done, failed = Status.COMPLETED, Status.FAILED
    rows = [ended("inventory", done, at(9, 10, i), 200, 10 * MIB) for i in range(8)]
    rows += [ended("inventory", failed, at(9, 20, i), 2000, 30 * MIB) for i in range(2)]
    rows += [ended("inventory", done, at(10, 5, i), 40, 20 * MIB) for i in range(10)]
    rows += [ended("mailer", done, at(9, 40, i), 300, 1000) for i in range(2)]
    rows += [ended("mailer", done, at(9, 41), 700, 1000)]
    rows += [ended("mailer", Status.CANCELLED, at(9, 50))]  # cancelled before it started
    rows += [ended("mailer", done, at(10, 29, 50), 700, 1000)]  # after NOW - grace: the tail
    rows += [ended("mailer", failed, at(7, 59, 59), 100, 1000)]  # before a 2-hour period
    rows += [ended("inventory", Status.RUNNING, None)]
    return rows


@pytest.fixture
def known(app: Stask) -> Stask:
    insert_tasks(app.store, known_tasks())
    app.create_many([{"identifier": "inventory", "action": "sync_stock"}] * 2)  # queued
    return app


def statistics(app: Stask, **settings: Any) -> Statistics:
    return Statistics(app.store, Settings(database_url=app.settings.database_url, **settings))


# -- the seed's shape, exactly -----------------------------------------------------------------


def test_summary_counts_and_performance(known: Stask) -> None:
    summary = statistics(known).summary(2, now=NOW)
    # Memory: inventory 8 x 10 + 2 x 30 + 10 x 20 MiB, mailer 4 x 1000 B; 24 tasks recorded it.
    assert summary == {
        "period": {"hours": 2, "from": "2025-01-16T08:00:00Z", "to": "2025-01-16T10:30:00Z"},
        "tasks": {
            "total": 28,
            "completed": 22,
            "failed": 2,
            "cancelled": 1,
            "running": 1,
            "queued": 2,
            "queued_capped": False,
        },
        "performance": {
            "success_rate": 91.67,  # 22 / 24
            "average_duration": 0.33,  # 8,000 ms / 24
            # 24 durations: 10 <= 50, 8 <= 250, 2 <= 500, 2 <= 1000, 2 <= 2500 ms; rank 22.8
            # falls in (1000, 2500]: 1000 + 1500 * 0.8 / 2 = 1600 ms.
            "p95_duration": 1.6,
            "average_memory": (340 * MIB + 4000) // 24,
        },
    }


def test_summary_period_takes_whole_hours(known: Stask) -> None:
    three = statistics(known).summary(3, now=NOW)
    assert three["period"]["from"] == "2025-01-16T07:00:00Z"
    assert three["tasks"]["failed"] == 3  # the mailer's 07:59:59 failure is in the period now
    one = statistics(known).summary(1, now=NOW)
    assert one["period"]["from"] == "2025-01-16T09:00:00Z"
    assert one["tasks"]["completed"] == 22


@pytest.mark.parametrize(("asked", "clamped"), [(0, 1), (-5, 1), (10_000, 8760)])
def test_summary_hours_are_clamped(app: Stask, asked: int, clamped: int) -> None:
    summary = statistics(app).summary(asked, now=NOW)
    assert summary["period"]["hours"] == clamped
    start = dt.datetime(2025, 1, 16, 10) - dt.timedelta(hours=clamped)
    assert summary["period"]["from"] == start.isoformat() + "Z"


def test_summary_of_nothing(app: Stask) -> None:
    summary = statistics(app).summary(24, now=NOW)
    assert summary["tasks"]["total"] == 0
    assert summary["performance"] == {
        "success_rate": None,
        "average_duration": None,
        "p95_duration": None,
        "average_memory": None,
    }


def test_workers_per_identifier(known: Stask) -> None:
    found = statistics(known).workers(2, now=NOW)
    assert found == {
        "inventory": {
            "identifier": "inventory",
            "total_tasks": 20,
            "completed": 18,
            "failed": 2,
            "cancelled": 0,
            "success_rate": 90.0,
            "average_duration": 0.3,  # 6,000 ms / 20
            "p95_duration": 1.75,  # rank 19 of 20: 1000 + 1500 * (19 - 18) / 2
            "average_memory": 17 * MIB,  # 340 MiB / 20
            "last_execution": "2025-01-16T10:05:09Z",
        },
        "mailer": {
            "identifier": "mailer",
            "total_tasks": 5,
            "completed": 4,
            "failed": 0,
            "cancelled": 1,
            "success_rate": 100.0,
            "average_duration": 0.5,
            "p95_duration": 0.95,  # 2 <= 500, 2 <= 1000 ms; rank 3.8: 500 + 500 * 1.8 / 2
            "average_memory": 1000,
            "last_execution": "2025-01-16T10:29:50Z",  # in the live tail
        },
    }
    assert set(statistics(known).workers(1, now=NOW + dt.timedelta(hours=3))) == set()


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [0] * BUCKET_COUNT
    assert duration_quantile_ms(buckets, 0.95) is None
    buckets[0] = 20  # all in [0, 5] ms
    assert duration_quantile_ms(buckets, 0.5) == pytest.approx(2.5)
    buckets[0], buckets[-1] = 1, 19  # above the last bound: that bound
    assert duration_quantile_ms(buckets, 0.95) == DURATION_BOUNDS_MS[-1]


# -- the roll-up ---------------------------------------------------------------------------


def rows_of(store: Store) -> dict[tuple[dt.datetime, str], Totals]:
    with store.reading() as conn:
        return {
            (row["hour"], row["identifier"]): Totals.from_row(row)
            for row in conn.execute(select(stats)).mappings()
        }


def test_summary_reads_rollups_not_the_history(known: Stask) -> None:
    figures = statistics(known)
    before = figures.summary(2, now=NOW)
    assert figures.stats.watermark() == NOW - GRACE
    rows = rows_of(known.store)
    assert rows[at(9), "inventory"].completed == 8
    assert rows[at(9), "inventory"].failed == 2
    assert rows[at(10), "inventory"].completed == 10
    assert rows[ALL_TIME, "mailer"].finished == 5  # the tail task is not rolled up yet
    assert (at(10), "mailer") not in rows
    # The rolled-up history is gone (pruned): the figures stay.
    with known.store.writing() as conn:
        conn.execute(delete(tasks).where(tasks.c.finished_at < NOW - GRACE))
    assert figures.summary(2, now=NOW) == before


def test_no_read_walks_the_history(known: Stask, dialect: str) -> None:
    """Every statement a summary (with its roll-up) runs on s_tasks is an index range: SQLite's
    plans, which without statistics are the easiest to get wrong, read back."""
    if dialect != "sqlite":
        pytest.skip("the plans of PostgreSQL and MariaDB follow their statistics")
    ran: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "s_tasks" in statement and statement.lstrip().upper().startswith("SELECT"):
            ran.append((statement, parameters))

    figures = statistics(known)
    event.listen(known.store.engine, "before_cursor_execute", record)
    try:
        figures.summary(2, now=NOW)
        figures.summary(2, now=NOW + dt.timedelta(minutes=1))
    finally:
        event.remove(known.store.engine, "before_cursor_execute", record)
    assert len(ran) >= 6
    with known.store.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        for statement, parameters in ran:
            plan = " / ".join(
                row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            )
            assert "SCAN s_tasks" not in plan, (statement, plan)
            if "finished_at" in statement:  # all but the running count (status = 50)
                assert "INDEX ix_s_tasks_finished_at" in plan, plan
            else:
                assert "ix_s_tasks_status_id (status=?)" in plan, plan


def test_refresh_twice_counts_once(known: Stask) -> None:
    figures = statistics(known)
    assert figures.refresh(NOW) == 25  # all but the tail task, finished 10 s before NOW
    before = rows_of(known.store)
    assert figures.refresh(NOW) == 0
    assert rows_of(known.store) == before
    summary = figures.summary(2, now=NOW)
    assert figures.summary(2, now=NOW) == summary
    # Later: the tail task is rolled up, and counted once, not in the rows and the tail.
    later = NOW + dt.timedelta(minutes=5)
    assert figures.refresh(later) == 1
    assert figures.summary(2, now=later)["tasks"] == summary["tasks"]
    assert rows_of(known.store)[at(10), "mailer"].completed == 1


def test_tasks_ending_after_the_watermark_count_once(app: Stask) -> None:
    figures = statistics(app)
    insert_tasks(app.store, [ended("inventory", Status.COMPLETED, at(10, 0), 100)])
    figures.refresh(NOW)
    newer = [ended("inventory", Status.FAILED, NOW - dt.timedelta(seconds=s), 100) for s in (20, 5)]
    insert_tasks(app.store, newer)
    assert figures.summary(1, now=NOW)["tasks"]["failed"] == 2  # shown at once, from the tail
    for minutes in (1, 2, 61):
        later = NOW + dt.timedelta(minutes=minutes)
        tasks_now = figures.summary(2, now=later)["tasks"]
        assert (tasks_now["completed"], tasks_now["failed"]) == (1, 2)
    assert rows_of(app.store)[ALL_TIME, "inventory"].finished == 3


def test_roll_up_jumps_over_idle_hours_in_hourly_chunks(app: Stask) -> None:
    """One transaction per hour that has finishes, whatever the gaps between them."""
    first = dt.datetime(2024, 1, 1, 0, 30)
    spread = [first, first + dt.timedelta(days=100), first + dt.timedelta(days=200, minutes=45)]
    insert_tasks(app.store, [ended("mailer", Status.COMPLETED, when, 10) for when in spread])
    store = StatsStore(app.store)
    commits: list[int] = []
    original = store._roll_up_chunk

    def counting(until: dt.datetime) -> tuple[int, bool]:
        added, done = original(until)
        commits.append(added)
        return added, done

    store._roll_up_chunk = counting  # type: ignore[method-assign]
    assert store.roll_up(NOW) == 3
    assert commits == [1, 1, 1, 0]  # three hours, then the jump to `until`
    assert store.watermark() == NOW
    hours = {hour for hour, _ in rows_of(app.store) if hour != ALL_TIME}
    assert hours == {when.replace(minute=0) for when in spread}


def test_roll_up_stops_after_its_time_budget(app: Stask) -> None:
    spread = [dt.datetime(2025, 1, 1, hour, 30) for hour in range(5)]
    insert_tasks(app.store, [ended("mailer", Status.COMPLETED, when, 10) for when in spread])
    store = StatsStore(app.store)
    assert store.roll_up(NOW, max_seconds=0) == 1  # one chunk, the rest next time
    assert store.watermark() == dt.datetime(2025, 1, 1, 1)
    assert store.roll_up(NOW) == 4


def test_an_idle_roll_up_writes_nothing(app: Stask) -> None:
    insert_tasks(app.store, [ended("mailer", Status.COMPLETED, at(9), 10)])
    store = StatsStore(app.store)
    assert store.roll_up(NOW) == 1
    with app.store.reading() as conn:
        stamped = conn.execute(select(state.c.updated_at)).scalar_one()
    assert store.roll_up(NOW + dt.timedelta(hours=1)) == 0
    with app.store.reading() as conn:
        assert conn.execute(select(state.c.updated_at)).scalar_one() == stamped


def many_hours(app: Stask, hours: int, per_hour: int) -> list[dict[str, Any]]:
    start = dt.datetime(2025, 1, 1)
    rows = [
        ended(
            ("inventory", "mailer")[i % 2],
            (Status.COMPLETED, Status.FAILED)[i % 3 == 0],
            start + dt.timedelta(hours=h, seconds=i),
            10 * i,
            i,
        )
        for h in range(hours)
        for i in range(per_hour)
    ]
    insert_tasks(app.store, rows)
    return rows


def expected_by_worker(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    found: dict[str, tuple[int, int, int]] = {}
    for row in rows:
        completed, failed, duration = found.get(row["identifier"], (0, 0, 0))
        found[row["identifier"]] = (
            completed + (row["status"] == Status.COMPLETED.code),
            failed + (row["status"] == Status.FAILED.code),
            duration + row["duration_ms"],
        )
    return found


def by_worker(found: dict[str, Totals]) -> dict[str, tuple[int, int, int]]:
    return {key: (t.completed, t.failed, t.duration_ms_sum) for key, t in found.items()}


def run_threads(*targets: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as err:  # reported by the test, not lost in the thread
                errors.append(err)

        return run

    threads = [threading.Thread(target=guarded(target)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors


def test_concurrent_roll_ups_count_each_task_once(
    app: Stask, make_store: Callable[[], Store]
) -> None:
    rows = many_hours(app, hours=60, per_hour=12)
    stores = [StatsStore(make_store()) for _ in range(3)]
    start = threading.Barrier(len(stores))
    counted: list[int] = []

    def roll(store: StatsStore) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            counted.append(store.roll_up(NOW))

        return run

    run_threads(*(roll(store) for store in stores))
    assert sum(counted) == len(rows)
    expected = expected_by_worker(rows)
    assert by_worker(StatsStore(app.store).rollups(None)) == expected
    hourly = StatsStore(app.store).rollups(dt.datetime(2024, 12, 31))
    assert by_worker(hourly) == expected
    per_hour = rows_of(app.store)
    assert all(t.finished == 6 for (hour, _), t in per_hour.items() if hour != ALL_TIME)


def test_reads_during_a_roll_up_never_count_twice(
    app: Stask, make_store: Callable[[], Store]
) -> None:
    rows = many_hours(app, hours=80, per_hour=4)
    expected = expected_by_worker(rows)
    roller, reader = StatsStore(make_store()), StatsStore(make_store())
    done = threading.Event()
    seen: list[dict[str, tuple[int, int, int]]] = []
    StatsStore(app.store).roll_up(dt.datetime(2025, 1, 1))  # the watermark, at the start

    def roll() -> None:
        try:
            roller.roll_up(NOW)
        finally:
            done.set()

    def read() -> None:
        while not done.is_set():
            seen.append(by_worker(reader.finished_since(None)))

    run_threads(roll, read)
    assert seen
    assert all(found == expected for found in seen)
    assert by_worker(reader.finished_since(None)) == expected


# -- the real path -------------------------------------------------------------------------


def test_tasks_run_by_stask_show_at_once(app: Stask) -> None:
    app.create_many([{"identifier": "inventory", "action": "sync_stock"}] * 3)
    app.create("inventory", "give_up")
    app.create("inventory", "sync_stock", run_at=utcnow() + dt.timedelta(hours=1))
    assert app.process_pending() == 4
    figures = statistics(app)
    summary = figures.summary(1)
    assert summary["tasks"] == {
        "total": 5,
        "completed": 3,
        "failed": 1,
        "cancelled": 0,
        "running": 0,
        "queued": 1,
        "queued_capped": False,
    }
    assert summary["performance"]["success_rate"] == 75.0
    assert summary["performance"]["average_duration"] is not None
    worker = figures.workers(1)["inventory"]
    assert worker["total_tasks"] == 4
    assert worker["last_execution"] is not None
    assert figures.stats.watermark() is not None
    assert rows_of(app.store) == {}  # all in the live tail: nothing old enough to roll up


def test_queued_count_is_capped(app: Stask) -> None:
    app.create_many([{"identifier": "inventory", "action": "sync_stock"}] * 5)
    store = StatsStore(app.store)
    assert store.queued(cap=5) == (5, False)
    assert store.queued(cap=3) == (3, True)
    assert store.queued() == (5, False)


# -- alerts ------------------------------------------------------------------------------


THRESHOLDS = {
    "alert_success_rate": 80.0,
    "alert_average_duration": 2.0,
    "alert_average_memory": 1000.0,
}


def test_alerts_fire_past_their_thresholds_not_at_them(app: Stask) -> None:
    figures = statistics(app, **THRESHOLDS)
    done, failed = Status.COMPLETED, Status.FAILED
    # Exactly at every threshold: 80 % success, 2.0 s and 1000 B on average.
    rows = [ended("inventory", done, at(9, i), 2000, 1000) for i in range(8)]
    rows += [ended("inventory", failed, at(9, 10 + i), 2000, 1000) for i in range(2)]
    insert_tasks(app.store, rows)
    assert figures.alerts(2, now=NOW) == []

    # Tasks end after the watermark the first call left (NOW - grace).
    insert_tasks(app.store, [ended("inventory", failed, NOW)])  # 8 / 11
    assert figures.alerts(2, now=NOW + dt.timedelta(minutes=1)) == [
        {
            "type": "low_success_rate",
            "severity": "warning",
            "message": "Task success rate is below threshold: 72.73%",
            "value": 72.73,
            "threshold": 80.0,
        },
        {
            "type": "low_success_rate",
            "severity": "warning",
            "message": "Worker inventory: task success rate is below threshold: 72.73%",
            "value": 72.73,
            "threshold": 80.0,
            "identifier": "inventory",
        },
    ]


def test_alerts_turn_critical_at_twice_the_threshold(app: Stask) -> None:
    figures = statistics(app, **THRESHOLDS)
    done, failed = Status.COMPLETED, Status.FAILED
    # The mailer at exactly twice each threshold: warnings, not yet critical.
    rows = [ended("mailer", done, at(9, i), 4000, 2000) for i in range(3)]
    rows += [ended("mailer", failed, at(9, 10 + i)) for i in range(2)]  # 60 %: 40 % failed
    insert_tasks(app.store, rows)
    assert [(a["type"], a["severity"]) for a in figures.alerts(2, now=NOW)] == [
        ("low_success_rate", "warning"),
        ("high_average_duration", "warning"),
        ("high_memory_usage", "warning"),
    ] * 2
    # Just past twice: critical, for the mailer and (being all there is) overall.
    rows = [ended("mailer", failed, NOW), ended("mailer", done, NOW, 4003, 2004)]
    insert_tasks(app.store, rows)
    raised = figures.alerts(2, now=NOW + dt.timedelta(minutes=1))
    assert [(a["type"], a["severity"], a.get("identifier")) for a in raised] == [
        ("low_success_rate", "critical", None),
        ("high_average_duration", "critical", None),
        ("high_memory_usage", "critical", None),
        ("low_success_rate", "critical", "mailer"),
        ("high_average_duration", "critical", "mailer"),
        ("high_memory_usage", "critical", "mailer"),
    ]
    assert [(a["value"], a["threshold"]) for a in raised[:3]] == [
        (57.14, 80.0),  # 4 / 7
        (4.0, 2.0),  # 16,003 ms / 4 = 4.00075 s, shown rounded
        (2001, 1000.0),  # 8,004 // 4
    ]
    assert raised[4]["message"] == ("Worker mailer: task average duration is above threshold: 4 s")


def test_alerts_of_one_worker_name_it(app: Stask) -> None:
    figures = statistics(app, **THRESHOLDS)
    rows = [ended("inventory", Status.COMPLETED, at(9, i), 100, 10) for i in range(20)]
    rows += [ended("mailer", Status.COMPLETED, at(9, 30), 5000, 10)]
    insert_tasks(app.store, rows)
    raised = figures.alerts(2, now=NOW)
    assert raised == [
        {
            "type": "high_average_duration",
            "severity": "critical",
            "message": "Worker mailer: task average duration is above threshold: 5 s",
            "value": 5.0,
            "threshold": 2.0,
            "identifier": "mailer",
        }
    ]


def test_throughput_has_a_point_per_hour_then_per_day(known: Stask) -> None:
    from stask.core.overview import throughput

    hourly = throughput(known, 3, now=NOW)
    assert [p["hour"] for p in hourly] == [
        "2025-01-16T08:00:00Z",
        "2025-01-16T09:00:00Z",
        "2025-01-16T10:00:00Z",
    ]
    # 09:00: inventory 8 done, 2 failed; mailer 3 done, 1 cancelled. 10:00: inventory 10 done,
    # and the mailer task at 10:29:50, inside the grace period, added from the live tail.
    counts = [(p["completed"], p["failed"], p["cancelled"]) for p in hourly]
    assert counts == [(0, 0, 0), (11, 2, 1), (11, 0, 0)]
    daily = throughput(known, 72, now=NOW)
    assert [p["hour"] for p in daily] == [
        "2025-01-13T11:00:00Z",
        "2025-01-14T11:00:00Z",
        "2025-01-15T11:00:00Z",
    ]
    counts = [(p["completed"], p["failed"], p["cancelled"]) for p in daily]
    assert counts == [(0, 0, 0), (0, 0, 0), (22, 3, 1)]  # 07:59:59's failure is in the last day


def test_report_is_summary_workers_and_alerts_from_one_read(known: Stask) -> None:
    figures = statistics(known, alert_success_rate=99)
    reads: list[int] = []
    original = figures.stats.finished_since

    def counted(*args: Any, **kwargs: Any) -> dict[str, Totals]:
        reads.append(1)
        return original(*args, **kwargs)

    figures.stats.finished_since = counted  # type: ignore[method-assign]
    report = figures.report(2, now=NOW)
    assert len(reads) == 1
    assert report == {
        "summary": figures.summary(2, now=NOW),
        "workers": figures.workers(2, now=NOW),
        "alerts": figures.alerts(2, now=NOW),
    }
    assert report["alerts"]  # 91.67 % is below 99 %: the comparison is not of empty lists
