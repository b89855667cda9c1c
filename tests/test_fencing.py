"""One attempt at a time: every write of an attempt is fenced by its claim, prefetched tasks
are not running, and a rescue or a cancel never lets an old claim write or a task run twice."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update

from stask import Stask, Status
from stask.core.executor import Executor
from stask.db.engine import build_engine
from stask.db.nodes import STALE_COLUMNS, NodeStore
from stask.db.tables import queue, tasks
from stask.errors import DatabaseConflict, DatabaseError, DatabaseUnavailable, StaskError
from stask.models import Claim, NodeInfo, Outcome, utcnow
from stask.runner import Runner, RunnerOptions
from tests.conftest import fresh_app
from tests.helpers import wait_until
from tests.test_runner import STASK

NODE = "node-a"
LEASE = 30.0
HOUR = dt.timedelta(hours=1)
DONE = Outcome(status=Status.COMPLETED, message="done", result={"ok": True})


def node(node_id: str) -> NodeInfo:
    return NodeInfo(id=node_id, host="h", pid=1, concurrency=1, queues=[], version="t")


def backdate(app: Stask, task_ids: list[int], by: dt.timedelta = HOUR) -> None:
    """Make tasks look claimed long ago, so a rescue past the lease may take them."""
    with app.store.engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id.in_(task_ids)).values(locked_at=utcnow() - by))


def log_lines(app: Stask, task_id: int) -> list[str]:
    return [entry.message for entry in app.get_logs(task_id)]


def attempt_log(claim: Claim, message: str) -> dict[str, Any]:
    return {
        "task_id": claim.id,
        "token": claim.token,
        "ts": utcnow(),
        "level": "info",
        "message": message,
        "context": None,
    }


# -- the fence is the claim, not the node ------------------------------------------------------


def test_the_same_node_claiming_again_after_a_rescue_fences_out_its_old_attempt(
    app: Stask,
) -> None:
    """A node declared dead comes back under its own id and claims the rescued task again:
    the first attempt (still running in a thread) can no longer write anything."""
    nodes = NodeStore(app.store)
    nodes.register(node(NODE))
    task_id = app.create("inventory", "sync_stock").id
    [first] = app.store.claims.claim(NODE, ["inventory"], 1)
    backdate(app, [task_id])
    with app.store.engine.begin() as conn:  # the node went silent past the lease
        conn.execute(text("UPDATE s_nodes SET heartbeat_at = :t"), {"t": utcnow() - HOUR})
    assert nodes.rescue_stale(LEASE).requeued == [task_id]
    nodes.register(node(NODE))  # back, under the same id
    [second] = app.store.claims.claim(NODE, ["inventory"], 1)
    assert (second.id, second.locked_by) == (task_id, NODE)
    assert second.claim_token != first.claim_token

    # Every write of the first attempt is refused...
    assert app.store.claims.save_progress(first.claim, {"progress": 90, "message": "old"}) is None
    assert app.store.claims.cancel_flag(first.claim) is None
    app.store.claims.insert_attempt_logs([attempt_log(first.claim, "old attempt")])
    assert app.store.claims.finish(first.claim, DONE) is False
    assert app.store.task_reads.final_under([first.claim]) == set()
    running = app.get(task_id)
    assert (running.status, running.progress, running.claim_token) == (
        Status.RUNNING,
        0,
        second.claim_token,
    )
    assert "old attempt" not in log_lines(app, task_id)
    # ...and the current one's are written.
    assert app.store.claims.save_progress(second.claim, {"progress": 50, "message": "new"}) is False
    app.store.claims.insert_attempt_logs([attempt_log(second.claim, "current attempt")])
    assert app.store.claims.finish(second.claim, DONE) is True
    assert app.get(task_id).status is Status.COMPLETED
    assert "current attempt" in log_lines(app, task_id)
    assert app.store.task_reads.final_under([second.claim, first.claim]) == {task_id}


def test_a_batch_of_outcomes_writes_only_those_whose_claim_holds(app: Stask) -> None:
    ids = app.create_many([("inventory", "sync_stock")] * 3)
    claimed = app.store.claims.claim(NODE, ["inventory"], 3)
    stale = Claim(ids[1], "0" * 16)  # the same task under a claim that is not its own
    retry = Outcome(status=Status.PENDING, message="again", retry_at=utcnow())
    accepted = app.store.claims.finish_many(
        [(claimed[0].claim, DONE), (stale, DONE), (claimed[2].claim, retry)],
        [attempt_log(claimed[0].claim, "kept"), attempt_log(stale, "refused")],
    )
    assert accepted == {ids[0], ids[2]}
    assert [app.get(i).status for i in ids] == [Status.COMPLETED, Status.RUNNING, Status.PENDING]
    assert log_lines(app, ids[0]) == ["kept"]
    assert log_lines(app, ids[1]) == []


def test_a_claim_takes_only_pending_tasks_even_from_a_stale_queue_row(app: Stask) -> None:
    """Membership of s_queue is not enough: a queue row left behind for a running task must
    not claim it a second time."""
    task_id = app.create("inventory", "sync_stock").id
    [held] = app.store.claims.claim(NODE, ["inventory"], 1)
    with app.store.engine.begin() as conn:  # a queue row that should not be there
        conn.execute(
            insert(queue).values(
                task_id=task_id,
                queue=held.queue,
                identifier=held.identifier,
                priority=held.priority.weight,
                run_at=held.run_at,
            )
        )
    assert app.store.claims.claim("node-b", ["inventory"], 5) == []
    assert app.get(task_id).claim_token == held.claim_token
    # The one-statement turn (PostgreSQL, SQLite) checks it too.
    assert app.store.claims.record_and_claim("node-b", ["inventory"], 5)[0] == []


# -- prefetched is not running ---------------------------------------------------------------


def test_prefetched_tasks_are_held_but_not_started(app: Stask) -> None:
    ids = app.create_many([("inventory", "sync_stock")] * 3)
    claimed = app.store.claims.claim(NODE, ["inventory"], 3, start=1)
    assert [t.id for t in claimed] == ids
    stored = [app.get(i) for i in ids]
    assert [t.status for t in stored] == [Status.RUNNING] * 3
    assert [t.attempts for t in stored] == [1, 0, 0]
    assert stored[0].started_at is not None
    assert [t.started_at for t in stored[1:]] == [None, None]
    assert [t.started_at is None for t in claimed] == [False, True, True]
    # The start of a prefetched one counts its attempt, once.
    assert app.store.claims.start_attempt(claimed[1].claim) == 1
    assert app.store.claims.start_attempt(claimed[1].claim) is None
    assert app.get(ids[1]).started_at is not None
    assert app.store.claims.start_attempt(Claim(ids[2], "0" * 16)) is None


def test_the_turn_starts_only_the_tasks_for_free_slots(app: Stask) -> None:
    ids = app.create_many([("inventory", "sync_stock")] * 4)
    claimed, _ = app.store.claims.record_and_claim(NODE, ["inventory"], 4, start=2)
    assert [t.id for t in claimed] == ids
    assert [app.get(i).attempts for i in ids] == [1, 1, 0, 0]
    assert [t.attempts for t in claimed] == [1, 1, 0, 0]


def test_a_rescue_gives_back_the_attempt_of_a_task_that_never_started(app: Stask) -> None:
    """The runner crashed while the task was only prefetched: a max_attempts = 1 task is not
    failed, and no attempt is spent on a run that never happened."""
    once = app.create("inventory", "sync_stock", max_attempts=1).id
    running = app.create("inventory", "sync_stock", max_attempts=1).id
    prefetched = app.create("inventory", "sync_stock", max_attempts=1).id
    app.store.claims.claim("dead", ["inventory"], 1)
    [started, unstarted] = app.store.claims.claim("dead", ["inventory"], 2, start=1)
    assert (started.id, unstarted.id) == (running, prefetched)
    backdate(app, [once, running, prefetched])

    rescue = NodeStore(app.store).rescue_stale(LEASE)

    assert sorted(rescue.failed) == [once, running]
    assert rescue.requeued == [prefetched]
    back = app.get(prefetched)
    assert (back.status, back.attempts, back.locked_by) == (Status.PENDING, 0, None)
    assert back.message is not None
    assert "before it started" in back.message
    assert app.get(running).status is Status.FAILED
    [again] = app.store.claims.claim(NODE, ["inventory"], 5)
    assert (again.id, again.attempts) == (prefetched, 1)


def test_a_cancel_of_a_prefetched_task_ends_it_and_its_start_is_refused(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id
    [held] = app.store.claims.claim(NODE, ["inventory"], 1, start=0)

    cancelled = app.cancel(task_id)

    assert cancelled.status is Status.CANCELLED
    assert cancelled.finished_at is not None
    assert log_lines(app, task_id) == ["Cancelled before it started"]
    assert app.store.claims.start_attempt(held.claim) is None
    assert Executor(app, NODE).run(held) is None  # the action never runs
    assert app.get(task_id).status is Status.CANCELLED
    assert app.get(task_id).attempts == 0


def test_a_rescue_ends_a_cancel_requested_task_instead_of_running_it_again(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id
    app.store.claims.claim("dead", ["inventory"], 1)
    assert app.cancel(task_id).cancel_requested  # started: only flagged
    backdate(app, [task_id])

    rescue = NodeStore(app.store).rescue_stale(LEASE)

    assert rescue.cancelled == [task_id]
    assert rescue.requeued == []
    ended = app.get(task_id)
    assert ended.status is Status.CANCELLED
    assert app.store.task_reads.queued_count() == 0
    assert app.store.claims.claim(NODE, ["inventory"], 5) == []


def test_a_rescue_never_takes_a_task_whose_node_is_live_again(app: Stask) -> None:
    """The rescuer read its live set before the node's heartbeat landed: its take-over, fenced
    by the node being silent, still leaves the task alone."""
    nodes = NodeStore(app.store)
    task_id = app.create("inventory", "sync_stock").id
    app.store.claims.claim("back", ["inventory"], 1)
    backdate(app, [task_id])
    with app.store.reading() as conn:
        row = conn.execute(select(*STALE_COLUMNS).where(tasks.c.id == task_id)).one()
    nodes.register(node("back"))  # the heartbeat lands after the live set was read
    assert not nodes._take_over(
        row, Status.PENDING, utcnow() - dt.timedelta(seconds=LEASE), utcnow()
    )
    assert app.get(task_id).status is Status.RUNNING


def test_release_at_shutdown_refunds_only_started_attempts(app: Stask) -> None:
    ids = app.create_many([("inventory", "sync_stock")] * 3)
    claimed = app.store.claims.claim(NODE, ["inventory"], 3, start=1)
    assert app.cancel(ids[2]).status is Status.CANCELLED  # prefetched: ends at once
    flagged = app.create("inventory", "sync_stock").id
    [running] = app.store.claims.claim(NODE, ["inventory"], 1)
    app.cancel(flagged)

    released = NodeStore(app.store).release(
        [task.claim for task in claimed] + [running.claim], "Released: shutdown"
    )

    assert released == [ids[0], ids[1], flagged]
    assert [app.get(i).attempts for i in ids[:2]] == [0, 0]
    assert [app.get(i).status for i in ids[:2]] == [Status.PENDING] * 2
    assert app.get(flagged).status is Status.CANCELLED  # its cancel is honoured, not rerun


# -- operator actions take the claim's lock order ----------------------------------------------


def test_cancel_locks_the_queue_row_before_the_task_row(app: Stask, db_url: str) -> None:
    """A claim locks the s_queue row, then the task row; cancel, retry and delete do the same,
    or a cancel and a claim deadlock (reproduced on MariaDB)."""
    if app.store.dialect == "sqlite":
        pytest.skip("SQLite has one writer at a time: there are no row locks to order")
    task_id = app.create("inventory", "sync_stock").id
    engine = build_engine(db_url)
    try:
        with engine.connect() as holder:
            holder.execute(select(queue).where(queue.c.task_id == task_id).with_for_update())
            done = threading.Event()
            threading.Thread(target=lambda: (app.cancel(task_id), done.set()), daemon=True).start()
            time.sleep(0.5)
            assert not done.is_set()  # the cancel waits on the queue row...
            with engine.connect() as probe:  # ...and holds no lock on the task row meanwhile
                locked = text("SELECT id FROM s_tasks WHERE id = :id FOR UPDATE NOWAIT")
                probe.execute(locked, {"id": task_id})
                probe.rollback()
            holder.rollback()
        assert done.wait(10)
        assert app.get(task_id).status is Status.CANCELLED
    finally:
        engine.dispose()


def test_a_deadlock_is_reported_as_a_conflict_not_as_a_server_that_is_down() -> None:
    import pymysql
    from sqlalchemy import exc

    from stask.db.engine import translate_errors

    with pytest.raises(DatabaseConflict) as caught, translate_errors("mysql+pymysql://x@h/db"):
        raise exc.OperationalError(
            "UPDATE s_tasks", {}, pymysql.err.OperationalError(1213, "Deadlock found")
        )
    assert "aborted the transaction (deadlock" in caught.value.message
    assert "server is running" not in caught.value.message
    assert not isinstance(caught.value, DatabaseUnavailable)


# -- a runner gives up what it held when its lease may be gone ---------------------------------


@pytest.fixture
def runner_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, "tests.runner_workers")


def test_a_node_declared_dead_gives_up_what_it_held_before_it_claims_again(
    runner_app: Stask, tmp_path: Path
) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    options = {"log": str(log), "release": str(release)}
    held = runner_app.create("long", "hold", options)
    prefetched = runner_app.create("long", "hold", options)
    runner = Runner(runner_app, RunnerOptions(concurrency=1, prefetch=1, poll_seconds=0.05))
    runner.liveness.heartbeat_seconds = 0.1
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(lambda: log.exists() and "start" in log.read_text(), what="start")
        wait_until(lambda: runner_app.get(prefetched.id).status is Status.RUNNING, what="prefetch")
        token = runner_app.get(prefetched.id).claim_token
        assert runner_app.get(prefetched.id).started_at is None
        with runner_app.store.engine.begin() as conn:  # another node declared this one dead
            conn.execute(text("DELETE FROM s_nodes"))
        # The prefetched claim goes back at once (not after the lease): claimed afresh since.
        wait_until(
            lambda: runner_app.get(prefetched.id).claim_token != token,
            timeout=10,
            what="the prefetched claim back",
        )
        # It stops the running attempt and gives both claims back, then claims afresh.
        wait_until(lambda: log.read_text().count("start") == 2, what="a task to run again")
        lines = [line.split()[:2] for line in log.read_text().splitlines()]
        assert lines[0] == ["start", str(held.id)]  # stopped at a checkpoint: no "end" line
        assert lines[1][0] == "start"
        release.touch()
        wait_until(
            lambda: all(
                runner_app.get(t.id).status is Status.COMPLETED for t in (held, prefetched)
            ),
            what="both to complete after the node came back",
        )
    finally:
        runner.request_stop()
        thread.join(timeout=30)
    # The run it gave up was given back uncounted; the prefetched one never started then.
    assert [runner_app.get(t.id).attempts for t in (held, prefetched)] == [1, 1]
    assert NodeStore(runner_app.store).all() == []  # left cleanly


def test_the_heartbeat_survives_any_error_and_never_calls_worker_code(
    runner_app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = Runner(runner_app, RunnerOptions(concurrency=1))
    beats: list[int] = []
    real = runner.liveness.nodes.heartbeat

    def hiccup(node_id: str, now: Any = None, pace: Any = None) -> bool:
        beats.append(1)
        if len(beats) % 2:
            raise RuntimeError("a config service hiccup")
        return real(node_id, now, pace)

    monkeypatch.setattr(runner.liveness.nodes, "heartbeat", hiccup)
    liveness = runner.liveness
    liveness.heartbeat_seconds = 0.05
    liveness.start()
    try:
        wait_until(lambda: len(beats) >= 6, what="heartbeats after errors")
        assert liveness._thread is not None
        assert liveness._thread.is_alive()
    finally:
        liveness.stop()
        runner.db.close()
    assert liveness.on_tick is None  # schedules (worker code) run on the scheduler thread


def test_heartbeats_that_keep_failing_give_the_tasks_up_before_the_lease_ends(
    runner_app: Stask,
) -> None:
    lost = threading.Event()

    class Failing(NodeStore):
        def heartbeat(self, node_id: str, now: Any = None) -> bool:
            raise RuntimeError("the database hangs up")

    from stask.core.liveness import Liveness

    liveness = Liveness(
        Failing(runner_app.store),
        "n",
        lease_seconds=0.6,
        heartbeat_seconds=0.05,
        on_lost=lost.set,
    )
    liveness.start()
    try:
        assert lost.wait(5), "on_lost was never called"
        assert not liveness.healthy
    finally:
        liveness.stop()


def test_a_runner_that_fails_to_start_leaves_nothing_registered(
    runner_app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = Runner(runner_app, RunnerOptions(concurrency=1))

    class Broken:
        def start(self) -> None:
            raise StaskError("cannot listen")

        def stop(self) -> None:
            pass

    runner.listener = Broken()  # type: ignore[assignment]
    with pytest.raises(StaskError, match="cannot listen"):
        runner.run()
    assert NodeStore(runner_app.store).all() == []
    assert runner.liveness._thread is None or not runner.liveness._thread.is_alive()


@pytest.mark.slow
def test_ctrl_c_stops_run_pending_and_gives_the_task_back(
    runner_app: Stask, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A task's own KeyboardInterrupt is its failure; the person's Ctrl-C stops the batch."""
    log, release = tmp_path / "events.log", tmp_path / "release"
    held = runner_app.create("long", "hold", {"log": str(log), "release": str(release)})
    env = {**cli_env, "STASK_WORKERS": "tests.runner_workers"}
    proc = subprocess.Popen(
        [STASK, "run-pending"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: log.exists() and "start" in log.read_text(), what="start")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in err
    back = runner_app.get(held.id)
    assert (back.status, back.attempts) == (Status.PENDING, 0), back
    assert back.message == "Released: run-pending was interrupted"


def test_max_runs_bounds_a_failing_task_whatever_its_max_attempts(app: Stask) -> None:
    app.settings.max_runs = 2
    task_id = app.create("inventory", "fail", max_attempts=10).id
    for _ in range(3):
        with app.store.engine.begin() as conn:  # its retries are due now
            conn.execute(update(queue).values(run_at=utcnow() - HOUR))
        app.process_pending()
    done = app.get(task_id)
    assert (done.status, done.attempts) == (Status.FAILED, 2)


def test_run_pending_records_an_outcome_the_database_refuses_as_that_tasks_failure(
    app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As in the daemon: a value the database refuses fails its own task with the reason and
    the batch goes on; a database that is away still stops it."""
    real = app.store.claims.finish_many
    refused: list[int] = []

    def refusing(finished: Any, logs: Any = ()) -> set[int]:
        claim, outcome = finished[0]
        if outcome.status is Status.COMPLETED and claim.id not in refused:
            refused.append(claim.id)
            raise DatabaseError("database error: value too long for type character varying")
        return real(finished, logs)

    monkeypatch.setattr(app.store.claims, "finish_many", refusing)
    first, second = app.create_many([("inventory", "sync_stock")] * 2)
    assert app.process_pending() == 2
    for task_id in (first, second):
        done = app.get(task_id)
        assert done.status is Status.FAILED
        assert done.message is not None
        assert "could not record this task's outcome" in done.message
        assert "value too long" in done.message

    def away(finished: Any, logs: Any = ()) -> set[int]:
        raise DatabaseUnavailable("cannot use the database")

    monkeypatch.setattr(app.store.claims, "finish_many", away)
    app.create("inventory", "sync_stock")
    with pytest.raises(DatabaseUnavailable):
        app.process_pending()
