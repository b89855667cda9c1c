"""Where an action's code runs besides a runner thread: a shared event loop, or its own process.

``async def`` actions run on one event loop thread per process. A worker with
``isolation = "process"`` runs each attempt in a child process that the runner kills on timeout,
cancellation or shutdown: the only way to stop code that never reaches a checkpoint.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from stask.core.context import LeaseLost, Snapshot, TaskCancelled, TaskContext, TaskTimedOut
from stask.models import JSONDict, Outcome, Status, Task

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from stask.core.executor import Executor
    from stask.core.worker import BaseWorker

POLL_SECONDS = 0.1


class _LoopThread:
    """One event loop per process, on a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
                threading.Thread(
                    target=self._loop.run_forever, name="stask-asyncio", daemon=True
                ).start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


_EVENT_LOOP = _LoopThread()


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run on the process's event loop thread and wait for the result in the calling thread."""
    return _EVENT_LOOP.run(coroutine)


class ChildDied(Exception):
    """The task's process ended without reporting an outcome."""


ChildAnswer = tuple[Outcome | None, Snapshot, list[JSONDict]]


def _child_main(
    settings: JSONDict, use_entry_points: bool, node_id: str, task: Task, answer: Connection
) -> None:
    """Entry point of the child process: run one attempt and send back what happened."""
    from stask.core.executor import Executor
    from stask.core.facade import Stask
    from stask.settings import Settings

    app = Stask(Settings(**settings), use_entry_points=use_entry_points)
    executor = Executor(app, node_id)
    context = TaskContext(task, executor.sink, app.settings.storage, limits=executor.limits)
    outcome: Outcome | None
    try:
        worker = app.worker_instance(task.identifier)
        method = worker.resolve_action(task.action) if worker else None
        if worker is None or method is None:
            outcome = Outcome(
                Status.FAILED, message=f"worker {task.identifier!r} is not importable"
            )
        else:
            context.bind_worker(worker.get_config, None)  # the parent keeps the timeout
            outcome = executor.call_action(method, context, task, worker)
    except LeaseLost:
        outcome = None
    except BaseException as exc:  # the worker's __init__ raised: this attempt's failure
        outcome = Outcome(Status.FAILED, message=f"{type(exc).__name__}: {exc}")
    answer.send((outcome, context.final_snapshot(), context.pending_logs()))
    answer.close()
    app.close()


def run_in_child(
    executor: Executor, task: Task, context: TaskContext, worker: BaseWorker
) -> Outcome:
    """Run one attempt in a fresh process, killing it on timeout, cancellation or release.

    The parent keeps the task's checkpoints (``context.check_cancelled``) while it waits, so
    the limits apply even to code that never calls ``progress()``.
    """
    import multiprocessing  # only process-isolated workers need it: keep runners small

    spawn = multiprocessing.get_context("spawn")
    receive, send = spawn.Pipe(duplex=False)
    settings = executor.app.settings.to_json()
    child = spawn.Process(
        target=_child_main,
        args=(settings, executor.app.registry.use_entry_points, executor.node_id, task, send),
        name=f"stask-task-{task.id}",
        daemon=True,
    )
    child.start()
    send.close()
    try:
        while True:
            if receive.poll(POLL_SECONDS):
                outcome, snapshot, logs = receive.recv()
                context.absorb(snapshot, logs)
                if outcome is None:
                    raise LeaseLost(f"task {task.id} was lost while its process ran")
                return outcome  # type: ignore[no-any-return]
            if not child.is_alive():
                died = ChildDied(f"the task's process exited with code {child.exitcode}")
                return executor.failure(worker, task, died)
            context.check_cancelled()
    except TaskCancelled:
        return Outcome(Status.CANCELLED, message="Cancelled while running (its process was killed)")
    except TaskTimedOut as timed_out:
        return executor.failure(worker, task, timed_out)
    except EOFError:  # the pipe closed first; the exit code comes a moment later
        child.join(timeout=10)
        died = ChildDied(f"the task's process exited with code {child.exitcode}")
        return executor.failure(worker, task, died)
    finally:
        if child.is_alive():
            child.kill()
        child.join(timeout=10)
        receive.close()
