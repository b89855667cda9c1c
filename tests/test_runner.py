"""The runner daemon with real processes: exactly once, rescue after SIGKILL, SIGTERM, drops."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import OperationalError

from stask import Stask, Status, Task
from stask.core.worker import backoff_seconds
from stask.db.engine import parse_url
from stask.db.nodes import NodeStore
from stask.errors import DatabaseUnavailable, ValidationError
from stask.models import utcnow
from stask.runner import Runner, RunnerOptions, daemon
from stask.settings import load_settings
from tests.conftest import fresh_app
from tests.helpers import Processes, wait_until
from tests.test_cli import stask

STASK = str(Path(sys.executable).with_name("stask"))
WORKERS = "tests.runner_workers"


@pytest.fixture
def runner_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, WORKERS)


@pytest.fixture
def runner_env(cli_env: dict[str, str]) -> dict[str, str]:
    return {
        **cli_env,
        "STASK_WORKERS": WORKERS,
        "STASK_LEASE_SECONDS": "2",
        "STASK_HEARTBEAT_SECONDS": "0.3",
    }


@pytest.fixture
def spawn(
    runner_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    with Processes(tmp_path, "runner") as runners:

        def start(*args: str) -> subprocess.Popen[str]:
            return runners.start([STASK, "worker", "--poll", "0.1", *args], runner_env)

        yield start


def test_backoff_grows_exponentially_with_jitter() -> None:
    rng = random.Random(7)
    for attempt in range(1, 12):
        expected = min(2.0 * 2 ** (attempt - 1), 3600.0)
        delays = [backoff_seconds(attempt, rng) for _ in range(50)]
        assert all(expected * 0.8 <= d <= expected * 1.2 for d in delays)
        assert max(delays) - min(delays) > 0  # jittered
    assert backoff_seconds(30) <= 3600 * 1.2


def test_four_runner_processes_run_2000_tasks_exactly_once(
    runner_app: Stask, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    log = tmp_path / "touched.log"
    ids = runner_app.create_many([("counter", "touch", {"log": str(log)}) for _ in range(2000)])
    runners = [spawn("-c", "4") for _ in range(4)]
    wait_until(lambda: runner_app.stats()["completed"] == 2000, what="2000 completed")
    for proc in runners:
        proc.send_signal(signal.SIGTERM)
    for proc in runners:
        assert proc.wait(timeout=30) == 0
    lines = log.read_text().split()
    touched = Tally(int(task_id) for task_id in lines[0::2])
    assert set(touched) == set(ids)
    assert max(touched.values()) == 1
    assert len(set(lines[1::2])) > 1, "the work was spread over several runner processes"
    assert runner_app.stats()["completed"] == 2000
    assert all(t.attempts == 1 for t in runner_app.list(limit=2000))
    assert runner_app.store.task_reads.queued_count() == 0


def _events(log: Path) -> list[tuple[str, int, int, float]]:
    found = []
    for line in log.read_text().splitlines():
        kind, task_id, pid, when = line.split()
        found.append((kind, int(task_id), int(pid), float(when)))
    return found


def test_sigkilled_runner_task_is_rescued_and_never_runs_twice_at_once(
    runner_app: Stask, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    task = runner_app.create("long", "hold", {"log": str(log), "release": str(release)})
    first = spawn("-c", "1")
    wait_until(lambda: log.exists() and "start" in log.read_text(), what="first start")
    assert runner_app.get(task.id).status is Status.RUNNING
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed_at = time.time()

    second = spawn("-c", "1")
    wait_until(lambda: log.read_text().count("start") == 2, timeout=30, what="rescue")
    release.touch()
    wait_until(lambda: runner_app.get(task.id).is_finished, what="completion")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0

    done = runner_app.get(task.id)
    assert done.status is Status.COMPLETED
    assert done.attempts == 2
    events = _events(log)
    starts = [e for e in events if e[0] == "start"]
    assert [e[2] for e in starts] == [first.pid, second.pid]
    assert starts[1][3] > killed_at  # the second run began only after the first runner died
    assert [e[2] for e in events if e[0] == "end"] == [second.pid]
    warnings = [e.message for e in runner_app.get_logs(task.id) if e.level == "warning"]
    assert any("stopped heartbeating" in message for message in warnings)


def test_sigterm_lets_running_tasks_finish_within_grace_then_requeues(
    runner_app: Stask, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    held = runner_app.create("long", "hold", {"log": str(log), "release": str(release)})
    waiting = runner_app.create_many(
        [("counter", "touch", {"log": str(tmp_path / "c.log"), "delay": 5}) for _ in range(3)]
    )
    proc = spawn("-c", "1", "--prefetch", "3", "--grace", "0.5")
    wait_until(lambda: log.exists() and "start" in log.read_text(), what="start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0

    again = runner_app.get(held.id)
    assert again.status is Status.PENDING
    assert again.attempts == 0  # released, not failed: the attempt is given back
    assert again.message is not None
    assert "shut down before it finished" in again.message
    for task_id in waiting:  # prefetched but never started
        assert runner_app.get(task_id).status is Status.PENDING
    assert runner_app.store.task_reads.queued_count() == 4
    assert runner_app.store.task_reads.running_task_ids() == []


def test_cancel_and_timeout_on_threads(runner_app: Stask, tmp_path: Path) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    held = runner_app.create("long", "hold", {"log": str(log), "release": str(release)})
    spun = runner_app.create("slow", "spin", max_attempts=1)
    runner = Runner(runner_app, RunnerOptions(concurrency=2, poll_seconds=0.05, grace_seconds=5))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: runner_app.get(held.id).status is Status.RUNNING, what="running")
        runner_app.cancel(held.id)
        wait_until(lambda: runner_app.get(held.id).is_finished, what="cancelled")
        wait_until(lambda: runner_app.get(spun.id).is_finished, what="timed out")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    cancelled = runner_app.get(held.id)
    assert cancelled.status is Status.CANCELLED
    timed_out = runner_app.get(spun.id)
    assert timed_out.status is Status.FAILED
    assert timed_out.message is not None
    assert "timed out after 0.3 s" in timed_out.message


def test_a_runner_whose_heartbeat_stalls_gives_its_tasks_back_and_claims_nothing(
    runner_app: Stask, tmp_path: Path
) -> None:
    """A heartbeat that lands no beat for most of the lease (here: its thread stalled) makes
    the runner stop its running task at the next checkpoint and give the claim back, and claim
    nothing until a beat lands again: others may rescue what it held once the lease is over."""
    log, release = tmp_path / "events.log", tmp_path / "release"
    held = runner_app.create("long", "hold", {"log": str(log), "release": str(release)})
    runner = Runner(runner_app, RunnerOptions(concurrency=1, poll_seconds=0.05, grace_seconds=5))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: log.exists() and "start" in log.read_text(), what="start")
        runner.liveness._stop.set()  # the heartbeat thread stalls...
        runner.liveness.last_beat -= runner.liveness.lease_seconds  # ...for most of the lease
        wait_until(lambda: runner_app.get(held.id).status is Status.PENDING, what="the claim back")
        time.sleep(0.5)  # several fetch loops: none may claim while the lease is not held
        again = runner_app.get(held.id)
        assert again.status is Status.PENDING, again
        assert again.attempts == 0  # the attempt it could not finish is not counted
        assert again.message is not None
        assert "lost its lease while running it" in again.message
        assert log.read_text().count("start") == 1
        assert runner_app.store.task_reads.running_task_ids() == []
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _drop_connections(db_url: str) -> int:
    url = parse_url(db_url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if url.get_backend_name() == "postgresql":
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        else:
            ids = (
                conn.execute(
                    text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
                    )
                )
                .scalars()
                .all()
            )
            killed = 0
            for conn_id in ids:
                try:
                    conn.execute(text(f"KILL CONNECTION {int(conn_id)}"))
                    killed += 1
                except OperationalError as err:  # it ended between the listing and the kill
                    if "Unknown thread id" not in str(err):
                        raise
    admin.dispose()
    return int(killed)


def test_runner_survives_dropped_database_connections(
    runner_app: Stask,
    spawn: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
    db_url: str,
    dialect: str,
) -> None:
    if dialect == "sqlite":
        pytest.skip("an embedded SQLite file has no server connection to drop")
    log = tmp_path / "touched.log"
    ids = runner_app.create_many(
        [("counter", "touch", {"log": str(log), "delay": 0.01}) for _ in range(300)]
    )
    proc = spawn("-c", "2")
    wait_until(lambda: runner_app.stats()["completed"] >= 30, what="some progress")
    dropped = sum(_drop_connections(db_url) for _ in range(3))
    assert dropped > 0
    wait_until(
        lambda: runner_app.stats()["completed"] == 300,
        timeout=90,
        what=lambda: f"all done: {runner_app.stats()}",
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    touched = Tally(int(line.split()[0]) for line in log.read_text().splitlines())
    assert set(touched) == set(ids)
    assert max(touched.values()) == 1
    assert runner_app.stats()["failed"] == 0


def test_a_claim_whose_answer_is_lost_is_released_and_run_once(
    runner_app: Stask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "touched.log"
    ids = runner_app.create_many([("counter", "touch", {"log": str(log)}) for _ in range(20)])
    runner = Runner(runner_app, RunnerOptions(concurrency=2, poll_seconds=0.05))
    real_claim = runner.db.record_and_claim
    lost: list[int] = []

    def claim_then_break(*args: object, **kwargs: object) -> tuple[list[Task], set[int]]:
        claimed, recorded = real_claim(*args, **kwargs)  # type: ignore[arg-type]
        if claimed and not lost:  # committed, but the caller never hears of it
            lost.extend(task.id for task in claimed)
            raise DatabaseUnavailable("connection lost after COMMIT")
        return claimed, recorded

    monkeypatch.setattr(runner.db, "record_and_claim", claim_then_break)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: runner_app.stats()["completed"] == 20, what="all completed")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    assert lost
    touched = Tally(int(line.split()[0]) for line in log.read_text().splitlines())
    assert touched == Tally(ids)
    for task_id in lost:
        assert runner_app.get(task_id).attempts == 1  # the lost claim's attempt was given back
        messages = [e.message for e in runner_app.get_logs(task_id)]
        assert not any("stopped heartbeating" in m for m in messages)


def test_outcomes_of_a_turn_whose_answer_is_lost_count_once_without_a_false_alarm(
    runner_app: Stask,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = tmp_path / "touched.log"
    runner_app.create_many([("counter", "touch", {"log": str(log)}) for _ in range(20)])
    runner = Runner(runner_app, RunnerOptions(concurrency=2, poll_seconds=0.05))
    real_turn = runner.db.record_and_claim
    lost: list[int] = []

    def record_then_break(*args: Any, **kwargs: Any) -> tuple[list[Task], set[int]]:
        claimed, recorded = real_turn(*args, **kwargs)
        if recorded and not lost:  # the outcomes are committed; the runner never hears of it
            lost.extend(recorded)
            raise DatabaseUnavailable("connection lost after COMMIT")
        return claimed, recorded

    monkeypatch.setattr(runner.db, "record_and_claim", record_then_break)
    thread = threading.Thread(target=runner.run)
    with caplog.at_level("WARNING", logger="stask.runner"):
        thread.start()
        try:
            wait_until(lambda: runner_app.stats()["completed"] == 20, what="all completed")
            wait_until(lambda: runner.completed == 20, what=lambda: f"{runner.completed} counted")
        finally:
            runner.request_stop()
            thread.join(timeout=30)
    assert lost
    assert not [r for r in caplog.records if "another node holds them" in r.getMessage()]
    assert all(runner_app.get(task_id).status is Status.COMPLETED for task_id in lost)


def test_same_process_enqueue_wakes_the_runner(runner_app: Stask, tmp_path: Path) -> None:
    runner = Runner(runner_app, RunnerOptions(concurrency=1, poll_seconds=30))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: runner.idle, what="idle")
        before = runner.wakeups
        task = runner_app.create("counter", "touch", {"log": str(tmp_path / "t.log")})
        assert runner.wakeups > before
        wait_until(lambda: runner_app.get(task.id).is_finished, what="done")
        later = runner_app.create(
            "counter",
            "touch",
            {"log": str(tmp_path / "t.log")},
            run_at=utcnow() + dt.timedelta(hours=1),
        )
        assert runner_app.get(later.id).status is Status.PENDING
    finally:
        runner.request_stop()
        thread.join(timeout=30)


def test_postgres_notify_wakes_a_runner_of_another_process(
    runner_app: Stask, db_url: str, storage: Path, tmp_path: Path, dialect: str
) -> None:
    if dialect != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; other databases poll")
    runner = Runner(runner_app, RunnerOptions(concurrency=1, poll_seconds=30))
    assert runner.listener is not None
    thread = threading.Thread(target=runner.run)
    thread.start()
    other = Stask(database_url=db_url, storage=storage, workers=[WORKERS], use_entry_points=False)
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(str(args[2]))

    try:
        assert runner.listener.listening.wait(10)
        wait_until(lambda: runner.idle, what="idle")
        event.listen(other.store.engine, "before_cursor_execute", record)
        ids = other.create_many(
            [("counter", "touch", {"log": str(tmp_path / "n.log")}) for _ in range(50)]
        )
        wait_until(
            lambda: runner.listener is not None and runner.listener.received >= 1,
            what="a notification",
        )
        wait_until(lambda: all(other.get(i).is_finished for i in ids), what="all done")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
        other.close()
    assert sum("pg_notify" in s for s in statements) == 1  # one per batch, not per row


def test_sqlite_wake_file_wakes_a_runner_when_another_process_enqueues(
    runner_app: Stask,
    runner_env: dict[str, str],
    tmp_path: Path,
    dialect: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if dialect != "sqlite":
        pytest.skip("the wake file is SQLite's (PostgreSQL has NOTIFY)")
    # Polls 30 s apart: a task started within the test's wait was woken by the file.
    monkeypatch.setattr(daemon, "MIN_POLL_SECONDS", 30.0)
    runner = Runner(runner_app, RunnerOptions(concurrency=1, poll_seconds=30))
    assert runner.listener is not None
    thread = threading.Thread(target=runner.run)
    thread.start()
    log = tmp_path / "w.log"
    try:
        assert runner.listener.listening.wait(10)
        wait_until(lambda: runner.idle, what="idle")
        created = stask(runner_env, "create", "counter", "touch", "-o", f"log={log}", "--json")
        task_id = int(json.loads(created.stdout)["id"])
        wait_until(lambda: runner_app.get(task_id).is_finished, timeout=15, what="a woken claim")
        # `stask retry` in another process wakes it too.
        later = runner_app.create(
            "counter", "touch", {"log": str(log)}, run_at=utcnow() + dt.timedelta(hours=1)
        )
        runner_app.cancel(later.id)
        wait_until(lambda: runner.idle, what="idle again")
        stask(runner_env, "retry", str(later.id))
        wait_until(lambda: runner_app.get(later.id).is_finished, timeout=15, what="the retry")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    assert runner_app.get(later.id).status is Status.COMPLETED
    assert runner.listener.received >= 2


def test_the_runner_fires_due_schedules(db_url: str, storage: Path) -> None:
    settings = load_settings(
        database_url=db_url,
        storage=storage,
        workers=["tests.schedule_workers"],
        heartbeat_seconds=0.2,
    )
    app = Stask(settings, use_entry_points=False)
    app.store.housekeeping.truncate_all()
    app.discover()
    two_hours_ago = utcnow() - dt.timedelta(hours=2)
    app.set_schedule(
        "report", {"type": "periodic", "frequency": "hourly", "minute": 0}, now=two_hours_ago
    )
    runner = Runner(app, RunnerOptions(concurrency=1, poll_seconds=0.1))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: app.stats()["completed"] >= 1, what="the scheduled run")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    (fired,) = app.list(worker="report")
    assert fired.action == "make"
    assert fired.unique_key is not None
    assert fired.unique_key.startswith("sched:report:make:")
    assert fired.started_by == "schedule"
    assert fired.status is Status.COMPLETED
    app.close()


def test_per_task_timeout_and_deadline(runner_app: Stask, tmp_path: Path) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    options = {"log": str(log), "release": str(release), "bound": 30}
    limited = runner_app.create("long", "hold", options, timeout=0.2, max_attempts=1)
    assert limited.timeout_seconds == 0.2
    expired = runner_app.create(
        "counter",
        "touch",
        {"log": str(tmp_path / "never.log")},
        deadline=utcnow() - dt.timedelta(seconds=1),
    )
    assert runner_app.process_pending() == 2
    timed_out = runner_app.get(limited.id)
    assert timed_out.status is Status.FAILED
    assert timed_out.message is not None
    assert "timed out after 0.2 s" in timed_out.message
    gone = runner_app.get(expired.id)
    assert gone.status is Status.CANCELLED
    assert gone.message is not None
    assert gone.message.startswith("Expired: not started before its deadline")
    assert not (tmp_path / "never.log").exists()
    with pytest.raises(ValidationError, match="timeout"):
        runner_app.create("counter", "touch", {"log": "x"}, timeout=0)


def test_process_isolation_kills_on_timeout_and_cancel(runner_app: Stask, tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    worked = runner_app.create("isolated", "work")
    timed = runner_app.create("isolated", "block", {"log": str(log)}, timeout=3.0)
    crashed = runner_app.create("isolated", "crash")
    assert runner_app.process_pending() == 3

    done = runner_app.get(worked.id)
    assert done.status is Status.COMPLETED
    assert done.result["pid"] != os.getpid()
    assert (done.progress, done.processed, done.total, done.message) == (100, 3, 3, "step 3")
    assert [e.message for e in runner_app.get_logs(worked.id)] == ["from the child"]

    killed = runner_app.get(timed.id)
    assert killed.status is Status.FAILED
    assert killed.message is not None
    assert "timed out after 3 s" in killed.message
    # Killed, not waited for (a loaded machine may kill it before it even logged its start).
    assert "end" not in (log.read_text() if log.exists() else "")

    died = runner_app.get(crashed.id)
    assert died.status is Status.FAILED
    assert died.message is not None
    assert "exited with code 3" in died.message

    cancelled = runner_app.create("isolated", "block", {"log": str(log), "seconds": 60})
    runner = Runner(runner_app, RunnerOptions(concurrency=1, poll_seconds=0.05))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(
            lambda: log.exists() and f"start {cancelled.id} " in log.read_text(),
            what="the cancellable task's start",
        )
        runner_app.cancel(cancelled.id)
        wait_until(lambda: runner_app.get(cancelled.id).is_finished, what="cancelled")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    assert runner_app.get(cancelled.id).status is Status.CANCELLED
    assert "end" not in log.read_text()


def test_async_actions_run_on_the_event_loop_thread(runner_app: Stask) -> None:
    task = runner_app.create("waiter", "nap")
    assert runner_app.process_pending() == 1
    done = runner_app.get(task.id)
    assert done.status is Status.COMPLETED
    assert done.result == {"thread": "stask-asyncio"}


def test_processes_children_stop_when_their_supervisor_is_killed(
    runner_app: Stask, spawn: Callable[..., subprocess.Popen[str]]
) -> None:
    """SIGKILL leaves the supervisor no time to pass a signal on: its children notice by
    themselves (PR_SET_PDEATHSIG), stop gracefully and leave the node table."""
    supervisor = spawn("-c", "1", "-p", "2")
    wait_until(lambda: len(NodeStore(runner_app.store).all()) == 2, what="two children")
    children = [int(node["pid"]) for node in NodeStore(runner_app.store).all()]
    supervisor.kill()
    supervisor.wait(timeout=30)
    wait_until(lambda: NodeStore(runner_app.store).all() == [], what="the children to leave")

    def gone(pid: int) -> bool:  # exited (a zombie not yet reaped by its new parent counts)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        return state == "Z"

    wait_until(lambda: all(gone(pid) for pid in children), what="the children to exit")
    assert len(children) == 2
    assert [gone(pid) for pid in children] == [True, True]
    assert NodeStore(runner_app.store).all() == []  # they stopped gracefully: no stale nodes


def test_processes_option_supervises_runner_processes(
    runner_app: Stask, spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    log = tmp_path / "touched.log"
    ids = runner_app.create_many(
        [("counter", "touch", {"log": str(log), "delay": 0.02}) for _ in range(60)]
    )
    supervisor = spawn("-c", "2", "-p", "2")
    wait_until(lambda: runner_app.stats()["completed"] == 60, what="all done")
    nodes = NodeStore(runner_app.store).all()
    assert len(nodes) == 2
    assert supervisor.pid not in {node["pid"] for node in nodes}
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0
    touched = Tally(int(line.split()[0]) for line in log.read_text().splitlines())
    assert touched == Tally(ids)
    ran_in = {int(line.split()[1]) for line in log.read_text().splitlines()}
    assert ran_in <= {node["pid"] for node in nodes}  # the children ran them, never the parent
    assert NodeStore(runner_app.store).all() == []  # both children left cleanly
