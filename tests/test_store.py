"""The Store contract on SQLite, PostgreSQL and MariaDB: claim, fence, create, manage, clean."""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event, text, update

import stask.db.housekeeping as housekeeping_module
from stask import Stask, Status
from stask.db import dialects
from stask.db.dialects import hot_path_store, store_for
from stask.db.engine import build_engine, parse_url
from stask.db.rows import NEW_TASK_COLUMNS
from stask.db.store import Store
from stask.db.tables import tasks
from stask.db.task_writes import new_task_rows
from stask.errors import InvalidState, TaskNotFound, ValidationError
from stask.models import Claim, NewTask, Outcome, Priority, Task, utcnow

NODE = "node-a"
OTHER = "node-b"
WORKERS = ["inventory", "mailer"]
MINUTE = dt.timedelta(minutes=1)
DONE = Outcome(status=Status.COMPLETED, message="done", result={"ok": True}, progress=100)
CONCURRENT_TASKS = 300
CLAIM_BATCH = 3


def ids(found: Sequence[Task]) -> list[int]:
    return [task.id for task in found]


def holding(app: Stask, task_id: int) -> Claim:
    """The claim that holds the task now."""
    return app.get(task_id).claim


def stranger(task_id: int) -> Claim:
    """A claim that does not hold the task: another node's, or one that was taken back."""
    return Claim(task_id, "not-its-claim")


def claim_ids(store: Store, limit: int = 100, **kwargs: Any) -> list[int]:
    return ids(store.claims.claim(NODE, kwargs.pop("identifiers", WORKERS), limit, **kwargs))


def drain(store: Store, node_id: str) -> list[int]:
    """Claim small batches until nothing is left; the ids in the order they were taken."""
    taken: list[int] = []
    while batch := store.claims.claim(node_id, ["inventory"], CLAIM_BATCH):
        taken.extend(ids(batch))
    return taken


def finished(app: Stask, outcome: Outcome = DONE) -> int:
    """A task that ran on NODE and ended with ``outcome``."""
    task = app.create("inventory", "sync_stock")
    assert claim_ids(app.store, identifiers=["inventory"]) == [task.id]
    assert app.store.claims.finish(holding(app, task.id), outcome)
    return task.id


def set_finished_at(engine: Engine, task_ids: Sequence[int], when: dt.datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id.in_(task_ids)).values(finished_at=when))


@contextlib.contextmanager
def inserts_sent(engine: Engine) -> Iterator[list[str]]:
    """Every INSERT statement the driver receives while the block runs."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "INSERT INTO" in statement.upper():  # PostgreSQL's bulk insert starts WITH
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


# -- claiming --------------------------------------------------------------------------------


def test_claim_order_is_priority_then_run_at_then_id(app: Stask) -> None:
    now = utcnow()

    def make(priority: str, minutes: int) -> int:
        run_at = now + minutes * MINUTE
        return app.create("inventory", "sync_stock", priority=priority, run_at=run_at).id

    low_oldest = make("low", -120)
    normal_newer = make("normal", -60)
    high_first = make("high", -10)
    normal_older = make("normal", -120)
    high_second = make("high", -10)
    high_future = make("high", 60)

    taken = []
    while batch := claim_ids(app.store, limit=1, now=now):
        taken.extend(batch)

    assert taken == [high_first, high_second, normal_older, normal_newer, low_oldest]
    assert app.store.task_reads.queued_count() == 1
    assert app.get(high_future).status is Status.PENDING
    assert claim_ids(app.store, now=now + 59 * MINUTE) == []
    assert claim_ids(app.store, now=now + 60 * MINUTE) == [high_future]


def test_claim_returns_a_batch_in_claim_order(app: Stask) -> None:
    low = app.create("inventory", "sync_stock", priority="low").id
    normal = app.create("inventory", "sync_stock").id
    high = app.create("mailer", "send", priority="high").id

    assert claim_ids(app.store, limit=10) == [high, normal, low]


def test_claim_marks_tasks_running_on_the_node_and_empties_the_queue(app: Stask) -> None:
    created = app.create_many([("inventory", "sync_stock", {"n": n}) for n in range(3)])
    assert app.store.task_reads.queued_count() == 3
    now = utcnow()

    claimed = app.store.claims.claim(NODE, ["inventory"], 10, now=now)

    assert ids(claimed) == created
    assert app.store.task_reads.queued_count() == 0
    for task in claimed:
        stored = app.get(task.id)
        assert stored == task
        assert stored.status is Status.RUNNING
        assert (stored.locked_by, stored.locked_at, stored.started_at) == (NODE, now, now)
        assert stored.attempts == 1
        assert stored.finished_at is None
    assert app.store.task_reads.running_task_ids(NODE) == created
    assert claim_ids(app.store, now=now) == []


def test_claim_respects_the_limit(app: Stask) -> None:
    created = app.create_many([("inventory", "sync_stock")] * 5)

    assert claim_ids(app.store, limit=2) == created[:2]
    assert app.store.task_reads.queued_count() == 3
    assert claim_ids(app.store, limit=0) == []
    assert app.store.task_reads.queued_count() == 3


def test_claim_skips_inactive_and_unlisted_workers(app: Stask) -> None:
    stock = app.create("inventory", "sync_stock").id
    mail = app.create("mailer", "send").id
    app.deactivate("mailer")

    assert claim_ids(app.store, identifiers=["mailer"]) == []
    assert claim_ids(app.store, identifiers=["inventory", "mailer"]) == [stock]
    assert app.get(mail).status is Status.PENDING
    assert app.store.task_reads.queued_count() == 1

    app.activate("mailer")
    assert claim_ids(app.store, identifiers=["inventory", "nobody"]) == []
    assert claim_ids(app.store, identifiers=[]) == []
    assert claim_ids(app.store, identifiers=["mailer"]) == [mail]


def test_claim_filters_by_queue(app: Stask) -> None:
    fast = app.create("inventory", "sync_stock", queue="fast").id
    slow = app.create("inventory", "sync_stock", queue="slow").id
    default = app.create("mailer", "send").id

    assert claim_ids(app.store, queues=["fast"]) == [fast]
    assert claim_ids(app.store, queues=["fast"]) == []
    assert claim_ids(app.store, queues=["slow", "default"]) == [slow, default]


def test_threads_claim_every_task_exactly_once(app: Stask, make_store: Callable[[], Store]) -> None:
    created = app.create_many([("inventory", "sync_stock")] * CONCURRENT_TASKS)
    stores = [make_store() for _ in range(4)]
    start = threading.Barrier(len(stores))

    def claimer(index: int) -> list[int]:
        start.wait(timeout=30)
        return drain(stores[index], f"thread-{index}")

    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(claimer, range(len(stores)), timeout=60))

    claimed = [task_id for taken in results for task_id in taken]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert set(claimed) == set(created)
    assert app.store.task_reads.queued_count() == 0
    for index, taken in enumerate(results):
        assert app.store.task_reads.running_task_ids(f"thread-{index}") == sorted(taken)


def claim_in_process(
    url: str, node_id: str, start: Barrier, results: Queue[tuple[str, list[int] | str]]
) -> None:
    """Child process body: its own engine and store, as a separate runner host would have."""
    store = store_for(build_engine(url), parse_url(url))
    try:
        start.wait(60)
        results.put((node_id, drain(store, node_id)))
    except BaseException:
        results.put((node_id, traceback.format_exc()))
        raise
    finally:
        store.dispose()


def test_processes_claim_every_task_exactly_once(app: Stask, db_url: str) -> None:
    created = app.create_many([("inventory", "sync_stock")] * CONCURRENT_TASKS)
    context = multiprocessing.get_context("spawn")
    children = 3
    start = context.Barrier(children)
    results: Queue[tuple[str, list[int] | str]] = context.Queue()
    processes = [
        context.Process(target=claim_in_process, args=(db_url, f"process-{n}", start, results))
        for n in range(children)
    ]
    for process in processes:
        process.start()
    try:
        reported = dict(results.get(timeout=90) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
    failures = {node: found for node, found in reported.items() if isinstance(found, str)}
    assert failures == {}
    assert [process.exitcode for process in processes] == [0] * children

    claimed = [task_id for found in reported.values() for task_id in found]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert set(claimed) == set(created)
    assert app.store.task_reads.queued_count() == 0
    for node, found in reported.items():
        assert app.store.task_reads.running_task_ids(node) == sorted(found)


# -- finishing and progress are fenced -------------------------------------------------------


def test_finish_is_refused_unless_the_node_holds_the_task(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id
    assert claim_ids(app.store) == [task_id]
    running = app.get(task_id)

    assert app.store.claims.finish(stranger(task_id), DONE) is False
    assert app.get(task_id) == running

    assert app.store.claims.finish(holding(app, task_id), DONE) is True
    done = app.get(task_id)
    assert done.status is Status.COMPLETED
    assert (done.result, done.message, done.progress) == ({"ok": True}, "done", 100)
    assert done.finished_at is not None

    late = Outcome(status=Status.FAILED, error="late", message="late")
    assert app.store.claims.finish(holding(app, task_id), late) is False
    assert app.get(task_id) == done


def test_a_batch_of_outcomes_is_one_statement_and_keeps_every_value(app: Stask) -> None:
    results: list[object] = [
        {"nested": {"a": [1, 2]}},
        "plain text",
        None,
        [1, "two"],
        3.5,
        True,
        "Юнікод ✓",
    ]
    task_ids = app.create_many([("inventory", "sync_stock") for _ in results])
    assert sorted(claim_ids(app.store, limit=len(task_ids))) == sorted(task_ids)
    lost = app.create("mailer", "send").id
    assert ids(app.store.claims.claim(OTHER, ["mailer"], 1)) == [lost]
    with app.store.engine.begin() as conn:  # an error from an earlier attempt stays visible
        conn.execute(tasks.update().where(tasks.c.id == task_ids[0]).values(error="earlier"))
    outcomes = [
        (
            task_id,
            Outcome(
                status=Status.COMPLETED,
                result=result,
                message=f"m{n}",
                progress=100,
                processed=n,
                total=len(results),
                duration_ms=n,
            ),
        )
        for n, (task_id, result) in enumerate(zip(task_ids, results, strict=True))
    ]
    outcomes.append((task_ids[-1] + 999, DONE))  # unknown id: ignored
    outcomes.append((lost, DONE))  # held by another node's claim: refused
    claims = [
        (holding(app, task_id) if task_id in task_ids else stranger(task_id), outcome)
        for task_id, outcome in outcomes
    ]
    statements: list[str] = []

    def record(*args: object) -> None:
        statements.append(" ".join(str(args[2]).split()).upper())

    event.listen(app.store.engine, "before_cursor_execute", record)
    try:
        accepted = app.store.claims.finish_many(claims)
    finally:
        event.remove(app.store.engine, "before_cursor_execute", record)
    assert accepted == set(task_ids)
    # One statement updates s_tasks (SQLite's starts WITH v AS MATERIALIZED ...).
    assert sum("UPDATE S_TASKS" in statement for statement in statements) == 1
    for n, (task_id, result) in enumerate(zip(task_ids, results, strict=True)):
        done = app.get(task_id)
        assert done.status is Status.COMPLETED
        assert done.result == result
        assert (done.message, done.processed, done.duration_ms) == (f"m{n}", n, n)
    assert app.get(task_ids[0]).error == "earlier"
    assert app.get(lost).status is Status.RUNNING


def test_progress_is_fenced_and_reports_cancellation(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id
    assert claim_ids(app.store) == [task_id]
    running = app.get(task_id)

    assert (
        app.store.claims.save_progress(stranger(task_id), {"progress": 50, "message": "x"}) is None
    )
    assert app.get(task_id) == running
    assert app.store.claims.cancel_flag(stranger(task_id)) is None

    assert (
        app.store.claims.save_progress(holding(app, task_id), {"progress": 50, "message": "half"})
        is False
    )
    saved = app.get(task_id)
    assert (saved.progress, saved.message) == (50, "half")
    assert app.store.claims.cancel_flag(holding(app, task_id)) is False

    app.cancel(task_id)
    assert app.store.claims.save_progress(holding(app, task_id), {"progress": 60}) is True
    assert app.store.claims.cancel_flag(holding(app, task_id)) is True
    assert app.get(task_id).progress == 60


def test_finish_as_pending_requeues_for_a_later_attempt(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id
    now = utcnow()
    assert claim_ids(app.store, now=now) == [task_id]
    retry_at = now + 5 * MINUTE
    again = Outcome(status=Status.PENDING, message="retrying", error="boom", retry_at=retry_at)

    assert app.store.claims.finish(stranger(task_id), again) is False
    assert app.store.task_reads.queued_count() == 0
    first = holding(app, task_id)
    assert app.store.claims.finish(first, again) is True

    waiting = app.get(task_id)
    assert waiting.status is Status.PENDING
    assert (waiting.run_at, waiting.locked_by, waiting.attempts) == (retry_at, None, 1)
    assert (waiting.error, waiting.finished_at) == ("boom", None)
    assert app.store.task_reads.queued_count() == 1
    assert claim_ids(app.store, now=retry_at - dt.timedelta(seconds=1)) == []

    [claimed] = app.store.claims.claim(OTHER, ["inventory"], 5, now=retry_at)
    assert (claimed.id, claimed.attempts, claimed.locked_by) == (task_id, 2, OTHER)
    assert app.store.claims.finish(first, DONE) is False  # the first claim's fence is gone
    assert app.store.claims.finish(claimed.claim, DONE) is True


# -- creating --------------------------------------------------------------------------------


def numbered_items(size: int) -> list[tuple[str, str, dict[str, int]]]:
    """Items for both workers, each numbered so the order of the returned ids can be checked."""
    kinds = [("mailer", "send"), ("inventory", "sync_stock")]
    return [(*kinds[n % 2], {"n": n}) for n in range(size)]


def test_create_many_uses_a_constant_number_of_inserts_and_keeps_order(app: Stask) -> None:
    warm = app.create("inventory", "sync_stock").id  # fills the worker cache; not counted
    inserts: dict[int, int] = {}
    created: list[int] = []
    for size in (10, 500):
        with inserts_sent(app.store.engine) as seen:
            batch = app.create_many(numbered_items(size))
        inserts[size] = len(seen)
        options = {task.id: task.options for task in app.list(limit=10_000)}
        assert [options[task_id] for task_id in batch] == [{"n": n} for n in range(size)]
        created += batch

    assert inserts[500] == inserts[10] <= 2
    assert len(set(created)) == 510
    assert app.store.task_reads.queued_count() == 511
    assert set(claim_ids(app.store, limit=1000)) == {warm, *created}


def test_create_many_keeps_per_item_fields(app: Stask) -> None:
    later = utcnow() + 10 * MINUTE
    low, high, scheduled = app.create_many(
        [
            {"identifier": "inventory", "action": "sync_stock", "priority": "low"},
            {"identifier": "mailer", "action": "send", "options": {"to": "a@b.c"}},
            {"identifier": "inventory", "action": "Sync-Stock", "run_at": later, "queue": "q2"},
        ],
        priority="high",
    )
    assert app.get(low).priority.value == "low"
    assert (app.get(high).priority.value, app.get(high).options) == ("high", {"to": "a@b.c"})
    assert (app.get(scheduled).run_at, app.get(scheduled).queue) == (later, "q2")
    assert claim_ids(app.store) == [high, low]

    # Every optional field, an aware run_at and one without microseconds, a unicode option.
    on_the_second = (utcnow() + 5 * MINUTE).replace(microsecond=0)
    later_in_kyiv = later.replace(tzinfo=dt.UTC).astimezone(dt.timezone(dt.timedelta(hours=2)))
    deadline = utcnow() + 20 * MINUTE
    full, aware = app.create_many(
        [
            {
                "identifier": "mailer",
                "action": "send",
                "options": {"to": "ж@b.c", "n": [1, {"x": None}]},
                "max_attempts": 7,
                "started_by": "cli",
                "timeout": 2.5,
                "deadline": deadline,
                "run_at": on_the_second,
            },
            {"identifier": "mailer", "action": "send", "run_at": later_in_kyiv},
        ]
    )
    task = app.get(full)
    assert task.options == {"to": "ж@b.c", "n": [1, {"x": None}]}
    assert (task.max_attempts, task.started_by, task.timeout_seconds) == (7, "cli", 2.5)
    assert (task.expires_at, task.run_at) == (deadline, on_the_second)
    assert app.get(aware).run_at == later


def test_create_many_keeps_order_across_insert_batches(app: Stask) -> None:
    batch = app.create_many(numbered_items(2_100))
    assert batch == sorted(batch)
    options = {task.id: task.options for task in app.list(limit=10_000)}
    assert [options[task_id] for task_id in batch] == [{"n": n} for n in range(2_100)]
    assert app.store.task_reads.queued_count() == 2_100


def test_create_on_a_rolled_back_connection_leaves_nothing(app: Stask) -> None:
    with app.store.engine.connect() as conn, conn.begin() as tx:
        task = app.create("inventory", "sync_stock", connection=conn)
        more = app.create_many([("mailer", "send")], connection=conn)
        assert task.status is Status.PENDING
        tx.rollback()

    for task_id in (task.id, *more):
        with pytest.raises(TaskNotFound):
            app.get(task_id)
    assert app.count() == 0
    assert app.store.task_reads.queued_count() == 0
    assert claim_ids(app.store) == []


def test_create_on_a_committed_connection_is_claimable(app: Stask) -> None:
    with app.store.engine.connect() as conn, conn.begin():
        task = app.create("inventory", "sync_stock", connection=conn)
        more = app.create_many([("mailer", "send")], connection=conn)

    assert app.get(task.id).status is Status.PENDING
    assert app.store.task_reads.queued_count() == 2
    assert claim_ids(app.store) == [task.id, *more]


# -- operator actions ------------------------------------------------------------------------


def test_cancel_pending_task_ends_it_at_once(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id

    cancelled = app.cancel(task_id)

    assert cancelled.status is Status.CANCELLED
    assert cancelled.finished_at is not None
    assert app.store.task_reads.queued_count() == 0
    assert claim_ids(app.store) == []
    assert [entry.message for entry in app.get_logs(task_id)] == ["Cancelled before it started"]


def test_cancel_running_task_only_flags_it(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id
    assert claim_ids(app.store) == [task_id]

    flagged = app.cancel(task_id)

    assert flagged.status is Status.RUNNING
    assert (flagged.cancel_requested, flagged.locked_by, flagged.finished_at) == (True, NODE, None)
    assert app.store.claims.finish(holding(app, task_id), Outcome(status=Status.CANCELLED)) is True


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_cancel_finished_task_is_invalid(app: Stask, status: Status) -> None:
    task_id = finished(app, Outcome(status=status))
    before = app.get(task_id)

    with pytest.raises(InvalidState):
        app.cancel(task_id)
    assert app.get(task_id) == before


def test_retry_requeues_failed_and_cancelled_tasks(app: Stask) -> None:
    failed = app.create("inventory", "sync_stock", max_attempts=1).id
    assert claim_ids(app.store) == [failed]
    assert app.store.claims.finish(
        holding(app, failed), Outcome(status=Status.FAILED, error="Traceback")
    )
    cancelled = app.create("mailer", "send").id
    app.cancel(cancelled)

    for task_id in (failed, cancelled):
        retried = app.retry(task_id)
        assert retried.status is Status.PENDING
        assert (retried.finished_at, retried.locked_by, retried.cancel_requested) == (
            None,
            None,
            False,
        )
    assert app.store.task_reads.queued_count() == 2

    by_id = {task.id: task for task in app.store.claims.claim(NODE, WORKERS, 10)}
    assert set(by_id) == {failed, cancelled}
    # The one attempt allowed was used; a retry must allow one more, not fail at once.
    assert (by_id[failed].attempts, by_id[failed].max_attempts) == (2, 2)
    assert by_id[failed].error == "Traceback"


@pytest.mark.parametrize("state", ["completed", "pending", "running"])
def test_retry_of_other_states_is_invalid(app: Stask, state: str) -> None:
    if state == "completed":
        task_id = finished(app)
    else:
        task_id = app.create("inventory", "sync_stock").id
        if state == "running":
            assert claim_ids(app.store) == [task_id]
    before = app.get(task_id)
    queued = app.store.task_reads.queued_count()

    with pytest.raises(InvalidState):
        app.retry(task_id)
    assert app.get(task_id) == before
    assert app.store.task_reads.queued_count() == queued


def test_delete_refuses_running_tasks(app: Stask) -> None:
    task_id = app.create("inventory", "sync_stock").id
    assert claim_ids(app.store) == [task_id]

    with pytest.raises(InvalidState):
        app.delete(task_id)
    assert app.get(task_id).status is Status.RUNNING


def test_delete_removes_task_logs_and_files(app: Stask) -> None:
    done = finished(app)
    pending = app.create("inventory", "sync_stock").id
    kept = app.create("mailer", "send").id
    for task_id in (done, pending, kept):
        app.log(task_id, "info", f"line of {task_id}")
        folder = app.settings.storage / "tasks" / str(task_id)
        folder.mkdir(parents=True)
        (folder / "out.csv").write_text("x\n", encoding="utf-8")

    app.delete(done)
    app.delete(pending)

    for task_id in (done, pending):
        with pytest.raises(TaskNotFound):
            app.get(task_id)
        assert app.get_logs(task_id) == []
        assert not (app.settings.storage / "tasks" / str(task_id)).exists()
    assert app.store.task_reads.queued_count() == 1
    assert [entry.message for entry in app.get_logs(kept)] == [f"line of {kept}"]
    assert (app.settings.storage / "tasks" / str(kept) / "out.csv").is_file()


@pytest.mark.parametrize("operation", ["get", "cancel", "retry", "delete"])
def test_unknown_task_ids_are_not_found(app: Stask, operation: str) -> None:
    existing = app.create("inventory", "sync_stock").id
    with pytest.raises(TaskNotFound, match=str(existing + 1000)):
        getattr(app, operation)(existing + 1000)


# -- housekeeping ----------------------------------------------------------------------------


def test_clean_old_tasks_removes_only_old_finished_tasks(
    app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping_module, "DELETE_BATCH", 2)  # several batches with few rows
    old = [
        finished(app),
        finished(app, Outcome(status=Status.FAILED)),
        finished(app, Outcome(status=Status.COMPLETED)),
    ]
    old.append(app.create("mailer", "send").id)
    app.cancel(old[-1])
    recent = finished(app)
    running = app.create("inventory", "sync_stock").id
    assert claim_ids(app.store) == [running]
    pending = app.create("inventory", "sync_stock").id
    everything = [*old, recent, running, pending]
    # Only finished tasks go, whatever finished_at says: pending and running ones get an old one.
    set_finished_at(app.store.engine, [*old, running, pending], utcnow() - dt.timedelta(days=31))
    set_finished_at(app.store.engine, [recent], utcnow() - dt.timedelta(days=29))
    for task_id in everything:
        app.log(task_id, "info", "line")
        (app.settings.storage / "tasks" / str(task_id)).mkdir(parents=True)

    assert app.clean_old_tasks(days=30) == len(old)

    kept = [recent, running, pending]
    assert sorted(ids(app.list())) == sorted(kept)
    for task_id in everything:
        expected = task_id in kept
        assert bool(app.get_logs(task_id)) is expected
        assert (app.settings.storage / "tasks" / str(task_id)).is_dir() is expected
    assert app.store.task_reads.queued_count() == 1
    assert app.clean_old_tasks(days=30) == 0
    with pytest.raises(ValidationError):
        app.clean_old_tasks(days=-1)


def test_clean_old_logs_removes_only_old_lines(app: Stask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(housekeeping_module, "DELETE_BATCH", 2)
    first = app.create("inventory", "sync_stock").id
    second = app.create("mailer", "send").id
    now = utcnow()
    lines = [
        (first, 40, "old 1"),
        (second, 40, "old 2"),
        (first, 31, "old 3"),
        (first, 29, "recent"),
        (second, 0, "today"),
    ]
    app.store.logs.insert_logs(
        [
            {
                "task_id": task_id,
                "ts": now - dt.timedelta(days=days),
                "level": "info",
                "message": message,
                "context": None,
            }
            for task_id, days, message in lines
        ]
    )

    assert app.clean_old_logs(days=30) == 3

    assert [entry.message for entry in app.get_logs(first)] == ["recent"]
    assert [entry.message for entry in app.get_logs(second)] == ["today"]
    assert app.count() == 2


# -- listing and counting --------------------------------------------------------------------


@pytest.fixture
def history(app: Stask) -> dict[str, list[int]]:
    """5 inventory tasks (2 completed) and 3 mailer tasks (1 cancelled), oldest first."""
    stock = [app.create("inventory", "sync_stock", queue="stock").id for _ in range(5)]
    mail = [app.create("mailer", "send").id for _ in range(3)]
    assert claim_ids(app.store, limit=2, identifiers=["inventory"]) == stock[:2]
    for task_id in stock[:2]:
        assert app.store.claims.finish(holding(app, task_id), DONE)
    app.cancel(mail[0])
    return {"stock": stock, "mail": mail, "all": stock + mail}


def test_list_filters_newest_first(app: Stask, history: dict[str, list[int]]) -> None:
    stock, mail, everything = history["stock"], history["mail"], history["all"]

    assert ids(app.list()) == everything[::-1]
    assert ids(app.list(worker="mailer")) == mail[::-1]
    assert ids(app.list(status="completed")) == stock[1::-1]
    assert ids(app.list(status=Status.CANCELLED)) == [mail[0]]
    assert ids(app.list(status=["pending", "cancelled"], worker="mailer")) == mail[::-1]
    assert ids(app.list(status="pending", worker="inventory")) == stock[:1:-1]
    assert ids(app.list(action="Sync-Stock")) == stock[::-1]
    assert ids(app.list(queue="stock", status="completed")) == stock[1::-1]
    assert app.list(status="failed") == []
    with pytest.raises(ValidationError):
        app.list(status="bogus")
    with pytest.raises(ValidationError):
        app.list(limit=0)


def test_list_pages_by_offset_and_before_id(app: Stask, history: dict[str, list[int]]) -> None:
    newest_first = history["all"][::-1]

    assert ids(app.list(limit=3)) == newest_first[:3]
    assert ids(app.list(limit=3, offset=3)) == newest_first[3:6]
    assert ids(app.list(limit=3, offset=6)) == newest_first[6:]

    pages: list[list[int]] = []
    before: int | None = None
    for _ in range(5):  # bounded: a paging bug must fail here, not loop forever
        page = ids(app.list(limit=3, before_id=before))
        if not page:
            break
        pages.append(page)
        before = page[-1]
    assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
    assert (
        ids(app.list(worker="inventory", limit=2, before_id=newest_first[3]))
        == (history["stock"][3:1:-1])
    )


def test_stats_and_counts(app: Stask, history: dict[str, list[int]]) -> None:
    assert app.stats() == {
        "pending": 5,
        "preparing": 0,
        "running": 0,
        "completed": 2,
        "cancelled": 1,
        "failed": 0,
        "total": 8,
    }
    assert app.stats(worker="mailer") == {
        "pending": 2,
        "preparing": 0,
        "running": 0,
        "completed": 0,
        "cancelled": 1,
        "failed": 0,
        "total": 3,
    }
    assert app.count() == 8
    assert app.count(status="pending") == 5
    assert app.count(status=["completed", "cancelled"]) == 3
    assert app.count(worker="inventory", status="completed") == 2
    assert app.count(worker="mailer", status="completed") == 0
    assert app.count(queue="stock") == 5
    assert app.store.task_reads.count_by_worker() == {"inventory": 5, "mailer": 3}


def test_a_deadlock_victim_transaction_is_run_again(
    app: Stask, dialect: str, make_store: Callable[[], Store]
) -> None:
    """Two transactions lock two rows in opposite orders; `retrying` reruns the victim."""
    if dialect == "sqlite":
        pytest.skip("SQLite serializes writers: two transactions never wait on each other")
    first, second, *more = app.create_many([("inventory", "sync_stock", {})] * 6)
    store, other = app.store, make_store()
    attempts: list[int] = []
    waiting = threading.Event()

    def work() -> None:
        attempts.append(len(attempts) + 1)
        with store.writing() as conn:
            conn.execute(update(tasks).where(tasks.c.id == second).values(progress=1))
            waiting.set()
            conn.execute(update(tasks).where(tasks.c.id == first).values(progress=1))

    with other.engine.connect() as conn:
        # The heavier transaction: InnoDB and PostgreSQL both abort the other one.
        conn.execute(update(tasks).where(tasks.c.id.in_([first, *more])).values(progress=2))
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(store.retrying, work)
            assert waiting.wait(10)
            _wait_for_a_lock_wait(make_store(), dialect)  # so `work` waits first and is the victim
            with contextlib.suppress(Exception):  # closing the cycle; we may be the victim
                conn.execute(update(tasks).where(tasks.c.id == second).values(progress=2))
                conn.commit()
            conn.rollback()
            done.result(timeout=30)
    assert attempts == [1, 2], "the victim ran again"
    assert app.get(first).progress == 1
    assert app.get(second).progress == 1


def _wait_for_a_lock_wait(store: Store, dialect: str) -> None:
    """Return once some transaction of this database waits on a row lock."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
        if dialect == "postgresql"
        else "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
    )
    deadline = time.monotonic() + 10
    with store.engine.connect() as conn:
        while not conn.execute(text(sql)).scalar_one():
            assert time.monotonic() < deadline, "no transaction ever waited on the lock"
            time.sleep(0.01)
            conn.rollback()


def test_record_and_claim_records_fenced_outcomes_and_claims_in_one_transaction(
    app: Stask,
) -> None:
    first, stolen = app.create_many([("inventory", "sync_stock")] * 2)
    assert claim_ids(app.store, limit=1) == [first]
    assert ids(app.store.claims.claim(OTHER, ["inventory"], 1)) == [stolen]
    waiting = app.create_many([("inventory", "sync_stock")] * 3)

    claimed, recorded = app.store.claims.record_and_claim(
        NODE, ["inventory"], 2, finished=[(holding(app, first), DONE), (stranger(stolen), DONE)]
    )
    assert recorded == {first}  # the other node's task keeps running: the fence held
    assert ids(claimed) == waiting[:2]
    assert app.get(first).status is Status.COMPLETED
    assert app.get(stolen).status is Status.RUNNING
    assert app.store.task_reads.running_task_ids(NODE) == waiting[:2]
    # Nothing to claim: the outcomes are still recorded.
    claimed, recorded = app.store.claims.record_and_claim(
        NODE, ["inventory"], 0, finished=[(holding(app, waiting[0]), DONE)]
    )
    assert (claimed, recorded) == ([], {waiting[0]})
    assert app.get(waiting[0]).status is Status.COMPLETED


def test_a_runners_turn_is_one_statement(app: Stask, dialect: str) -> None:
    """Final outcomes recorded and due tasks claimed by one statement (PostgreSQL: with no
    BEGIN/COMMIT either; SQLite: one UPDATE, its queue rows removed by migration 0005's
    trigger). A finish for a task this node does not hold is refused in the same statement."""
    if dialect == "mysql":
        pytest.skip("MariaDB has no RETURNING on UPDATE: its turn is one transaction")
    first = app.create("inventory", "sync_stock").id
    assert claim_ids(app.store, limit=1) == [first]  # also fills the controls' caches
    other = app.create("inventory", "sync_stock").id
    assert ids(app.store.claims.claim("node-2", WORKERS, 1)) == [other]
    waiting = app.create_many([("inventory", "sync_stock")] * 2)
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split())[:60])

    event.listen(app.store.engine, "before_cursor_execute", record)
    try:
        claimed, recorded = app.store.claims.record_and_claim(
            NODE, WORKERS, 5, finished=[(holding(app, first), DONE), (stranger(other), DONE)]
        )
    finally:
        event.remove(app.store.engine, "before_cursor_execute", record)
    assert (ids(claimed), recorded) == (waiting, {first})
    # Plain SELECTs are the 1 s caches of queue controls and worker limits refilling, when
    # the machine was slow enough since the first claim filled them.
    statements = [s for s in seen if not s.startswith(("BEGIN", "SELECT"))]
    assert len(statements) == 1, seen
    assert statements[0].startswith("WITH fin AS" if dialect == "postgresql" else "WITH v AS")
    assert app.get(first).status is Status.COMPLETED
    assert app.get(other).status is Status.RUNNING  # node-2's: the fence held
    assert [app.get(i).status for i in waiting] == [Status.RUNNING] * 2
    assert app.store.task_reads.queued_count() == 0
    assert claim_ids(app.store, limit=5) == []  # nothing is claimed twice


def test_postgresql_plans_a_runners_turn_once(app: Stask, dialect: str) -> None:
    """psycopg prepares a statement run 5 times; PostgreSQL then plans it once, generically,
    if that plan looks no worse than one planned per call. With a bound LIMIT the generic plan
    guessed a third of the queue and lost, so every turn was planned again (longer than it
    ran). The turn's LIMIT is literal: its generic plan must win."""
    if dialect != "postgresql":
        pytest.skip("plan caching of prepared statements is PostgreSQL's")
    store = hot_path_store(app.store)  # its own pool: every turn below on one connection
    try:
        # Enough of a queue, analyzed, for the plans to differ as they do in production.
        app.create_many([("inventory", "sync_stock")] * 3000)
        with app.store.engine.begin() as conn:
            conn.execute(text("ANALYZE s_queue, s_tasks"))
        held: list[Task] = []
        for _ in range(30):  # psycopg prepares at the 6th; then 5 custom plans, then generic
            claimed, _recorded = store.claims.record_and_claim(
                NODE, WORKERS, 2, finished=[(task.claim, DONE) for task in held]
            )
            held = claimed
        assert held, "the queue ran dry before the last turn"
        with store.engine.connect() as conn:
            plans = conn.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE 'WITH fin AS%'"
                )
            ).one()
    finally:
        store.dispose()
    generic, custom = plans
    assert generic >= 10, plans
    assert custom <= 5, plans


def test_create_writes_every_new_task_column(app: Stask) -> None:
    """PostgreSQL's one-statement create binds NEW_TASK_COLUMNS: it must be what is written."""
    new = NewTask(identifier="mailer", action="send", options={})
    [row] = new_task_rows([new], utcnow())
    assert set(row) == set(NEW_TASK_COLUMNS)
    # PostgreSQL's bulk insert declares each column's type: a column missing there is dropped.
    assert set(dialects._NEW_TASK_TYPES) == set(NEW_TASK_COLUMNS)


def test_on_postgresql_create_is_one_statement_that_notifies(
    app: Stask, dialect: str, db_url: str
) -> None:
    if dialect != "postgresql":
        pytest.skip("the one-statement create is PostgreSQL's")
    listener = psycopg.connect(
        parse_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False),
        autocommit=True,
    )
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    app.create("mailer", "send", run_at=utcnow() + dt.timedelta(hours=1))  # reads the workers
    try:
        listener.execute("LISTEN stask_enqueued")
        event.listen(app.store.engine, "before_cursor_execute", record)
        try:
            due = app.create("inventory", "sync_stock", {"n": 1}, priority="high")
            later = app.create("mailer", "send", run_at=utcnow() + dt.timedelta(hours=1))
        finally:
            event.remove(app.store.engine, "before_cursor_execute", record)
        notified = list(listener.notifies(timeout=1, stop_after=2))
    finally:
        listener.close()
    # No BEGIN, second INSERT, NOTIFY or read-back. (A SELECT of s_workers is the facade's
    # worker cache refilling, if the machine was slow since the warm-up.)
    writes = [s for s in seen if not s.startswith("SELECT")]
    assert [" ".join(s.split()[:3]) for s in writes] == ["WITH inserted AS"] * 2, seen
    assert len(notified) == 1  # the due task only
    assert app.get(due.id) == due
    assert (due.priority, due.options, due.status) == (Priority.HIGH, {"n": 1}, Status.PENDING)
    assert claim_ids(app.store) == [due.id]  # its queue row exists; the later one's is not due
    assert app.store.task_reads.queued_count() == 2  # the later task's and the warm-up's
    assert app.get(later.id).status is Status.PENDING
