"""Workers the benchmark runs: a no-op, a sleep, a probe that stamps its start, progress loops."""

from __future__ import annotations

import time
from typing import Any

from stask import BaseWorker, TaskContext

# Filled by the actions, read by the benchmark in the same process (runner on a thread).
STARTED: dict[int, float] = {}
ELAPSED: dict[int, float] = {}
# A sleep task's (start, end) perf_counter, for the runners section (runners on threads here).
SLEPT: dict[int, tuple[float, float]] = {}


class BenchNoop(BaseWorker):
    identifier = "bench_noop"
    max_attempts = 1

    def task_noop(self, task: TaskContext, options: dict[str, Any]) -> None:
        return None


class BenchSleep(BaseWorker):
    """A long task that holds its slot without the CPU: what a runner's scheduling of slots
    is judged by (its makespan against the work spread over every slot)."""

    identifier = "bench_sleep"
    max_attempts = 1

    def task_sleep(self, task: TaskContext, options: dict[str, Any]) -> None:
        started = time.perf_counter()
        time.sleep(float(options["ms"]) / 1000)
        SLEPT[task.id] = (started, time.perf_counter())


class BenchProbe(BaseWorker):
    identifier = "bench_probe"
    max_attempts = 1

    def task_stamp(self, task: TaskContext, options: dict[str, Any]) -> None:
        STARTED[task.id] = time.perf_counter()

    def task_stamp_file(self, task: TaskContext, options: dict[str, Any]) -> None:
        """Appends "<task id> <time.time()>" to ``options["file"]``: the start of an action in
        another process (``stask worker``), on the wall clock both processes share."""
        stamp = time.time()
        with open(options["file"], "a", encoding="utf-8") as out:
            out.write(f"{task.id} {stamp!r}\n")

    def task_progress(self, task: TaskContext, options: dict[str, Any]) -> None:
        calls = int(options["calls"])
        started = time.perf_counter()
        for i in range(1, calls + 1):
            task.progress(processed=i, total=calls)
        ELAPSED[task.id] = time.perf_counter() - started

    def task_empty(self, task: TaskContext, options: dict[str, Any]) -> None:
        calls = int(options["calls"])
        started = time.perf_counter()
        for _ in range(1, calls + 1):
            pass
        ELAPSED[task.id] = time.perf_counter() - started
