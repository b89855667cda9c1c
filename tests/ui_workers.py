"""Workers for the UI's browser tests: slow tasks to watch, hostile text, a fixable failure,
settings of every kind."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from stask import BaseWorker, TaskContext

HOSTILE = '<img src=x onerror="window.__staskPwned = true">'


class Reports(BaseWorker):
    identifier = "reports"
    scope = "office"
    icon = "chart"
    title = "Reports"
    description = "Slow reports to watch in the browser"
    max_attempts = 1

    def task_build(self, task: TaskContext, options: dict[str, Any]) -> Path:
        """``rows`` steps of ``delay`` seconds each, then a CSV result file."""
        rows, delay = int(options.get("rows", 20)), float(options.get("delay", 0.2))
        pause = threading.Event()
        for i in range(1, rows + 1):
            task.progress(processed=i, total=rows, message=f"Row {i} of {rows}")
            task.check_cancelled()
            pause.wait(delay)
        task.log("info", "built", rows=rows)
        path = task.storage_path("report.csv")
        path.write_text("row\n" + "".join(f"{i}\n" for i in range(1, rows + 1)), encoding="utf-8")
        return path

    def task_hostile(self, task: TaskContext, options: dict[str, Any]) -> str:
        task.log("warning", f"log line {HOSTILE}")
        task.mark_finished(f"**Done** {HOSTILE}")
        return "hostile"

    def task_flaky(self, task: TaskContext, options: dict[str, Any]) -> str:
        """Fails until the file ``fixed`` names exists."""
        if not Path(options["fixed"]).exists():
            raise RuntimeError("the report server is down")
        return "fixed"


class Archive(BaseWorker):
    identifier = "archive"
    scope = "office"
    icon = "box"
    title = "Archive"
    description = "Settings of every kind to edit in the browser"

    def settings(self) -> dict[str, Any]:
        return {
            "keep_days": 30,
            "formats": ["csv", "pdf"],
            "label": "Monthly",
            "compress": True,
            "api_key": "k-123",  # shown redacted, never overwritten with the redaction
        }

    def task_pack(self, task: TaskContext, options: dict[str, Any]) -> dict[str, Any]:
        return {"packed": self.get_config("formats")}
