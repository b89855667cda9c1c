"""The prefetch that adapts to task length (runner/pace.py): claimed beyond the free slots are
only actions known to finish within a turn, so no runner holds a long task another could run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stask import Stask, Status
from stask.models import Ahead
from stask.runner import Runner, RunnerOptions
from stask.runner.pace import PREFETCH_PER_SLOT, SEED_WEIGHT, Pace, action_key
from tests.conftest import fresh_app
from tests.helpers import wait_until
from tests.test_cli import stask, stask_json

WORKERS = "tests.runner_workers"
SHORT = "counter:touch"


@pytest.fixture
def runner_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, WORKERS)


# -- Pace ----------------------------------------------------------------------------------------


def test_nothing_is_claimed_ahead_before_anything_was_timed() -> None:
    pace = Pace(4)
    assert pace.prefetch() == 0
    assert pace.short_actions() == []
    pace.turn_took(0.002)
    assert pace.prefetch() == 0  # turns timed, attempts not yet


def test_the_prefetch_is_what_the_slots_finish_within_a_turn_within_the_bound() -> None:
    pace = Pace(4)
    pace.turn_took(0.004)
    pace.attempt_took(0.001, SHORT)
    assert pace.prefetch() == 16  # 4 slots x 4 ms / 1 ms
    fast = Pace(4)
    fast.turn_took(0.004)
    fast.attempt_took(0.00001, SHORT)
    assert fast.prefetch() == PREFETCH_PER_SLOT * 4
    slow = Pace(4)
    slow.turn_took(0.004)
    slow.attempt_took(0.2, "long:hold")
    assert slow.prefetch() == 0


def test_a_fixed_prefetch_stays_whatever_was_observed() -> None:
    pace = Pace(4, fixed=3)
    assert pace.prefetch() == 3
    assert not pace.adaptive
    pace.turn_took(0.004)
    pace.attempt_took(0.00001, SHORT)
    assert pace.prefetch() == 3
    assert pace.report()["adaptive"] is False


def test_only_actions_known_to_finish_within_a_turn_are_short() -> None:
    pace = Pace(2)
    pace.turn_took(0.005)
    pace.attempt_took(0.001, SHORT)
    pace.attempt_took(0.5, "long:hold")
    assert pace.short_actions() == [SHORT]


def test_what_one_action_taught_does_not_leak_to_another() -> None:
    """A new action starts from the conservative default (not claimed ahead), whatever the
    same worker's other actions or another worker's same-named action taught."""
    pace = Pace(2)
    pace.turn_took(0.005)
    for _ in range(50):
        pace.attempt_took(0.0001, "counter:touch")
    assert pace.short_actions() == ["counter:touch"]
    assert "counter:other" not in pace.short_actions()
    assert "other:touch" not in pace.short_actions()
    pace.attempt_took(0.0001, "other:touch")
    assert pace.short_actions() == ["counter:touch", "other:touch"]


def test_an_action_that_becomes_long_stops_being_claimed_ahead() -> None:
    pace = Pace(2)
    pace.turn_took(0.005)
    pace.attempt_took(0.0001, SHORT)
    for _ in range(30):
        pace.attempt_took(0.4, SHORT)
    assert pace.short_actions() == []
    assert pace.prefetch() == 0


def test_durations_seeded_from_the_database_count_for_little() -> None:
    pace = Pace(2)
    pace.seed([(SHORT, 0.0005, 1000), ("long:hold", 3.0, 2)])
    assert pace.learned()[SHORT].seen == SEED_WEIGHT
    assert pace.attempt_seconds is not None  # the seeded mix gives a prefetch after a turn
    pace.turn_took(0.004)
    assert pace.short_actions() == [SHORT]
    assert pace.prefetch() > 0
    for _ in range(20):  # what this runner sees takes over from the seed
        pace.attempt_took(1.0, SHORT)
    assert pace.learned()[SHORT].seconds > 0.8
    again = Pace(2)
    again.attempt_took(0.2, SHORT)
    again.seed([(SHORT, 0.0001, 50)])  # a seed never replaces what was observed
    assert again.learned()[SHORT].seconds == 0.2


def test_the_report_shows_the_prefetch_and_what_it_came_from() -> None:
    pace = Pace(4)
    pace.turn_took(0.004)
    pace.attempt_took(0.001, SHORT)
    report = pace.report()
    assert report["prefetch"] == 16
    assert report["adaptive"] is True
    assert report["bound"] == 4 * PREFETCH_PER_SLOT
    assert report["turn_ms"] == 4.0
    assert report["actions"] == {SHORT: {"ms": 1.0, "seen": 1}}


# -- the claim -----------------------------------------------------------------------------------


def test_beyond_the_free_slots_a_claim_takes_only_short_actions(
    runner_app: Stask, tmp_path: Path
) -> None:
    """Tasks in claim order: long, short, long, short, short. With one free slot and room for
    four, the first is taken whatever it is, then only short ones: no long task is held."""
    log, release = str(tmp_path / "log"), str(tmp_path / "release")
    kinds = ["long", "short", "long", "short", "short"]
    ids = [
        runner_app.create("long", "hold", {"log": log, "release": release}).id
        if kind == "long"
        else runner_app.create("counter", "touch", {"log": log}).id
        for kind in kinds
    ]
    claims = runner_app.store.claims
    claimed, _ = claims.record_and_claim(
        "node-a", ["counter", "long"], 4, start=1, ahead=Ahead(1, (SHORT,))
    )
    taken = [task.id for task in claimed]
    assert taken[0] == ids[0]  # the free slot's task, long as it is
    assert ids[1] in taken
    assert ids[3] in taken
    assert ids[2] not in taken  # the second long one stays queued for another runner
    assert len(taken) <= 4
    assert runner_app.get(ids[2]).status is Status.PENDING
    assert runner_app.get(ids[0]).started_at is not None  # the free slot's task started
    # Without the limit (a fixed --prefetch), the window is taken as it comes.
    rest, _ = claims.record_and_claim("node-b", ["counter", "long"], 10, start=0)
    assert ids[2] in [task.id for task in rest]


def test_a_claim_ahead_with_no_short_action_takes_the_free_slots_only(runner_app: Stask) -> None:
    ids = [runner_app.create("counter", "touch", {"log": "/dev/null"}).id for _ in range(4)]
    claimed, _ = runner_app.store.claims.record_and_claim(
        "node-a", ["counter"], 4, start=2, ahead=Ahead(2, ())
    )
    assert [task.id for task in claimed] == ids[:2]


# -- two runners ---------------------------------------------------------------------------------


def _started(log: Path) -> dict[int, float]:
    if not log.exists():
        return {}
    found = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if parts[0] == "start":
            found[int(parts[1])] = float(parts[3])
    return found


def test_no_runner_holds_a_long_task_while_another_runner_is_idle(
    runner_app: Stask, db_url: str, storage: Path, tmp_path: Path
) -> None:
    """Runner A has learned that ``counter:touch`` is short, so it claims ahead. Four long
    tasks arrive (an action it has never timed), then short ones: A takes two long ones for its
    two slots, but holds neither of the other two, nor claims more while both its slots are
    stuck. They wait in the queue and start on runner B, idle until then, while A's still run.
    """
    log, release = tmp_path / "events.log", tmp_path / "release"
    options = RunnerOptions(concurrency=2, poll_seconds=0.05, grace_seconds=5)
    first = Runner(runner_app, options)
    second_app = Stask(
        database_url=db_url, storage=storage, workers=[WORKERS], use_entry_points=False
    )
    second = Runner(second_app, options)
    threads: list[threading.Thread] = []
    try:
        threads.append(threading.Thread(target=first.run))
        threads[-1].start()
        taught = runner_app.create_many(
            [("counter", "touch", {"log": str(tmp_path / "warm")}) for _ in range(60)]
        )
        wait_until(lambda: first.completed >= len(taught), what="the warm-up tasks")
        first.pace.turn_took(0.01)  # however fast the turns were, touch fits one by far
        assert SHORT in first.pace.short_actions()
        assert first.prefetch > 0
        long_ids = runner_app.create_many(
            [("long", "hold", {"log": str(log), "release": str(release)}) for _ in range(4)]
        )
        wait_until(lambda: len(_started(log)) >= 2, what="two long tasks started")
        after = runner_app.create_many([("counter", "touch", {"log": str(tmp_path / "after")})] * 8)
        time.sleep(0.5)  # several more turns of A with both its slots busy
        held = [runner_app.get(i) for i in long_ids]
        assert sorted(t.status.value for t in held) == ["pending", "pending", "running", "running"]
        assert {t.locked_by for t in held if t.status is Status.RUNNING} == {first.node_id}
        # Nothing claimed ahead while both slots are stuck on long tasks.
        assert all(runner_app.get(i).status is Status.PENDING for i in after)
        assert first.pace.prefetch(0) == 0
        threads.append(threading.Thread(target=second.run))
        threads[-1].start()
        wait_until(lambda: len(_started(log)) == 4, what="all four long tasks started")
        assert not release.exists()  # A's two were still running when B started the others
        running = [runner_app.get(i) for i in long_ids]
        assert all(t.status is Status.RUNNING for t in running)
        assert sorted(t.locked_by or "" for t in running) == sorted(
            [first.node_id] * 2 + [second.node_id] * 2
        )
        release.touch()
        wait_until(
            lambda: all(runner_app.get(i).status is Status.COMPLETED for i in [*long_ids, *after]),
            what="every task completed",
        )
        assert action_key("long", "hold") not in first.pace.short_actions()
    finally:
        release.touch()
        for runner in (first, second):
            runner.request_stop()
        for thread in threads:
            thread.join(timeout=30)
        second_app.close()
    assert runner_app.runners() == []  # both stopped and deregistered


def test_a_runner_shows_its_prefetch_and_learned_durations(
    runner_app: Stask, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Its heartbeat writes what it learned; `stask runners` shows it; a new runner starts
    from the durations of recent finished tasks."""
    env = {**cli_env, "STASK_WORKERS": WORKERS}
    assert "No runners" in stask(env, "runners").stdout
    runner = Runner(runner_app, RunnerOptions(concurrency=2, poll_seconds=0.05))
    runner.liveness.heartbeat_seconds = 0.05
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        runner_app.create_many([("counter", "touch", {"log": str(tmp_path / "t")})] * 20)
        wait_until(lambda: runner.completed >= 20, what="the tasks")

        def reported() -> dict[str, Any] | None:
            [row] = runner_app.runners()
            pace = row["pace"]
            return pace if pace and SHORT in pace["actions"] else None

        wait_until(lambda: reported() is not None, what="a heartbeat with the learned pace")
        pace = reported()
        assert pace is not None
        assert pace["adaptive"] is True
        assert pace["actions"][SHORT]["seen"] >= 20
        [listed] = stask_json(env, "runners")
        assert listed["id"] == runner.node_id
        assert listed["pace"]["actions"][SHORT]["seen"] >= 20
        table = stask({**env, "COLUMNS": "200"}, "runners").stdout  # no column wrapped
        assert runner.node_id[:20] in table
        assert SHORT in table
        assert "adaptive" in table
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    fresh = Runner(runner_app, RunnerOptions(concurrency=2))
    fresh._seed_pace()
    fresh.db.close()  # never run: its own pool is closed here (run() closes it at its end)
    learned = fresh.pace.learned()
    assert set(learned) == {SHORT}
    assert learned[SHORT].seen == SEED_WEIGHT
    fixed = Runner(runner_app, RunnerOptions(concurrency=2, prefetch=3))
    fixed._seed_pace()
    fixed.db.close()
    assert fixed.pace.learned() == {}
    assert fixed.prefetch == 3


# -- turns in flight -----------------------------------------------------------------------------


def test_a_second_turn_goes_out_while_a_slow_turn_is_in_flight(
    runner_app: Stask, tmp_path: Path
) -> None:
    """Turns slowed down (a far database): on a server the runner keeps two in flight, so
    the slots do not wait for one whole turn per batch; every task still runs once. SQLite's
    writers take turns, so it keeps one."""
    runner = Runner(runner_app, RunnerOptions(concurrency=2, poll_seconds=0.05))
    real = runner.db.record_and_claim
    flying = [0, 0]  # in flight now, most at once
    lock = threading.Lock()

    def slow(*args: Any, **kwargs: Any) -> Any:
        with lock:
            flying[0] += 1
            flying[1] = max(flying)
        try:
            time.sleep(0.03)
            return real(*args, **kwargs)
        finally:
            with lock:
                flying[0] -= 1

    runner.db.record_and_claim = slow  # type: ignore[method-assign]
    log = tmp_path / "touched"
    ids = runner_app.create_many([("counter", "touch", {"log": str(log)})] * 400)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: runner.completed >= len(ids), timeout=120, what="the drain")
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    touched = [int(line.split()[0]) for line in log.read_text().splitlines()]
    assert sorted(touched) == sorted(ids)  # each once
    assert flying[1] == (1 if runner_app.store.dialect == "sqlite" else 2)


def test_held_claims_are_checked_only_with_no_turn_in_flight(
    runner_app: Stask, db_url: str
) -> None:
    """The check that releases claims this process does not know of (a claim whose answer was
    lost) waits for the turns in flight: their claims are in the database before their answer
    reaches the runner, and must not be taken for lost ones."""
    runner = Runner(runner_app, RunnerOptions(concurrency=2, poll_seconds=0.05))
    real = runner.db.record_and_claim
    entered, answer = threading.Event(), threading.Event()

    def delayed(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)  # committed...
        if found[0]:
            entered.set()
            answer.wait(10)  # ...while its answer is still on its way
        return found

    runner.db.record_and_claim = delayed  # type: ignore[method-assign]
    task = runner_app.create("counter", "touch", {"log": "/dev/null"})
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        assert entered.wait(30)
        checked = threading.Thread(target=runner._reconcile)
        checked.start()
        time.sleep(0.3)
        assert checked.is_alive()  # waiting for the turn in flight
        answer.set()
        checked.join(timeout=10)
        wait_until(lambda: runner_app.get(task.id).is_finished, what="the task")
    finally:
        answer.set()
        runner.request_stop()
        thread.join(timeout=30)
    done = runner_app.get(task.id)
    assert done.status is Status.COMPLETED
    assert done.attempts == 1
    assert not any("Released" in entry.message for entry in runner_app.get_logs(task.id))
