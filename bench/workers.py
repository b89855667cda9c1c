"""Workers the benchmark runs: a no-op, a probe that stamps its start, and progress loops."""

from __future__ import annotations

import time
from typing import Any

from stask import BaseWorker, TaskContext

# Filled by the actions, read by the benchmark in the same process (runner on a thread).
STARTED: dict[int, float] = {}
ELAPSED: dict[int, float] = {}


class BenchNoop(BaseWorker):
    identifier = "bench_noop"
    max_attempts = 1

    def task_noop(self, task: TaskContext, options: dict[str, Any]) -> None:
        return None


class BenchProbe(BaseWorker):
    identifier = "bench_probe"
    max_attempts = 1

    def task_stamp(self, task: TaskContext, options: dict[str, Any]) -> None:
        STARTED[task.id] = time.perf_counter()

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
