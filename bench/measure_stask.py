"""stask's figures: enqueue, drain, pickup latency, SQL per task, idle RSS, progress overhead.

Everything runs in this process (the runner on a thread, so one clock serves producer and
action), except the idle-RSS probe, which starts the real ``stask worker`` command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import workers
from bench.common import (
    WORKERS_MODULE,
    Database,
    analyze,
    clean_env,
    idle_rss,
    latency_summary,
    wait_until,
)
from bench.sqlcount import CallTimer, CommitClock, SqlCounter
from stask import Stask
from stask.runner import Runner, RunnerOptions

BATCH = 1000
PROGRESS_CALLS = 100_000
NOOP = ("bench_noop", "noop")


def make_app(db: Database, storage: Path) -> Stask:
    return Stask(
        database_url=db.url, storage=storage, workers=[WORKERS_MODULE], use_entry_points=False
    )


def prepared_app(db: Database, storage: Path) -> Stask:
    """A migrated database with the bench workers registered."""
    app = make_app(db, storage)
    app.migrate()
    app.discover()
    return app


class RunnerThread:
    """A Runner on a thread of this process; ``wait`` fails at once if the runner died."""

    def __init__(self, app: Stask, options: RunnerOptions | None = None) -> None:
        self.runner = Runner(app, options or RunnerOptions())
        self.failure: BaseException | None = None
        self.where = ""
        self.thread = threading.Thread(target=self._run, name="bench-runner", daemon=True)

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as err:  # surfaced by wait() and stop(), with where it happened
            self.failure = err
            frames = traceback.extract_tb(err.__traceback__)[-3:]
            self.where = "; ".join(
                f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames
            )

    def check(self) -> None:
        if self.failure is not None:
            raise RuntimeError(f"the runner failed: {self.failure!r} at {self.where}")
        if not self.thread.is_alive():
            raise RuntimeError("the runner thread ended before it was asked to stop")

    def wait(self, condition: Callable[[], bool], timeout: float, step: float = 0.002) -> bool:
        """``wait_until`` that gives up as soon as the runner is gone."""

        def done_or_dead() -> bool:
            if condition():
                return True
            self.check()
            return False

        return wait_until(done_or_dead, timeout, step)


@contextlib.contextmanager
def running(
    app: Stask,
    options: RunnerOptions | None = None,
    prepare: Callable[[Runner], None] | None = None,
) -> Iterator[RunnerThread]:
    """A Runner on a thread for the duration of the block; stopped and joined afterwards.

    ``prepare`` sees the runner after it is built and before any of its threads start: the
    moment to instrument its stores.
    """
    handle = RunnerThread(app, options)
    if prepare is not None:
        prepare(handle.runner)
    handle.thread.start()
    try:
        yield handle
    finally:
        handle.runner.request_stop()
        handle.thread.join(timeout=60)
    if handle.failure is not None:
        handle.check()


def runner_stores(runner: Runner) -> list[Any]:
    """Every store the runner may write through: its hot path's own store and the app's (the
    executor's progress and logs may use either)."""
    return [runner.db.store, runner.app.store]


class DrainProbes:
    """SQL counts and claim/finish timings of one runner, attached before its threads start."""

    def __init__(self) -> None:
        self.counter: SqlCounter | None = None
        self.claims: CallTimer | None = None
        self.finishes: CallTimer | None = None

    def attach(self, runner: Runner) -> None:
        stores = runner_stores(runner)
        self.counter = SqlCounter(*(store.engine for store in stores)).attach()
        # The fetcher and the completer call these through the runner's HotPath.
        self.claims = claim_timer([runner.db]).attach()
        self.finishes = CallTimer([runner.db], "finish_many", lambda a, _r: len(a[0])).attach()

    def detach(self) -> None:
        for probe in (self.counter, self.claims, self.finishes):
            if probe is not None:
                probe.detach()

    def figures(self, tasks: int) -> dict[str, Any]:
        if self.counter is None or self.claims is None or self.finishes is None:
            return {}
        return {
            "sql": self.counter.per_task(tasks),
            "claim_calls": self.claims.summary(),
            "finish_calls": self.finishes.summary(),
        }


def enqueue_rate(app: Stask, count: int) -> dict[str, float]:
    """``app.create`` one task at a time (each its own transaction, plus create's read-back)."""
    counter = SqlCounter(app.store.engine).attach()  # no runner is up: safe to attach here
    started = time.perf_counter()
    for _ in range(count):
        app.create(*NOOP)
    elapsed = time.perf_counter() - started
    counter.detach()
    return {
        "tasks": count,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed, 1),
        "sql": counter.per_task(count),
    }


def bulk_enqueue(app: Stask, count: int) -> dict[str, float]:
    """``app.create_many`` in batches of 1,000."""
    counter = SqlCounter(app.store.engine).attach()  # no runner is up: safe to attach here
    started = time.perf_counter()
    left = count
    while left > 0:
        app.create_many([NOOP] * min(BATCH, left))
        left -= BATCH
    elapsed = time.perf_counter() - started
    counter.detach()
    return {
        "tasks": count,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed, 1),
        "sql": counter.per_task(count),
    }


class CpuSplit:
    """Where the machine's CPU went over an interval: this process (the runner, its threads and,
    on SQLite, the database engine), everything else (the PostgreSQL server), and idle, in
    CPU-seconds summed over all cores (``/proc/stat`` and ``os.times``; Linux)."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        with open("/proc/stat") as stat:
            user, nice, system, idle = (int(v) for v in stat.readline().split()[1:5])
        tick = os.sysconf("SC_CLK_TCK")
        own = os.times()
        return (user + nice + system) / tick, idle / tick, own.user + own.system

    def since(self) -> dict[str, float]:
        busy, idle, own = (now - then for now, then in zip(self._read(), self.start, strict=True))
        return {
            "this_process": round(own, 2),
            "other_processes": round(max(0.0, busy - own), 2),
            "idle": round(idle, 2),
        }


def drain(
    db: Database, storage: Path, count: int, concurrency: int, prefetch: int | None = None
) -> dict[str, Any]:
    """Bulk-enqueue ``count`` no-op tasks, then time a Runner (default options but
    ``prefetch``) until all are recorded."""
    app = prepared_app(db, storage)
    try:
        bulk = bulk_enqueue(app, count)
        analyze(db)
        probes = DrainProbes()
        timeout = max(120.0, count / 20)
        cpu = CpuSplit()
        started = time.perf_counter()
        try:
            options = RunnerOptions(concurrency=concurrency, prefetch=prefetch)
            with running(app, options, probes.attach) as handle:
                runner = handle.runner
                finished = handle.wait(lambda: runner.completed >= count, timeout, step=0.005)
                elapsed = time.perf_counter() - started
                used = cpu.since()
                if probes.counter is not None:
                    probes.counter.pause()
        finally:
            probes.detach()
        if not finished:
            raise RuntimeError(f"drain stopped at {runner.completed} of {count} tasks")
        return {
            "tasks": count,
            "done": runner.completed,
            "left_in_queue": app.store.task_reads.queued_count(),
            "seconds": round(elapsed, 3),
            "per_second": round(count / elapsed, 1),
            "prefetch": runner.prefetch,
            "bulk_enqueue": bulk,
            "cpu_seconds": used,
            **probes.figures(count),
        }
    finally:
        app.close()


def pickup_latency(app: Stask, producer: Stask, samples: int, gaps: list[float]) -> dict[str, Any]:
    """Commit of ``producer.create`` to the action's first line, runner idle in between.

    ``producer`` is the runner's own app (same-process path: stask may wake the runner
    directly) or a second app with its own engine (as another process would enqueue).
    """
    workers.STARTED.clear()  # task ids repeat across databases
    clock = CommitClock(producer.store.engine, threading.get_ident()).attach()
    seconds: list[float] = []
    try:
        with running(app) as handle:
            if not handle.wait(lambda: handle.runner.idle, timeout=30):
                raise RuntimeError("the runner never became idle")
            for n in range(samples):
                time.sleep(gaps[n % len(gaps)])
                task = producer.create("bench_probe", "stamp")
                committed = clock.last
                if not handle.wait(lambda t=task.id: t in workers.STARTED, timeout=30):
                    raise RuntimeError(f"task {task.id} never started")
                seconds.append(workers.STARTED[task.id] - committed)
                handle.wait(lambda: handle.runner.idle, timeout=10)
    finally:
        clock.detach()
    return latency_summary(seconds)


def progress_overhead(app: Stask, calls: int, repeats: int) -> dict[str, Any]:
    """Seconds 100,000 progress() calls add to a task over the same empty loop (medians)."""
    workers.ELAPSED.clear()  # task ids repeat across databases
    times: dict[str, list[float]] = {"progress": [], "empty": []}
    timers: dict[str, CallTimer] = {}

    def attach(runner: Runner) -> None:
        for name in ("save_progress", "cancel_flag"):
            claims = [store.claims for store in runner_stores(runner)]
            timers[name] = CallTimer(claims, name, lambda _a, _r: 1).attach()

    try:
        with running(app, RunnerOptions(concurrency=1), attach) as handle:
            for _ in range(repeats):
                for action in ("empty", "progress"):
                    task = app.create("bench_probe", action, {"calls": calls})
                    done = handle.wait(
                        lambda t=task.id: t in workers.ELAPSED, timeout=120, step=0.01
                    )
                    if not done:
                        raise RuntimeError(f"{action} task {task.id} did not finish")
                    times[action].append(workers.ELAPSED[task.id])
    finally:
        for timer in timers.values():
            timer.detach()
    writes, checks = timers["save_progress"], timers["cancel_flag"]
    progress = statistics.median(times["progress"])
    empty = statistics.median(times["empty"])
    return {
        "calls": calls,
        "repeats": repeats,
        "progress_seconds": round(progress, 4),
        "empty_seconds": round(empty, 4),
        "overhead_seconds": round(progress - empty, 4),
        "snapshot_writes_per_task": round(writes.summary()["calls"] / repeats, 1),
        "snapshot_write": writes.summary(),
        "cancel_checks_per_task": round(checks.summary()["calls"] / repeats, 1),
    }


def claim_timer(targets: list[Any]) -> CallTimer:
    """Times the runner's claims: ``record_and_claim``, which records the outcomes waiting and
    claims in one transaction (the fetcher's only claim call since outcomes ride along)."""
    return CallTimer(targets, "record_and_claim", lambda _args, result: len(result[0]))


def stask_command() -> list[str]:
    script = Path(sys.executable).with_name("stask")
    return [str(script)] if script.exists() else [sys.executable, "-m", "stask"]


def idle_worker_rss(db: Database, storage: Path, config: Path) -> dict[str, Any]:
    """``stask worker`` (default concurrency) on an empty queue: VmRSS after ~3 s."""
    env = clean_env(
        STASK_DATABASE_URL=db.url,
        STASK_STORAGE=str(storage),
        STASK_WORKERS=WORKERS_MODULE,
        STASK_CONFIG=str(config),
    )
    return {"rss_mb": idle_rss([*stask_command(), "worker"], env), "command": "stask worker"}


def clear_queue(app: Stask) -> None:
    """Leftovers of an earlier measurement must not run during the next one."""
    with app.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM s_queue"))


def quiet_logs() -> None:
    """stask's INFO lines would interleave with the table; warnings still show."""
    logging.getLogger("stask").setLevel(logging.WARNING)
