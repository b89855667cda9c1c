"""Workers for the runner tests: each records what it did in files the test reads back."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from stask import BaseWorker, TaskContext
from tests.helpers import append_line


class Counter(BaseWorker):
    identifier = "counter"

    def task_touch(self, task: TaskContext, options: dict[str, Any]) -> None:
        append_line(options["log"], f"{task.id} {os.getpid()}")
        delay = float(options.get("delay", 0))
        if delay:
            time.sleep(delay)


class Long(BaseWorker):
    """Runs until its release file appears (or a bound), logging start and end with times."""

    identifier = "long"
    max_attempts = 3

    def task_hold(self, task: TaskContext, options: dict[str, Any]) -> str:
        append_line(options["log"], f"start {task.id} {os.getpid()} {time.time():.6f}")
        release = Path(options["release"])
        deadline = time.monotonic() + float(options.get("bound", 60))
        step = 0
        while not release.exists() and time.monotonic() < deadline:
            step += 1
            task.progress(percent=min(99, step), message=f"holding ({step})")
            time.sleep(0.02)
        append_line(options["log"], f"end {task.id} {os.getpid()} {time.time():.6f}")
        return "released"


class Slow(BaseWorker):
    identifier = "slow"
    max_attempts = 2
    timeout = 0.3

    def task_spin(self, task: TaskContext, options: dict[str, Any]) -> None:
        while True:
            task.progress(message="spinning")
            time.sleep(0.01)


class Isolated(BaseWorker):
    """Runs each attempt in its own process; its actions ignore checkpoints on purpose."""

    identifier = "isolated"
    isolation = "process"
    max_attempts = 1

    def task_block(self, task: TaskContext, options: dict[str, Any]) -> None:
        append_line(options["log"], f"start {task.id} {os.getpid()} {time.time():.6f}")
        time.sleep(float(options.get("seconds", 60)))  # never reaches a checkpoint
        append_line(options["log"], f"end {task.id} {os.getpid()} {time.time():.6f}")

    def task_work(self, task: TaskContext, options: dict[str, Any]) -> dict[str, Any]:
        for i in range(1, 4):
            task.progress(processed=i, total=3, message=f"step {i}")
        task.log("info", "from the child", pid=os.getpid())
        return {"pid": os.getpid()}

    def task_crash(self, task: TaskContext, options: dict[str, Any]) -> None:
        os._exit(3)


class Waiter(BaseWorker):
    identifier = "waiter"

    async def task_nap(self, task: TaskContext, options: dict[str, Any]) -> dict[str, Any]:
        import asyncio
        import threading

        await asyncio.sleep(0.01)
        task.progress(percent=50)
        return {"thread": threading.current_thread().name}
