"""Workers used by the test suite (imported by name, like a user's module)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from stask import BaseWorker, TaskContext

# Side effects tests count to prove exactly-once execution in this process.
CALLS: list[tuple[str, int]] = []
CALLS_LOCK = threading.Lock()


class Inventory(BaseWorker):
    identifier = "inventory"
    scope = "shop"
    icon = "box"
    title = "Inventory"
    description = "Stock levels"
    max_attempts = 2

    def settings(self) -> dict[str, Any]:
        return {"api": {"url": "https://example.invalid", "timeout": 30}, "batch": 10}

    def task_sync_stock(self, task: TaskContext, options: dict[str, Any]) -> Any:
        with CALLS_LOCK:
            CALLS.append(("sync_stock", task.id))
        rows = int(options.get("rows", 3))
        for i in range(1, rows + 1):
            task.progress(processed=i, total=rows, message=f"Row **{i}**")
        task.log("info", "synced", rows=rows)
        return {"synced": rows, "echo": options.get("echo")}

    def task_fail(self, task: TaskContext, options: dict[str, Any]) -> None:
        raise RuntimeError(f"broken on attempt {task.attempt}")

    def task_give_up(self, task: TaskContext, options: dict[str, Any]) -> None:
        task.mark_failed("Validation failed: file is required")

    def task_finish_early(self, task: TaskContext, options: dict[str, Any]) -> str:
        task.mark_finished("All done early", result={"early": True})
        return "ignored"

    def task_export(self, task: TaskContext, options: dict[str, Any]) -> Path:
        path = task.storage_path("out.csv")
        path.write_text("id,name\n1,a\n", encoding="utf-8")
        return path

    def task_not_json(self, task: TaskContext, options: dict[str, Any]) -> object:
        return object()

    async def task_async_echo(self, task: TaskContext, options: dict[str, Any]) -> Any:
        task.progress(percent=50, message="half")
        return {"async": True, "value": options.get("value")}

    def task_config(self, task: TaskContext, options: dict[str, Any]) -> Any:
        return {"timeout": task.config("api.timeout"), "batch": self.get_config("batch")}

    def task_wait_cancel(self, task: TaskContext, options: dict[str, Any]) -> None:
        gate = GATES.get(task.id)
        if gate is not None:
            gate.wait(10)
        for i in range(1000):
            task.progress(processed=i, total=1000)
            task.check_cancelled()
            threading.Event().wait(0.01)


class Mailer(BaseWorker):
    identifier = "mailer"
    scope = "notifications"
    title = "Mailer"

    def task_send(self, task: TaskContext, options: dict[str, Any]) -> Any:
        with CALLS_LOCK:
            CALLS.append(("send", task.id))
        return {"sent": options.get("to")}


GATES: dict[int, threading.Event] = {}
