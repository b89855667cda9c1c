"""A worker for the queue-limit tests: it records when each task started and ended."""

from __future__ import annotations

import os
import time
from typing import Any

from stask import BaseWorker, TaskContext


class Napper(BaseWorker):
    identifier = "napper"

    def task_nap(self, task: TaskContext, options: dict[str, Any]) -> None:
        _append(options["log"], f"start {task.id} {os.getpid()} {time.time():.6f}")
        time.sleep(float(options.get("seconds", 0)))
        _append(options["log"], f"end {task.id} {os.getpid()} {time.time():.6f}")


def _append(path: str, line: str) -> None:
    # One short write() with O_APPEND is atomic, even across processes.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
