"""Workers that misbehave on purpose, for tests/test_hostile.py.

Each action of ``hostile`` does one thing task code should not do (raise a BaseException, hand
stask a value it cannot store, snooze forever); ``good`` is the well-behaved neighbour they run
beside. ``broken_init`` and ``broken_settings`` fail in the worker itself, ``hiccup`` is a worker
whose config service starts failing while the runner is up.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path
from typing import Any

from stask import BaseWorker, TaskContext
from stask.errors import Retry, ValidationError
from stask.models import JSONDict
from tests.helpers import append_line

TOO_LONG = 50_000  # characters: far over every size limit test_hostile sets
DEEP = 100_000  # levels of nesting of the pathological result


def _recurse(depth: int) -> int:
    return _recurse(depth + 1) + 1


class Hostile(BaseWorker):
    identifier = "hostile"
    max_attempts = 2

    def task_good(self, task: TaskContext, options: dict[str, Any]) -> dict[str, Any]:
        return {"n": options["n"], "attempt": task.attempt}

    # -- exceptions that are not Exceptions, and their relatives -------------------------------

    def task_system_exit(self, task: TaskContext, options: dict[str, Any]) -> None:
        raise SystemExit(3)

    def task_keyboard_interrupt(self, task: TaskContext, options: dict[str, Any]) -> None:
        raise KeyboardInterrupt

    def task_recursion(self, task: TaskContext, options: dict[str, Any]) -> None:
        _recurse(0)

    def task_memory(self, task: TaskContext, options: dict[str, Any]) -> None:
        raise MemoryError("pretend the heap ran out")

    # -- values stask cannot store -------------------------------------------------------------

    def task_log_context(self, task: TaskContext, options: dict[str, Any]) -> str:
        task.log("info", "a datetime is not JSON", at=dt.datetime.now())
        return "logged"

    def task_log_context_caught(self, task: TaskContext, options: dict[str, Any]) -> JSONDict:
        try:
            task.log("info", "a datetime is not JSON", at=dt.datetime.now())
        except ValidationError as err:  # refused where it was handed over
            return {"raised": type(err).__name__}
        return {"raised": None}

    def task_non_json_result(self, task: TaskContext, options: dict[str, Any]) -> JSONDict:
        return {"at": dt.datetime.now()}

    def task_deep_result(self, task: TaskContext, options: dict[str, Any]) -> list[Any]:
        nested: list[Any] = []
        for _ in range(DEEP):
            nested = [nested]
        return nested

    def task_big_result(self, task: TaskContext, options: dict[str, Any]) -> str:
        return "r" * TOO_LONG

    def task_big_message(self, task: TaskContext, options: dict[str, Any]) -> str:
        task.progress(percent=10, message="m" * TOO_LONG)
        return "reported"

    def task_big_log_line(self, task: TaskContext, options: dict[str, Any]) -> str:
        task.log("info", "l" * TOO_LONG)
        return "logged"

    def task_big_log_context(self, task: TaskContext, options: dict[str, Any]) -> str:
        task.log("info", "a small line", blob="c" * TOO_LONG)
        return "logged"

    def task_big_options(self, task: TaskContext, options: dict[str, Any]) -> str:
        self.app.create("hostile", "good", {"n": -1, "blob": "o" * TOO_LONG})
        return "created"

    # -- snoozing forever ----------------------------------------------------------------------

    def task_retry_forever(self, task: TaskContext, options: dict[str, Any]) -> None:
        append_line(options["log"], f"{task.id} {task.attempt} {os.getpid()}")
        raise Retry(after=0)


class BrokenInit(BaseWorker):
    """Its constructor fails where HOSTILE_BROKEN_INIT is set (credentials missing on a host)."""

    identifier = "broken_init"
    max_attempts = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if os.environ.get("HOSTILE_BROKEN_INIT"):
            raise RuntimeError("broken constructor: no credentials on this host")
        super().__init__(*args, **kwargs)

    def task_run(self, task: TaskContext, options: dict[str, Any]) -> str:
        return "constructed"


_SETTINGS_BROKEN = threading.Event()  # process-wide: every instance's settings() fails


class BrokenSettings(BaseWorker):
    """Its settings() fail for good in a process once one of its tasks ran there."""

    identifier = "broken_settings"
    max_attempts = 1

    def settings(self) -> JSONDict:
        if _SETTINGS_BROKEN.is_set():
            raise RuntimeError("config service unavailable")
        return {"endpoint": "https://config.invalid"}

    def task_read(self, task: TaskContext, options: dict[str, Any]) -> Any:
        _SETTINGS_BROKEN.set()
        return task.config("endpoint")


class Hiccup(BaseWorker):
    """Slow tasks that log their runs; settings() fails in the processes a flag file names.

    HOSTILE_HICCUP_FLAG names the flag file: once it exists, settings() raises RuntimeError in
    each process whose pid it lists (in every process if it is empty), and appends a line to
    ``<flag>.raised`` each time it does.
    """

    identifier = "hiccup"
    max_attempts = 3

    def settings(self) -> JSONDict:
        flag = os.environ.get("HOSTILE_HICCUP_FLAG")
        if flag and _names_this_process(Path(flag)):
            append_line(
                f"{flag}.raised",
                f"{os.getpid()} {threading.current_thread().name} {time.time():.6f}",
            )
            raise RuntimeError("config service hiccup")
        return {"endpoint": "https://config.invalid"}

    def task_work(self, task: TaskContext, options: dict[str, Any]) -> JSONDict:
        pid = os.getpid()
        append_line(options["log"], f"start {task.id} {task.attempt} {pid} {time.time():.6f}")
        time.sleep(float(options["seconds"]))  # no checkpoint: it cannot notice a lost lease
        append_line(options["log"], f"end {task.id} {task.attempt} {pid} {time.time():.6f}")
        return {"pid": pid, "attempt": task.attempt}


def _names_this_process(flag: Path) -> bool:
    try:
        listed = flag.read_text().split()
    except FileNotFoundError:
        return False
    return not listed or str(os.getpid()) in listed
