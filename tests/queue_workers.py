"""A worker for the queue-limit tests: it records when each task started and ended."""

from __future__ import annotations

import os
import time
from typing import Any

from stask import BaseWorker, TaskContext
from tests.helpers import append_line


class Napper(BaseWorker):
    identifier = "napper"

    def task_nap(self, task: TaskContext, options: dict[str, Any]) -> None:
        append_line(options["log"], f"start {task.id} {os.getpid()} {time.time():.6f}")
        time.sleep(float(options.get("seconds", 0)))
        append_line(options["log"], f"end {task.id} {os.getpid()} {time.time():.6f}")
