"""Workers with schedules for the schedule tests (imported by name, like a user's module)."""

from __future__ import annotations

from typing import Any

from stask import BaseWorker, TaskContext


class Report(BaseWorker):
    """Has a ``make`` action, the default a schedule runs."""

    identifier = "report"
    title = "Report"

    def task_make(self, task: TaskContext, options: dict[str, Any]) -> Any:
        return {"made": options}

    def task_publish(self, task: TaskContext, options: dict[str, Any]) -> Any:
        return {"published": options}


class Digest(BaseWorker):
    """One action, which a schedule runs when it names none."""

    identifier = "digest"
    title = "Digest"

    def task_build(self, task: TaskContext, options: dict[str, Any]) -> Any:
        return {"built": options}
