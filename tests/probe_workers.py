"""A worker that looks at its own task from inside, for tests of what lands while it runs.

Kept out of ``sample_workers`` so the suites that count the sample workers are not affected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stask import BaseWorker, Retry, TaskContext


class Probe(BaseWorker):
    identifier = "probe"
    scope = "tests"
    title = "Probe"
    max_attempts = 1

    def task_observe(self, task: TaskContext, options: dict[str, Any]) -> Any:
        """Report a quarter done, then read the task back through the app as a viewer would."""
        task.progress(processed=1, total=4, message="A **quarter**")
        seen = self.app.get(task.id)
        return {"progress": seen.progress, "processed": seen.processed, "message": seen.message}

    def task_partial(self, task: TaskContext, options: dict[str, Any]) -> None:
        task.progress(processed=3, total=10, message="three of ten")
        task.mark_failed("stopped at three")

    def task_outside(self, task: TaskContext, options: dict[str, Any]) -> Path:
        return Path(str(options["path"]))

    def task_snooze(self, task: TaskContext, options: dict[str, Any]) -> None:
        raise Retry(after=float(options.get("after", 3600)))
