"""Long tasks on two runners: how close the makespan comes to the work spread over every slot.

A drain of no-ops measures a runner's overhead per task; long tasks measure how it hands out
slots. Prefetching, claiming in batches and waking up late all cost nothing per task there but
can leave slots idle while another runner holds a backlog, and the last tasks then finish late.

Two ``Stask`` apps with their own engines (so their own node ids, pools and LISTEN
connections) each run ``Runner(app, RunnerOptions(concurrency=4))`` with default settings on a
thread of this process; a third app is the producer, so each runner learns of the tasks as a
runner in another process would (PostgreSQL NOTIFY, SQLite's wake file), never by a direct
same-process wake-up. The actions sleep, so the threads share the GIL without contention, and
``runner.completed`` (outcomes recorded) is read directly: no polling of the database.
"""

from __future__ import annotations

import contextlib
import random
import time
from pathlib import Path
from typing import Any

from bench import workers
from bench.common import Database
from bench.measure_stask import NOOP, claim_timer, make_app, prepared_app, running
from bench.sqlcount import CallTimer
from stask import Stask
from stask.runner import Runner, RunnerOptions

SLEEP = ("bench_sleep", "sleep")
CONCURRENCY = 4
RUNNERS = 2
RUNNER_IDLE_TIMEOUT = 60.0


def long_tasks(
    db: Database, storage: Path, count: int, task_ms: int, *, keep: int = RUNNERS
) -> dict[str, Any]:
    """``count`` tasks of ``task_ms`` enqueued at once onto two idle runners (``keep`` = 1: one
    of them stopped first); the ideal makespan is the work over ``keep`` x 4 slots."""
    items = [(*SLEEP, {"ms": task_ms})] * count
    work = count * task_ms / 1000
    return makespan(db, storage, items, work, keep=keep) | {"task_ms": task_ms}


def mixed_queue(
    db: Database, storage: Path, count: int, long_ms: int, share: float, seed: int
) -> dict[str, Any]:
    """``count`` tasks of which ``share`` sleep ``long_ms`` and the rest are no-ops, shuffled
    (seeded); the ideal makespan is the long work over 8 slots (the no-ops take ~nothing)."""
    longs = round(count * share)
    items: list[tuple[Any, ...]] = [(*SLEEP, {"ms": long_ms})] * longs + [NOOP] * (count - longs)
    random.Random(seed).shuffle(items)
    work = longs * long_ms / 1000
    return makespan(db, storage, items, work, keep=RUNNERS) | {
        "long_tasks": longs,
        "noop_tasks": count - longs,
        "long_ms": long_ms,
        "seed": seed,
    }


def makespan(
    db: Database, storage: Path, items: list[tuple[Any, ...]], work: float, *, keep: int
) -> dict[str, Any]:
    """Two runners up and idle, all but ``keep`` of them stopped, then ``items`` enqueued with
    one ``create_many`` by a third app: seconds from its commit until every outcome is
    recorded, against ``work`` / (``keep`` x concurrency)."""
    count = len(items)
    slots = keep * CONCURRENCY
    ideal = work / slots
    workers.SLEPT.clear()  # task ids repeat across databases
    apps: list[Stask] = [prepared_app(db, storage)]
    apps += [make_app(db, storage) for _ in range(RUNNERS)]  # the second runner's, the producer's
    producer = apps[-1]
    timers: list[CallTimer] = []

    def attach(runner: Runner) -> None:
        timers.append(claim_timer([runner.db]).attach())

    options = RunnerOptions(concurrency=CONCURRENCY)
    try:
        with contextlib.ExitStack() as stack:
            handles = [stack.enter_context(running(app, options, attach)) for app in apps[:-1]]
            for handle in handles:
                if not handle.wait(lambda h=handle: h.runner.idle, RUNNER_IDLE_TIMEOUT):
                    raise RuntimeError("a runner never became idle")
            for handle in handles[keep:]:  # "the other stopped": gone before the tasks come
                handle.runner.request_stop()
                handle.thread.join(timeout=60)
                if handle.thread.is_alive():
                    raise RuntimeError("a stopped runner did not end within 60 s")
            serving = handles[:keep]
            for timer in timers:
                timer.summary(reset=True)  # the idle claims before the tasks came are not theirs
            producer.create_many(items)
            committed = time.perf_counter()
            last_change = [committed] * keep
            seen = [0] * keep
            deadline = committed + max(120.0, 3 * ideal + 60)
            while sum(seen) < count:
                for n, handle in enumerate(serving):
                    handle.check()
                    done = handle.runner.completed
                    if done != seen[n]:
                        seen[n], last_change[n] = done, time.perf_counter()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"stopped at {sum(seen)} of {count} tasks recorded")
                time.sleep(0.005)
            elapsed = max(last_change) - committed
            claims = [timer.summary() for timer in timers]
        left = producer.store.task_reads.queued_count()
        failed = producer.count(status="failed")
    finally:
        for timer in timers:
            timer.detach()
        for app in apps:
            app.close()
    return {
        "tasks": count,
        "runners_started": RUNNERS,
        "runners_serving": keep,
        "concurrency": CONCURRENCY,
        "slots": slots,
        "work_seconds": round(work, 3),
        "ideal_seconds": round(ideal, 3),
        "makespan_seconds": round(elapsed, 3),
        "ratio_to_ideal": round(elapsed / ideal, 3) if ideal else None,
        "even_share": round(count / keep, 1),
        **{f"runner_{n + 1}_tasks": seen[n] for n in range(keep)},
        "runners": [
            {
                "recorded": seen[n],
                "last_recorded_seconds": round(last_change[n] - committed, 3),
                "claims": claims[n],
            }
            for n in range(keep)
        ],
        "sleeps": sleep_spread(committed),
        "left_in_queue": left,
        "failed": failed,
    }


def sleep_spread(committed: float) -> dict[str, float] | None:
    """When the sleep tasks started and ended, from the enqueue's commit: how soon the first
    slot filled, and how long after the last start the last one ended (the tail)."""
    if not workers.SLEPT:
        return None
    starts = [start for start, _ in workers.SLEPT.values()]
    ends = [end for _, end in workers.SLEPT.values()]
    return {
        "tasks": len(starts),
        "first_start_seconds": round(min(starts) - committed, 4),
        "last_start_seconds": round(max(starts) - committed, 3),
        "last_end_seconds": round(max(ends) - committed, 3),
        "slept_seconds": round(sum(end - start for start, end in workers.SLEPT.values()), 3),
    }
