"""Tests that pin behaviour a mutation run could break without any other test failing.

Each test names what it pins. They drive the code through stable surfaces: the ``Stask``
facade, ``Runner``, ``NodeStore``, ``store.claims.claim``, ``Executor.run`` and real
``stask worker`` processes.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stask import Stask, Status, Task
from stask.core.executor import Executor
from stask.db.nodes import NodeStore
from stask.errors import InvalidOptions, TaskNotFound
from stask.models import NodeInfo, utcnow
from stask.runner import Runner, RunnerOptions
from tests.conftest import fresh_app
from tests.helpers import Processes, wait_until

STASK = str(Path(sys.executable).with_name("stask"))
WORKERS = "tests.pinning_workers"
NODE = "pin-node"
LEASE = 10.0
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def pin_app(db_url: str, storage: Path) -> Iterator[Stask]:
    """A Stask on an emptied database with the pinning workers registered."""
    yield from fresh_app(db_url, storage, WORKERS)


def node_info(node_id: str) -> NodeInfo:
    return NodeInfo(id=node_id, host="test", pid=1, concurrency=1, queues=[], version="test")


def claim_one(app: Stask, node_id: str, identifier: str, **kwargs: Any) -> Task:
    [task] = app.store.claims.claim(node_id, [identifier], 1, **kwargs)
    return task


# -- 1, 2: the rescuer -----------------------------------------------------------------------


def test_rescue_leaves_a_live_nodes_long_running_task_alone(pin_app: Stask) -> None:
    """A task locked long ago by a node whose heartbeat is fresh is not stale."""
    nodes = NodeStore(pin_app.store)
    held = pin_app.create("flaky", "ok")
    orphan = pin_app.create("flaky", "ok")
    now = utcnow()
    nodes.register(node_info("live"), now=now)
    nodes.register(node_info("dead"), now=now)
    assert claim_one(pin_app, "live", "flaky", now=now).id == held.id
    assert claim_one(pin_app, "dead", "flaky", now=now).id == orphan.id

    later = now + HOUR  # both tasks were locked an hour before; only "live" kept heartbeating
    assert nodes.heartbeat("live", now=later)
    rescue = nodes.rescue_stale(LEASE, now=later)

    assert rescue.requeued == [orphan.id]  # the rescuer does work: the dead node's task
    assert rescue.failed == []
    assert rescue.dead_nodes == ["dead"]
    kept = pin_app.get(held.id)
    assert kept.status is Status.RUNNING
    assert kept.locked_by == "live"
    assert kept.attempts == 1
    assert pin_app.get(orphan.id).status is Status.PENDING
    assert [node["id"] for node in nodes.all()] == ["live"]
    # A second pass, later still, with "live" still heartbeating, leaves it alone too.
    assert nodes.heartbeat("live", now=later + HOUR)
    assert nodes.rescue_stale(LEASE, now=later + HOUR).requeued == []
    assert pin_app.get(held.id).status is Status.RUNNING


def test_rescue_fails_a_task_with_no_attempts_left_instead_of_requeueing_it(
    pin_app: Stask,
) -> None:
    nodes = NodeStore(pin_app.store)
    last_try = pin_app.create("flaky", "ok", max_attempts=1)
    spare = pin_app.create("flaky", "ok", max_attempts=2)
    now = utcnow()
    nodes.register(node_info("dead"), now=now)
    assert claim_one(pin_app, "dead", "flaky", now=now).id == last_try.id
    assert claim_one(pin_app, "dead", "flaky", now=now).id == spare.id
    assert pin_app.get(last_try.id).attempts == pin_app.get(last_try.id).max_attempts == 1

    rescue = nodes.rescue_stale(LEASE, now=now + HOUR)

    assert rescue.failed == [last_try.id]
    assert rescue.requeued == [spare.id]
    failed = pin_app.get(last_try.id)
    assert failed.status is Status.FAILED
    assert failed.finished_at is not None
    assert failed.message is not None
    assert "no attempts are left" in failed.message
    assert pin_app.get(spare.id).status is Status.PENDING
    assert (
        pin_app.store.task_reads.queued_count() == 1
    )  # only the one with an attempt left is claimable
    claimed = pin_app.store.claims.claim(NODE, ["flaky"], 10, now=now + HOUR)  # requeued as of then
    assert [t.id for t in claimed] == [spare.id]


# -- 3: the backoff grows with the attempt number ---------------------------------------------


def test_the_retry_delay_grows_with_the_attempt_number(pin_app: Stask) -> None:
    """After attempt n the retry waits 2 * 2**(n-1) s +-20 %: 2, 4, 8 s (ranges apart)."""
    task = pin_app.create("flaky", "fail", max_attempts=4)
    executor = Executor(pin_app, NODE)
    due: dt.datetime | None = None
    delays: list[tuple[float, float]] = []
    for attempt in (1, 2, 3):
        claimed = claim_one(pin_app, NODE, "flaky", now=due)
        assert (claimed.id, claimed.attempts) == (task.id, attempt)
        before = utcnow()
        assert executor.run(claimed) is Status.PENDING
        after = utcnow()
        retrying = pin_app.get(task.id)
        assert retrying.status is Status.PENDING
        assert retrying.attempts == attempt
        # The retry was scheduled at (failure time + delay), the failure between before/after.
        shortest = (retrying.run_at - after).total_seconds()
        longest = (retrying.run_at - before).total_seconds()
        expected = 2.0 * 2 ** (attempt - 1)
        slack = 0.01  # timestamps stored to the microsecond (or millisecond)
        assert expected * 0.8 - slack <= shortest, (attempt, shortest, expected)
        assert longest <= expected * 1.2 + slack, (attempt, longest, expected)
        delays.append((shortest, longest))
        due = retrying.run_at
    assert delays[0][1] < delays[1][0]
    assert delays[1][1] < delays[2][0]

    last = claim_one(pin_app, NODE, "flaky", now=due)
    assert last.attempts == 4
    assert executor.run(last) is Status.FAILED
    assert pin_app.get(task.id).status is Status.FAILED


# -- 4: a timeout stops the task when it is due, not seconds later ----------------------------


def test_a_timeout_stops_a_checkpointing_task_soon_after_the_limit(pin_app: Stask) -> None:
    task = pin_app.create("spinner", "spin")
    assert task.timeout_seconds is None  # the worker's 0.3 s applies
    started = time.monotonic()
    assert pin_app.process_pending() == 1
    wall = time.monotonic() - started

    done = pin_app.get(task.id)
    assert done.status is Status.FAILED
    assert done.message is not None
    assert "timed out after 0.3 s" in done.message
    assert done.duration_ms is not None
    # Measured, not the configured limit: stopped after 0.3 s and well before 3 s.
    assert 300 <= done.duration_ms < 3000, done.duration_ms
    assert wall < 30  # a bound on the whole call, far above any sane run; 5 s late still fails
    assert done.started_at is not None
    assert done.finished_at is not None
    assert (done.finished_at - done.started_at).total_seconds() < 3


def test_a_per_task_timeout_is_measured_too(pin_app: Stask) -> None:
    task = pin_app.create("spinner", "spin", timeout=0.5)
    assert pin_app.process_pending() == 1
    done = pin_app.get(task.id)
    assert done.status is Status.FAILED
    assert done.message is not None
    assert "timed out after 0.5 s" in done.message
    assert done.duration_ms is not None
    assert 500 <= done.duration_ms < 3000, done.duration_ms


# -- 5: a retried attempt's start counts toward rate limits ------------------------------------


@pytest.mark.parametrize("limit", ["worker", "queue"])
def test_a_retried_tasks_start_counts_toward_the_rate_window(pin_app: Stask, limit: str) -> None:
    """Rate 2 per hour: a task that started, failed and waits to retry still used one start."""
    queue = "metered"
    if limit == "worker":
        pin_app.set_worker_rate_limit("flaky", 2, 3600)
    else:
        pin_app.set_queue_limits(queue, rate=2, period_seconds=3600)
    failing = pin_app.create("flaky", "fail", queue=queue)
    others = pin_app.create_many([{"identifier": "flaky", "action": "ok", "queue": queue}] * 3)
    t0 = utcnow() + dt.timedelta(seconds=1)

    [first] = pin_app.store.claims.claim(NODE, ["flaky"], 1, now=t0)
    assert first.id == failing.id
    assert Executor(pin_app, NODE).run(first) is Status.PENDING  # retries after ~2 s
    retrying = pin_app.get(failing.id)
    assert retrying.status is Status.PENDING
    assert retrying.run_at > t0  # not due at t0: the claims below cannot take it again

    second = pin_app.store.claims.claim(NODE, ["flaky"], 10, now=t0)
    assert [task.id for task in second] == [others[0]], "one start left in the hour"
    assert pin_app.store.claims.claim(NODE, ["flaky"], 10, now=t0 + dt.timedelta(seconds=30)) == []
    if limit == "queue":
        assert pin_app.queue(queue).started_in_period == 2
    # Once the hour has passed, starts are free again (the retry is due by then too).
    later = pin_app.store.claims.claim(NODE, ["flaky"], 10, now=t0 + dt.timedelta(seconds=3601))
    assert len(later) == 2


@pytest.mark.parametrize("limit", ["worker", "queue"])
def test_the_start_of_a_retry_attempt_counts_toward_the_rate_window(
    pin_app: Stask, limit: str
) -> None:
    """Rate 1 per minute: the retry's own start (not its first start) fills the new window."""
    queue = "metered"
    if limit == "worker":
        pin_app.set_worker_rate_limit("flaky", 1, 60)
    else:
        pin_app.set_queue_limits(queue, rate=1, period_seconds=60)
    t0 = utcnow() + dt.timedelta(seconds=1)
    failing = pin_app.create("flaky", "fail", queue=queue)
    other = pin_app.create("flaky", "ok", queue=queue, run_at=t0 + dt.timedelta(seconds=40))

    first = claim_one(pin_app, NODE, "flaky", now=t0)
    assert first.id == failing.id
    assert Executor(pin_app, NODE).run(first) is Status.PENDING
    assert pin_app.get(failing.id).run_at < t0 + dt.timedelta(seconds=40)
    assert pin_app.store.claims.claim(NODE, ["flaky"], 10, now=t0 + dt.timedelta(seconds=59)) == []

    retried = claim_one(pin_app, NODE, "flaky", now=t0 + dt.timedelta(seconds=61))
    assert (retried.id, retried.attempts) == (failing.id, 2)
    assert retried.started_at == t0 + dt.timedelta(seconds=61)
    # The retry started at t0+61, so the minute after it has no room for the other task.
    assert pin_app.store.claims.claim(NODE, ["flaky"], 10, now=t0 + dt.timedelta(seconds=62)) == []
    assert pin_app.store.claims.claim(NODE, ["flaky"], 10, now=t0 + dt.timedelta(seconds=120)) == []
    later = pin_app.store.claims.claim(NODE, ["flaky"], 10, now=t0 + dt.timedelta(seconds=122))
    assert [task.id for task in later] == [other.id]


# -- 6: with more than 32 queues, a paused one stays paused -----------------------------------


@pytest.mark.parametrize("served", ["named", "all"])
def test_a_runner_with_40_queues_never_claims_from_the_paused_one(
    pin_app: Stask, tmp_path: Path, served: str
) -> None:
    names = [f"q{n:02d}" for n in range(40)]
    log = str(tmp_path / "touched.log")
    pin_app.pause_queue("q00")
    # The paused queue's tasks come first in claim order (high priority, created first).
    held = pin_app.create_many(
        [{"identifier": "toucher", "action": "touch", "queue": "q00", "options": {"log": log}}] * 3,
        priority="high",
    )
    flowing = pin_app.create_many(
        [
            {"identifier": "toucher", "action": "touch", "queue": name, "options": {"log": log}}
            for name in names[1:]
        ],
        priority="low",
    )
    queues = tuple(names) if served == "named" else ()
    runner = Runner(pin_app, RunnerOptions(concurrency=2, poll_seconds=0.05, queues=queues))
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(
            lambda: all(pin_app.get(i).is_finished for i in flowing),
            what=lambda: f"the open queues done: {pin_app.stats()}",
        )
        wait_until(lambda: runner.idle, what="the runner idle")
        assert [pin_app.get(i).status for i in held] == [Status.PENDING] * 3
        assert [pin_app.get(i).attempts for i in held] == [0] * 3
        pin_app.resume_queue("q00")
        wait_until(lambda: all(pin_app.get(i).is_finished for i in held), what="q00 done")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert pin_app.stats()["completed"] == 42


# -- 7: options must be a dict with string keys ------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [[1, 2], {1: "x"}, "rows=1", (("rows", 1),), {"ok": 1, 2: "two"}],
    ids=["list", "int-key", "str", "tuple", "mixed-keys"],
)
def test_options_that_are_not_a_dict_of_string_keys_are_refused(
    pin_app: Stask, options: Any
) -> None:
    with pytest.raises(InvalidOptions):
        pin_app.create("toucher", "touch", options)
    with pytest.raises(InvalidOptions):
        pin_app.create_many([("flaky", "ok"), ("toucher", "touch", options)])
    with pytest.raises(InvalidOptions):
        pin_app.create_many(
            [("flaky", "ok"), {"identifier": "toucher", "action": "touch", "options": options}]
        )
    assert pin_app.count() == 0
    assert pin_app.store.task_reads.queued_count() == 0


# -- 8: clean_old_files keeps the folders of tasks that exist ----------------------------------


def test_clean_old_files_removes_only_folders_of_tasks_that_are_gone(
    app: Stask, storage: Path
) -> None:
    forty_days_ago = time.time() - 40 * 86400
    task = app.create("inventory", "export")
    assert app.process_pending() == 1
    kept = app.get(task.id)
    assert kept.status is Status.COMPLETED
    kept_folder = storage / "tasks" / str(kept.id)
    assert kept_folder.is_dir()
    waiting = app.create("mailer", "send")  # exists, has a folder, never ran
    waiting_folder = storage / "tasks" / str(waiting.id)
    waiting_folder.mkdir(parents=True)

    deleted = app.create("mailer", "send")
    app.delete(deleted.id)
    with pytest.raises(TaskNotFound):
        app.get(deleted.id)
    deleted_folder = storage / "tasks" / str(deleted.id)
    deleted_folder.mkdir(parents=True)
    (deleted_folder / "left.txt").write_text("left behind", encoding="utf-8")
    recent_orphan = storage / "tasks" / "999999"
    recent_orphan.mkdir(parents=True)
    for folder in (kept_folder, waiting_folder, deleted_folder):
        os.utime(folder, (forty_days_ago, forty_days_ago))

    assert app.clean_old_files(days=30) == 1

    assert not deleted_folder.exists()
    assert kept_folder.is_dir()
    assert waiting_folder.is_dir()
    assert recent_orphan.is_dir()  # younger than 30 days
    assert app.result_file(kept.id).read_text(encoding="utf-8") == "id,name\n1,a\n"
    assert app.clean_old_files(days=30) == 0


# -- 9: SIGTERM hands prefetched tasks back at once, not after the grace -----------------------


@pytest.fixture
def worker_proc(
    cli_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    env = {
        **cli_env,
        "STASK_WORKERS": WORKERS,
        "STASK_LEASE_SECONDS": "5",
        "STASK_HEARTBEAT_SECONDS": "0.5",
    }

    with Processes(tmp_path, "worker") as workers:

        def start(*args: str) -> subprocess.Popen[str]:
            return workers.start([STASK, "worker", "--poll", "0.1", *args], env)

        yield start


def test_sigterm_hands_prefetched_tasks_back_before_the_grace_ends(
    pin_app: Stask, worker_proc: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    held = pin_app.create("holder", "hold", {"log": str(log), "release": str(release)})
    prefetched = pin_app.create_many(
        [("toucher", "touch", {"log": str(tmp_path / "touched.log")}) for _ in range(3)]
    )
    proc = worker_proc("-c", "1", "--prefetch", "3", "--grace", "120")
    wait_until(lambda: log.exists() and "start" in log.read_text(), what="the long task's start")
    wait_until(
        lambda: all(pin_app.get(i).status is Status.RUNNING for i in prefetched),
        what="the prefetch claimed",
    )
    proc.send_signal(signal.SIGTERM)

    # Far less than the 120 s grace: the runner gives back what it never started at once.
    wait_until(
        lambda: all(pin_app.get(i).status is Status.PENDING for i in prefetched),
        timeout=20,
        what=lambda: f"prefetched back: {[pin_app.get(i).status for i in prefetched]}",
    )
    assert proc.poll() is None, "the runner waits for its running task"
    assert pin_app.get(held.id).status is Status.RUNNING
    assert "end" not in log.read_text()
    for task_id in prefetched:
        back = pin_app.get(task_id)
        assert back.attempts == 0  # released, not failed
        assert back.locked_by is None
    assert not (tmp_path / "touched.log").exists()

    release.touch()  # the long task ends within the grace and is recorded
    assert proc.wait(timeout=60) == 0
    assert pin_app.get(held.id).status is Status.COMPLETED
    assert all(pin_app.get(i).status is Status.PENDING for i in prefetched)
    assert pin_app.store.task_reads.queued_count() == 3
