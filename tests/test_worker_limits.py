"""Per-worker rate limits on every database: at most N of a worker's tasks started per period."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select

from stask import Stask, Status, Task
from stask.db.store import Store
from stask.db.tables import workers
from stask.errors import InvalidQueueSetting, UnknownWorker
from stask.models import Outcome, utcnow
from tests.test_cli import assert_one_line_error, stask

NODE = "node-a"
WORKERS = ["inventory", "mailer"]
DONE = Outcome(status=Status.COMPLETED, message="done")


def claim(store: Store, limit: int = 100, **kwargs: Any) -> list[Task]:
    return store.claims.claim(NODE, WORKERS, limit, **kwargs)


def identifiers(found: list[Task]) -> list[str]:
    return sorted(task.identifier for task in found)


def make(app: Stask, identifier: str, count: int, **kwargs: Any) -> list[int]:
    action = "sync_stock" if identifier == "inventory" else "send"
    return app.create_many([{"identifier": identifier, "action": action, **kwargs}] * count)


def test_rate_limit_counts_the_workers_starts_within_the_period(app: Stask) -> None:
    make(app, "inventory", 10)
    make(app, "mailer", 4)
    info = app.set_worker_rate_limit("inventory", 3, 60)
    assert (info.rate_limit, info.rate_period_seconds) == (3, 60)
    t0 = utcnow() + dt.timedelta(seconds=1)

    first = claim(app.store, now=t0)
    assert identifiers(first) == ["inventory"] * 3 + ["mailer"] * 4
    for task in first:
        assert app.store.claims.finish(task.claim, DONE)
    assert claim(app.store, now=t0 + dt.timedelta(seconds=30)) == [], "finishing frees no rate"
    assert claim(app.store, now=t0 + dt.timedelta(seconds=59)) == []
    again = claim(app.store, now=t0 + dt.timedelta(seconds=60))
    assert identifiers(again) == ["inventory"] * 3


def test_clearing_the_limit_lets_the_backlog_through(app: Stask) -> None:
    make(app, "inventory", 6)
    app.set_worker_rate_limit("inventory", 2, 3600)
    assert len(claim(app.store)) == 2
    assert claim(app.store) == []
    info = app.set_worker_rate_limit("inventory", None, None)
    assert (info.rate_limit, info.rate_period_seconds) == (None, None)
    assert len(claim(app.store)) == 4


def test_a_limited_workers_urgent_task_is_not_starved_by_a_backlog(app: Stask) -> None:
    backlog = make(app, "mailer", 20, priority="low")
    urgent = make(app, "inventory", 2, priority="high")
    app.set_worker_rate_limit("inventory", 1, 3600)

    first = [task.id for task in claim(app.store, 3)]
    assert first == [urgent[0], *backlog[:2]], "claim order holds across the split"
    assert urgent[1] not in [task.id for task in claim(app.store, 50)]


def test_worker_and_queue_limits_together_take_the_smaller_room(app: Stask) -> None:
    make(app, "inventory", 6, queue="metered")
    make(app, "mailer", 6, queue="metered")
    app.set_queue_limits("metered", concurrency=4)
    app.set_worker_rate_limit("inventory", 1, 3600)

    first = claim(app.store)
    assert identifiers(first) == ["inventory"] + ["mailer"] * 3, "the queue's 4, one inventory"
    for task in first:
        assert app.store.claims.finish(task.claim, DONE)
    assert identifiers(claim(app.store)) == ["mailer"] * 3, "inventory's hour is used up"


def test_rate_limit_holds_across_concurrent_claimers(
    app: Stask, make_store: Callable[[], Store]
) -> None:
    limited = set(make(app, "inventory", 30))
    other = set(make(app, "mailer", 30))
    app.set_worker_rate_limit("inventory", 5, 3600)
    stores = [make_store() for _ in range(5)]
    start = threading.Barrier(len(stores))

    def claimer(index: int) -> list[int]:
        store, node = stores[index], f"thread-{index}"
        taken: list[int] = []
        start.wait(timeout=30)
        idle = 0
        while idle < 15:
            batch = store.claims.claim(node, WORKERS, 3)
            taken += [task.id for task in batch]
            idle = 0 if batch else idle + 1
            if batch:
                store.claims.finish_many([(task.claim, DONE) for task in batch])
            time.sleep(0.005)
        return taken

    with ThreadPoolExecutor(len(stores)) as pool:
        claimed = [i for taken in pool.map(claimer, range(len(stores)), timeout=120) for i in taken]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert other <= set(claimed), "the other worker kept flowing"
    assert len(set(claimed) & limited) == 5


@pytest.mark.parametrize(
    ("rate", "period", "error", "fragment"),
    [
        (0, 60, InvalidQueueSetting, "rate must be a positive integer"),
        (5, None, InvalidQueueSetting, "needs both rate and period_seconds"),
        (None, 60, InvalidQueueSetting, "needs both rate and period_seconds"),
        ("5", 60, InvalidQueueSetting, "rate must be a positive integer"),
    ],
)
def test_bad_limits_are_refused_and_write_nothing(
    app: Stask, rate: Any, period: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        app.set_worker_rate_limit("inventory", rate, period)
    with app.store.reading() as conn:
        assert conn.execute(select(workers.c.rate_limit)).scalars().all() == [None, None]


def test_an_unknown_worker_is_named(app: Stask) -> None:
    with pytest.raises(UnknownWorker, match="ghost"):
        app.set_worker_rate_limit("ghost", 1, 60)


def listed(env: dict[str, str]) -> dict[str, Any]:
    entries = json.loads(stask(env, "workers", "list", "--json").stdout)
    return {entry["identifier"]: entry for entry in entries}


def test_cli_sets_and_clears_a_worker_rate_limit(app: Stask, cli_env: dict[str, str]) -> None:
    out = stask(cli_env, "workers", "limit", "inventory", "--rate", "10", "--per", "60").stdout
    assert "at most 10 started per 60 s" in out
    found = listed(cli_env)["inventory"]
    assert (found["rate_limit"], found["rate_period_seconds"]) == (10, 60)
    assert listed(cli_env)["mailer"]["rate_limit"] is None
    assert "10 per 60 s" in stask(cli_env, "workers", "list").stdout

    assert "no rate limit" in stask(cli_env, "workers", "limit", "inventory", "--clear").stdout
    assert listed(cli_env)["inventory"]["rate_limit"] is None


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("inventory",), 2, "--rate N --per SECONDS"),
        (("inventory", "--rate", "5"), 2, "--rate N --per SECONDS"),
        (("inventory", "--per", "60"), 2, "--rate N --per SECONDS"),
        (("inventory", "--rate", "0", "--per", "60"), 2, "--rate"),
        (("inventory", "--clear", "--rate", "2"), 2, "--clear"),
        (("ghost", "--rate", "1", "--per", "60"), 2, "ghost"),
    ],
)
def test_cli_bad_input_is_one_error_line_and_writes_nothing(
    app: Stask, cli_env: dict[str, str], args: tuple[str, ...], code: int, fragment: str
) -> None:
    assert_one_line_error(stask(cli_env, "workers", "limit", *args, code=code), fragment)
    with app.store.reading() as conn:
        assert conn.execute(select(workers.c.rate_limit)).scalars().all() == [None, None]
