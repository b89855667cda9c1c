"""Workers for tests/test_pinning.py: each records what it did in files the test reads back."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from stask import BaseWorker, TaskContext
from tests.helpers import append_line


class Flaky(BaseWorker):
    """Fails on every attempt (``fail``) or succeeds at once (``ok``)."""

    identifier = "flaky"
    max_attempts = 3

    def task_fail(self, task: TaskContext, options: dict[str, Any]) -> None:
        raise RuntimeError(f"broken on attempt {task.attempt}")

    def task_ok(self, task: TaskContext, options: dict[str, Any]) -> str:
        return "ok"


class Spinner(BaseWorker):
    """Checkpoints in a loop forever: only the timeout of 0.3 s stops it."""

    identifier = "spinner"
    max_attempts = 1
    timeout = 0.3

    def task_spin(self, task: TaskContext, options: dict[str, Any]) -> None:
        while True:
            task.progress(message="spinning")
            time.sleep(0.01)


class Holder(BaseWorker):
    """Runs until its release file appears (or a bound), logging start and end."""

    identifier = "holder"
    max_attempts = 3

    def task_hold(self, task: TaskContext, options: dict[str, Any]) -> str:
        append_line(options["log"], f"start {task.id} {os.getpid()} {time.time():.6f}")
        release = Path(options["release"])
        deadline = time.monotonic() + float(options.get("bound", 120))
        while not release.exists() and time.monotonic() < deadline:
            task.progress(message="holding")
            time.sleep(0.02)
        append_line(options["log"], f"end {task.id} {os.getpid()} {time.time():.6f}")
        return "released"


class Toucher(BaseWorker):
    """Appends its task id to a log file."""

    identifier = "toucher"

    def task_touch(self, task: TaskContext, options: dict[str, Any]) -> None:
        append_line(options["log"], f"{task.id} {os.getpid()}")
