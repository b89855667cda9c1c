"""Named-queue controls on every database: pauses, and limits that hold across all runners."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

import stask.db.queues as queues_module
from stask import Stask, Status, Task
from stask.db.queues import ControlCache
from stask.db.store import Store
from stask.db.tables import queue_controls
from stask.errors import DatabaseError, InvalidQueueSetting
from stask.models import Outcome, utcnow
from stask.runner import Runner, RunnerOptions
from tests.conftest import fresh_app
from tests.test_cli import stask

STASK = str(Path(sys.executable).with_name("stask"))
NODE = "node-a"
WORKERS = ["inventory", "mailer"]
DONE = Outcome(status=Status.COMPLETED, message="done")
MINUTE = dt.timedelta(minutes=1)


def claim(store: Store, limit: int = 100, node: str = NODE, **kwargs: Any) -> list[Task]:
    return store.claims.claim(node, WORKERS, limit, **kwargs)


def queues_of(found: Sequence[Task]) -> list[str]:
    return sorted(task.queue for task in found)


def create(app: Stask, queue: str, count: int = 1, **kwargs: Any) -> list[int]:
    items = [{"identifier": "inventory", "action": "sync_stock", "queue": queue, **kwargs}]
    return app.create_many(items * count)


@contextlib.contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every SQL statement the driver receives while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def max_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at the same instant)."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = running = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- pause and resume ----------------------------------------------------------------------------


def test_pause_stops_claiming_from_that_queue_only(app: Stask) -> None:
    create(app, "emails", 2)
    create(app, "default", 2)
    create(app, "reports", 1)
    app.pause_queue("emails")

    assert queues_of(claim(app.store)) == ["default", "default", "reports"]
    assert claim(app.store) == []
    assert claim(app.store, queues=["emails"]) == []
    assert claim(app.store, queues=["emails", "reports"]) == []
    listed = {info.name: info for info in app.queues()}
    assert listed["emails"].paused
    assert (listed["emails"].pending, listed["emails"].running) == (2, 0)
    assert not listed["default"].paused
    assert (listed["default"].pending, listed["default"].running) == (0, 2)

    app.resume_queue("emails")
    assert not app.queue("emails").paused
    assert queues_of(claim(app.store)) == ["emails", "emails"]


def test_pause_until_lifts_itself(app: Stask) -> None:
    [task_id] = create(app, "emails")
    until = utcnow() + dt.timedelta(hours=1)
    info = app.pause_queue("emails", until=until.replace(tzinfo=dt.UTC))
    assert info.paused
    assert info.paused_until == until

    assert claim(app.store, now=until - dt.timedelta(seconds=1)) == []
    assert [t.id for t in claim(app.store, now=until + dt.timedelta(seconds=1))] == [task_id]


def test_a_timed_pause_replaces_an_indefinite_one_and_resume_clears_both(app: Stask) -> None:
    create(app, "emails")
    app.pause_queue("emails")
    later = utcnow() + dt.timedelta(hours=1)
    app.pause_queue("emails", until=later)
    assert claim(app.store, now=later + MINUTE) != []

    create(app, "emails")
    app.pause_queue("emails", until=later)
    app.resume_queue("emails")
    assert not app.queue("emails").paused
    assert claim(app.store) != []


def test_other_processes_see_a_pause_within_the_cache_period(
    app: Stask, make_store: Callable[[], Store]
) -> None:
    other = make_store()
    clock = [0.0]
    other.control_cache = ControlCache(clock=lambda: clock[0])  # as in another process
    create(app, "emails", 3)
    assert queues_of(claim(other, 1)) == ["emails"]  # reads the (empty) controls at t=0

    app.pause_queue("emails")
    clock[0] = other.control_cache.ttl / 2
    assert queues_of(claim(other, 1)) == ["emails"], "the cached view is kept within the period"
    clock[0] = other.control_cache.ttl
    assert claim(other, 1) == []


# -- what unlimited queues pay -------------------------------------------------------------------


def test_stores_of_one_process_share_the_controls(
    app: Stask, make_store: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_store()  # e.g. a runner's own connection pool
    assert other.control_cache is app.store.control_cache
    create(app, "emails", 2)
    monkeypatch.setattr(other.control_cache, "clock", lambda: 0.0)  # the period never ends
    assert queues_of(claim(other, 1)) == ["emails"]
    app.pause_queue("emails")
    assert claim(other, 1) == [], "a change made in this process applies at once"


def test_without_controls_claims_read_s_queues_once_per_cache_period(
    app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(app, "default", 5)
    clock = [0.0]
    monkeypatch.setattr(app.store.control_cache, "clock", lambda: clock[0])
    with statements(app.store.engine) as seen:
        for _ in range(5):
            claim(app.store, 1)
    assert len([s for s in seen if "s_queues" in s]) == 1
    clock[0] = app.store.control_cache.ttl
    with statements(app.store.engine) as seen:
        claim(app.store, 1)
    assert len([s for s in seen if "s_queues" in s]) == 1


def test_only_claims_of_a_limited_queue_lock_its_row(app: Stask) -> None:
    create(app, "emails", 2)
    create(app, "default", 2)
    app.pause_queue("paused")
    with statements(app.store.engine) as seen:
        claim(app.store, 1)
    assert not [s for s in seen if "s_queues" in s and "FOR UPDATE" in s.upper()]

    app.set_queue_limits("emails", concurrency=5)
    with statements(app.store.engine) as seen:
        claim(app.store, 1, queues=["default"])
    assert not [s for s in seen if "s_queues" in s and "FOR UPDATE" in s.upper()]

    with statements(app.store.engine) as seen:
        claim(app.store, 1, queues=["emails"])
    locks = [s for s in seen if "s_queues" in s and "FOR UPDATE" in s.upper()]
    assert len(locks) == (0 if app.store.dialect == "sqlite" else 1)  # SQLite: BEGIN IMMEDIATE


# -- concurrency limits --------------------------------------------------------------------------


def test_concurrency_limit_counts_running_tasks_of_the_queue(app: Stask) -> None:
    create(app, "emails", 5)
    create(app, "default", 3)
    app.set_queue_limits("emails", concurrency=2)

    first = claim(app.store, 4)
    assert queues_of(first) == ["default", "default", "emails", "emails"]
    assert queues_of(claim(app.store, 10)) == ["default"], "emails is full, default flows"
    assert claim(app.store) == []

    done = next(t for t in first if t.queue == "emails")
    assert app.store.claims.finish(done.claim, DONE)
    assert queues_of(claim(app.store)) == ["emails"], "a finish frees one slot"
    assert claim(app.store) == []

    app.set_queue_limits("emails", concurrency=3)
    assert queues_of(claim(app.store)) == ["emails"]
    app.set_queue_limits("emails")  # no limits
    assert queues_of(claim(app.store)) == ["emails"]
    info = app.queue("emails")
    assert (info.concurrency_limit, info.running, info.pending) == (None, 4, 0)


def test_a_retry_frees_its_slot(app: Stask) -> None:
    create(app, "emails", 2)
    app.set_queue_limits("emails", concurrency=1)
    [held] = claim(app.store)
    retry = Outcome(status=Status.PENDING, message="again", retry_at=utcnow() + MINUTE)
    assert app.store.claims.finish(held.claim, retry)
    assert len(claim(app.store)) == 1


def finish_retrying(store: Store, node: str, batch: Sequence[Task]) -> None:
    """Record outcomes as the runner's completer does: a deadlock (MariaDB 1213) is retried."""
    for attempt in range(10):
        try:
            store.claims.finish_many([(task.claim, DONE) for task in batch])
            return
        except DatabaseError as err:
            if "1213" not in err.message or attempt == 9:
                raise
            time.sleep(0.01 * (attempt + 1))


def _claim_and_finish_concurrently(
    app: Stask, stores: list[Store], limited: str, limit: int, now: dt.datetime | None = None
) -> tuple[list[int], int]:
    """Threads claim in small batches, hold briefly, finish; (ids claimed, most seen running).

    After every claim the thread counts the limited queue's running tasks in the database, and
    that count may never exceed ``limit``.
    """
    start = threading.Barrier(len(stores))
    most = [0]
    lock = threading.Lock()

    def claimer(index: int) -> list[int]:
        store, node = stores[index], f"thread-{index}"
        taken: list[int] = []
        start.wait(timeout=30)
        idle = 0
        while idle < 20:
            batch = store.claims.claim(node, WORKERS, 3, now=now)
            running = app.queue(limited).running
            with lock:
                most[0] = max(most[0], running)
            taken += [task.id for task in batch]
            idle = 0 if batch else idle + 1
            time.sleep(0.005)
            finish_retrying(store, node, batch)
        return taken

    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(claimer, range(len(stores)), timeout=120))
    return [task_id for taken in results for task_id in taken], most[0]


def test_concurrency_limit_holds_across_concurrent_claimers(
    app: Stask, make_store: Callable[[], Store]
) -> None:
    limited = create(app, "limited", 40)
    other = create(app, "default", 40)
    app.set_queue_limits("limited", concurrency=2)
    stores = [make_store() for _ in range(5)]

    claimed, most = _claim_and_finish_concurrently(app, stores, "limited", 2)

    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert set(claimed) == set(limited) | set(other)
    assert 1 <= most <= 2


def test_rate_limit_counts_starts_within_the_period(app: Stask) -> None:
    create(app, "metered", 10)
    create(app, "default", 4)
    app.set_queue_limits("metered", rate=3, period_seconds=60)
    t0 = utcnow() + dt.timedelta(seconds=1)

    first = claim(app.store, now=t0)
    assert queues_of(first) == ["default"] * 4 + ["metered"] * 3
    for task in first:
        assert app.store.claims.finish(task.claim, DONE)
    assert claim(app.store, now=t0 + dt.timedelta(seconds=30)) == [], "finishing frees no rate"
    assert claim(app.store, now=t0 + dt.timedelta(seconds=59)) == []
    assert queues_of(claim(app.store, now=t0 + dt.timedelta(seconds=60))) == ["metered"] * 3
    info = app.queue("metered")
    assert (info.rate_limit, info.rate_period_seconds, info.started_in_period) == (3, 60, 6)


def test_rate_and_concurrency_limits_together_take_the_smaller_room(app: Stask) -> None:
    create(app, "metered", 10)
    app.set_queue_limits("metered", concurrency=2, rate=3, period_seconds=60)
    t0 = utcnow() + dt.timedelta(seconds=1)
    first = claim(app.store, now=t0)
    assert len(first) == 2
    assert app.store.claims.finish(first[0].claim, DONE)
    assert len(claim(app.store, now=t0)) == 1
    assert app.store.claims.finish(first[1].claim, DONE)
    assert claim(app.store, now=t0) == [], "3 started within the minute"


def test_rate_limit_holds_across_concurrent_claimers(
    app: Stask, make_store: Callable[[], Store]
) -> None:
    create(app, "metered", 30)
    other = create(app, "default", 30)
    app.set_queue_limits("metered", rate=5, period_seconds=3600)
    stores = [make_store() for _ in range(5)]
    now = utcnow() + dt.timedelta(seconds=1)

    claimed, _ = _claim_and_finish_concurrently(app, stores, "metered", 5, now=now)

    assert len(claimed) == len(set(claimed))
    assert set(other) <= set(claimed), "the other queue kept flowing"
    assert len(set(claimed) - set(other)) == 5


# -- claim order and the split claim ------------------------------------------------------------


def test_claims_across_limited_and_open_queues_keep_priority_order(app: Stask) -> None:
    low = create(app, "limited", 3, priority="low")
    high = create(app, "limited", 1, priority="high")
    normal = create(app, "default", 3)
    app.set_queue_limits("limited", concurrency=3)
    app.pause_queue("paused")

    assert [t.id for t in claim(app.store, 3)] == [*high, *normal[:2]]
    assert [t.id for t in claim(app.store, 3)] == [normal[2], *low[:2]]
    assert claim(app.store, 3) == [], "the limit of 3 is reached"


def test_a_paused_backlog_is_not_walked_by_claims_of_other_queues(app: Stask) -> None:
    backlog = create(app, "paused", 50, priority="high")
    wanted = create(app, "default", 2, priority="low")
    app.pause_queue("paused")
    with statements(app.store.engine) as seen:
        assert [t.id for t in claim(app.store, 5)] == wanted
    claims = [s for s in seen if "s_queue." in s and "s_queues" not in s]
    assert claims, seen
    assert not [s for s in claims if "NOT IN" in s.upper()], "one statement per queue instead"
    app.resume_queue("paused")
    assert [t.id for t in claim(app.store, 100)] == backlog


def test_with_many_queues_the_open_ones_are_claimed_in_one_statement(
    app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queues_module, "MAX_SPLIT_QUEUES", 2)
    names = ["a", "b", "c", "d"]
    for name in names:
        create(app, name, 2)
    app.pause_queue("b")
    app.set_queue_limits("c", concurrency=1)
    assert queues_of(claim(app.store)) == ["a", "a", "c", "d", "d"]
    assert claim(app.store) == []


def test_present_queues_are_listed_once_each_in_name_order(app: Stask) -> None:
    for name in ["zeta", "alpha", "mid", "alpha", "zeta"]:
        create(app, name, 2)
    with app.store.writing() as conn:
        assert app.store.claims._present_queues(conn, 10) == ["alpha", "mid", "zeta"]
        assert app.store.claims._present_queues(conn, 2) == ["alpha", "mid"]


# -- the runner ----------------------------------------------------------------------------------


def test_a_runner_keeps_claiming_other_queues_while_one_is_paused(app: Stask) -> None:
    runner = Runner(app, RunnerOptions(concurrency=2, poll_seconds=0.05))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: runner.idle, what="idle")  # it has read the controls: none yet
        app.pause_queue("emails")  # applies to this process's runner at once
        held = create(app, "emails", 2)
        flowing = create(app, "default", 5)
        wait_until(lambda: all(app.get(i).is_finished for i in flowing), what="default done")
        assert all(app.get(i).status is Status.PENDING for i in held)
        app.resume_queue("emails")
        wait_until(lambda: all(app.get(i).is_finished for i in held), what="emails done")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    assert app.stats()["completed"] == 7


NAPPER = "tests.queue_workers"


@pytest.fixture
def napper_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, NAPPER)


def _intervals(log: Path) -> dict[int, tuple[float, float]]:
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    for line in log.read_text().splitlines():
        kind, task_id, _pid, when = line.split()
        (starts if kind == "start" else ends)[int(task_id)] = float(when)
    return {task_id: (start, ends[task_id]) for task_id, start in starts.items()}


@pytest.mark.slow
def test_three_worker_processes_never_run_more_than_the_queue_limit(
    napper_app: Stask, cli_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "naps.log"
    napper_app.set_queue_limits("limited", concurrency=2)
    nap = {"identifier": "napper", "action": "nap"}
    limited = napper_app.create_many(
        [{**nap, "queue": "limited", "options": {"log": str(log), "seconds": 0.4}}] * 8
    )
    other = napper_app.create_many([{**nap, "options": {"log": str(log), "seconds": 0.1}}] * 12)
    env = {**cli_env, "STASK_WORKERS": NAPPER}
    runners = [
        subprocess.Popen(
            [STASK, "worker", "-c", "4", "--poll", "0.05"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    try:
        wait_until(lambda: napper_app.stats()["completed"] == 20, what="20 completed")
    finally:
        for proc in runners:
            proc.send_signal(signal.SIGTERM)
        for proc in runners:
            proc.wait(timeout=30)

    ran = _intervals(log)
    assert set(ran) == set(limited) | set(other)
    assert max_overlap([ran[i] for i in limited]) == 2, "at most 2 at once, and 2 were reached"
    last_limited_start = max(ran[i][0] for i in limited)
    assert max(ran[i][1] for i in other) < last_limited_start, "the other queue did not wait"


def test_max_overlap_counts_what_runs_at_once() -> None:
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1
    assert max_overlap([(0, 2), (1, 3), (1.5, 4)]) == 3


# -- validation and the command line -------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda a: a.set_queue_limits("q", concurrency=0), "concurrency must be a positive"),
        (lambda a: a.set_queue_limits("q", concurrency=-3), "got -3"),
        (lambda a: a.set_queue_limits("q", concurrency=True), "got True"),
        (lambda a: a.set_queue_limits("q", concurrency=2.5), "got 2.5"),
        (lambda a: a.set_queue_limits("q", concurrency=2**31), "at most 2147483647"),
        (lambda a: a.set_queue_limits("q", rate=5), "needs both rate and period_seconds"),
        (lambda a: a.set_queue_limits("q", period_seconds=60), "got only period_seconds=60"),
        (lambda a: a.set_queue_limits("q", rate="5", period_seconds=60), "got '5'"),
        (lambda a: a.pause_queue("q", until=utcnow() - MINUTE), "is not in the future"),
        (lambda a: a.pause_queue("q", until="tomorrow"), "until must be a datetime"),
        (lambda a: a.pause_queue(""), "non-empty"),
        (lambda a: a.pause_queue("x" * 101), "101 characters"),
        (lambda a: a.resume_queue(None), "got None"),
    ],
)
def test_bad_settings_are_refused_and_write_nothing(
    app: Stask, call: Callable[[Stask], Any], fragment: str
) -> None:
    with pytest.raises(InvalidQueueSetting) as caught:
        call(app)
    assert fragment in caught.value.message
    assert caught.value.exit_code == 2
    with app.store.reading() as conn:
        assert conn.execute(select(queue_controls)).all() == []


def test_queues_lists_known_queues_only(app: Stask) -> None:
    assert app.queues() == []
    create(app, "emails", 2)
    create(app, "later", 1, run_at=utcnow() + dt.timedelta(hours=1))
    create(app, "done", 1)
    [finished] = claim(app.store, queues=["done"])
    assert app.store.claims.finish(finished.claim, DONE)
    create(app, "busy", 1)
    claim(app.store, queues=["busy"])
    app.set_queue_limits("quiet", concurrency=4)
    listed = {info.name: (info.pending, info.running) for info in app.queues()}
    assert listed == {"busy": (0, 1), "emails": (2, 0), "later": (1, 0), "quiet": (0, 0)}
    app.resume_queue("nobody")
    assert "nobody" not in {info.name for info in app.queues()}


def listed(env: dict[str, str]) -> dict[str, Any]:
    return {
        entry["name"]: entry for entry in json.loads(stask(env, "queues", "list", "--json").stdout)
    }


def test_cli_pauses_resumes_and_limits_queues(app: Stask, cli_env: dict[str, str]) -> None:
    create(app, "emails", 1)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(microsecond=0)
    out = stask(cli_env, "queues", "pause", "emails", "--until", until.isoformat()).stdout
    assert "paused until" in out
    stask(
        cli_env, "queues", "limit", "reports", "--concurrency", "2", "--rate", "10", "--per", "60"
    )
    found = listed(cli_env)
    assert found["emails"]["paused"] is True
    assert found["emails"]["paused_until"] == until.isoformat()
    assert found["emails"]["pending"] == 1
    assert (found["reports"]["concurrency_limit"], found["reports"]["rate_limit"]) == (2, 10)
    assert found["reports"]["rate_period_seconds"] == 60
    table = stask(cli_env, "queues", "list").stdout
    assert "emails" in table
    assert "10 per 60 s" in table

    assert "active" in stask(cli_env, "queues", "resume", "emails").stdout
    assert "no limits" in stask(cli_env, "queues", "limit", "reports", "--clear").stdout
    found = listed(cli_env)
    assert found["emails"]["paused"] is False
    assert found["reports"]["concurrency_limit"] is None
    assert found["reports"]["rate_limit"] is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("limit", "q"), "--clear"),
        (("limit", "q", "--concurrency", "0"), "--concurrency"),
        (("limit", "q", "--concurrency", "two"), "--concurrency"),
        (("limit", "q", "--rate", "5"), "--rate and --per"),
        (("limit", "q", "--per", "60"), "--rate and --per"),
        (("limit", "q", "--clear", "--concurrency", "2"), "--clear"),
        (("pause", "q", "--until", "someday"), "ISO-8601"),
        (("pause", "q", "--until", "2001-01-01T00:00"), "not in the future"),
        (("pause", "x" * 101), "101 characters"),
        (("pause",), "NAME"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(
    app: Stask, cli_env: dict[str, str], args: tuple[str, ...], fragment: str
) -> None:
    done = stask(cli_env, "queues", *args, code=2)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ")
    assert fragment in lines[0]
    with app.store.reading() as conn:
        assert conn.execute(select(queue_controls)).all() == []
