"""The runner daemon: claim in batches, run on threads, record in batches, stay alive, stop well.

One fetcher (the thread calling ``run``) claims as many tasks as there are free slots plus a
bounded prefetch, in one claim per batch. Worker threads run them; a completer thread records
the outcomes in fenced batches; the liveness thread heartbeats and rescues tasks of dead nodes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from stask.core.context import TaskContext
from stask.core.executor import Executor, Finished
from stask.core.facade import Stask
from stask.core.liveness import Liveness
from stask.core.queues import check_queue_name
from stask.db.dialects import hot_path_store
from stask.db.nodes import NodeStore, Rescue
from stask.db.rows import Outcome
from stask.errors import ConfigError, StaskError
from stask.models import JSONDict, Task

log = logging.getLogger("stask.runner")
FLUSH_INTERVAL_SECONDS = 0.05
FLUSH_MAX = 500
MIN_POLL_SECONDS = 0.05
ERROR_BACKOFF_MAX_SECONDS = 10.0


def default_concurrency() -> int:
    return 2 * (os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    concurrency: int = field(default_factory=default_concurrency)
    queues: tuple[str, ...] = ()  # empty: every queue
    prefetch: int | None = None  # default: as many again as the concurrency
    poll_seconds: float = 1.0
    grace_seconds: float = 30.0

    def validate(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.prefetch is not None and self.prefetch < 0:
            raise ConfigError(f"prefetch must be 0 or more, got {self.prefetch}")
        if self.grace_seconds < 0 or self.poll_seconds <= 0:
            raise ConfigError("grace must be >= 0 and poll > 0 seconds")
        for name in self.queues:  # an empty name served nothing while the log said "all"
            check_queue_name(name)


class Runner:
    """Runs tasks until ``request_stop``; then drains within the grace period and releases."""

    def __init__(self, app: Stask, options: RunnerOptions | None = None) -> None:
        self.app = app
        self.options = options or RunnerOptions()
        self.options.validate()
        self.node_id = app.node_id
        self.prefetch = (
            self.options.concurrency if self.options.prefetch is None else self.options.prefetch
        )
        self.executor = Executor(app, self.node_id)
        # Claims, records and heartbeats go through their own pool (see hot_path_store).
        self.store = hot_path_store(app.store)
        self.liveness = Liveness(
            NodeStore(self.store),
            self.node_id,
            lease_seconds=app.settings.lease_seconds,
            heartbeat_seconds=app.settings.heartbeat_seconds,
            concurrency=self.options.concurrency,
            queues=list(self.options.queues),
            on_rescue=self._on_rescue,
            on_lost=self._on_lost,
            on_tick=self._on_tick,
        )
        self._lock = threading.Condition()
        self._ready: deque[Task] = deque()
        self._running: dict[int, TaskContext] = {}
        self._done: list[Finished] = []
        # Every task this process holds, from its claim until its outcome is recorded.
        self._held: set[int] = set()
        self._maybe_recorded: set[int] = set()  # see _recorded
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._flush_now = threading.Event()
        self._workers_done = threading.Event()
        self.completed = 0
        self._claimed_nothing = False
        self.wakeups = 0
        app.on_enqueue(self.wake)
        # LISTEN on PostgreSQL, the wake file on SQLite: another process's enqueue wakes us.
        self.listener = app.store.wake_source(self.wake)

    # -- control -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; running tasks get the grace period (safe from a signal handler)."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            self._lock.notify_all()

    def wake(self) -> None:
        """New work may be due (a same-process enqueue, a NOTIFY, a rescue)."""
        self.wakeups += 1
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def idle(self) -> bool:
        """Nothing buffered, running or unrecorded, and the last claim found nothing due."""
        with self._lock:
            return self._claimed_nothing and not (self._ready or self._running or self._done)

    def _on_tick(self) -> None:
        """After each heartbeat: due schedule slots (each slot once, whichever runner is
        first), then the store's upkeep (resetting a SQLite WAL that readers held back)."""
        try:
            if self.app.enqueue_due_schedules():
                self.wake()
        finally:
            self.store.maintain()

    def _on_rescue(self, _rescued: Rescue) -> None:
        self.wake()

    def _on_lost(self) -> None:
        # Heartbeats failed for most of the lease: other nodes may rescue our tasks now, so
        # stop them at their next checkpoint rather than run them twice.
        with self._lock:
            for context in self._running.values():
                context.abandon()

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> None:
        identifiers = list(self.app.registry.classes())
        if not identifiers:
            raise ConfigError(
                "no worker classes found - set STASK_WORKERS (or `workers` in stask.toml) to the "
                "modules that define them"
            )
        self.liveness.start()
        self.liveness.tick()
        if self.listener is not None:
            self.listener.start()
        workers = [
            threading.Thread(target=self._work, name=f"stask-worker-{n}", daemon=True)
            for n in range(self.options.concurrency)
        ]
        completer = threading.Thread(target=self._complete, name="stask-completer", daemon=True)
        for thread in (*workers, completer):
            thread.start()
        log.info(
            "runner %s: %d threads, prefetch %d, queues %s",
            self.node_id,
            self.options.concurrency,
            self.prefetch,
            ", ".join(self.options.queues) or "all",
        )
        try:
            self._fetch(identifiers)
        finally:
            self._shutdown(workers, completer)

    def _fetch(self, identifiers: list[str]) -> None:
        wait = MIN_POLL_SECONDS
        failures = 0
        next_reconcile = time.monotonic() + self.app.settings.lease_seconds
        while not self.stopping:
            with self._lock:
                want = (
                    self.options.concurrency + self.prefetch - len(self._ready) - len(self._running)
                )
            claimed: list[Task] = []
            if want > 0:
                # Outcomes waiting to be recorded go in the claim's transaction.
                batch = self._take_done()
                try:
                    finished, logs = _to_record(batch)
                    claimed, accepted = self.store.record_and_claim(
                        self.node_id,
                        identifiers,
                        want,
                        queues=self.options.queues or None,
                        finished=finished,
                        logs=logs,
                    )
                    self._recorded(batch, accepted)
                    failures = 0
                except StaskError as err:
                    self._unrecorded(batch)
                    failures += 1
                    backoff = min(ERROR_BACKOFF_MAX_SECONDS, 0.5 * 2**failures)
                    log.warning("claim failed (retrying in %.1f s): %s", backoff, err)
                    self._wake.wait(backoff)
                    self._wake.clear()
                    # The claim may have committed before the connection broke.
                    self._reconcile()
                    continue
            self._claimed_nothing = want > 0 and not claimed
            if claimed:
                with self._lock:
                    self._held.update(task.id for task in claimed)
                    self._ready.extend(claimed)
                    self._lock.notify_all()
                wait = MIN_POLL_SECONDS
                if len(claimed) == want:
                    continue  # more may be due right now
            elif want > 0:
                wait = min(wait * 2, self.options.poll_seconds)
            self._wake.wait(wait if want > 0 else self.options.poll_seconds)
            self._wake.clear()
            if time.monotonic() >= next_reconcile:
                self._reconcile()
                next_reconcile = time.monotonic() + self.app.settings.lease_seconds

    def _next(self) -> Task | None:
        with self._lock:
            while not self._ready and not self.stopping:
                self._lock.wait()
            if self.stopping or not self._ready:
                return None
            task = self._ready.popleft()
            # Refill before the buffer runs dry, in batches rather than one claim per task.
            if len(self._ready) <= self.prefetch // 2:
                self._wake.set()
            return task

    def _work(self) -> None:
        while (task := self._next()) is not None:

            def started(context: TaskContext, task_id: int = task.id) -> None:
                with self._lock:
                    self._running[task_id] = context

            try:
                finished = self.executor.execute(task, on_start=started)
            except Exception:  # a bug in stask itself: keep the thread, let the rescuer retry
                log.exception("task %s: runner error", task.id)
                finished = None
            with self._lock:
                self._running.pop(task.id, None)
                if finished is None:
                    self._held.discard(task.id)
                else:
                    self._done.append(finished)
                    if len(self._done) >= FLUSH_MAX:
                        self._flush_now.set()
                self._lock.notify_all()
            self._wake.set()

    def _complete(self) -> None:
        """Record outcomes the fetcher did not take along with a claim (it is idle or full)."""
        failures = 0
        while True:
            self._flush_now.wait(FLUSH_INTERVAL_SECONDS)
            self._flush_now.clear()
            batch = self._take_done()
            if batch:
                try:
                    accepted = self.store.finish_many(self.node_id, *_to_record(batch))
                    self._recorded(batch, accepted)
                    failures = 0
                except StaskError as err:
                    self._unrecorded(batch)
                    failures += 1
                    backoff = min(ERROR_BACKOFF_MAX_SECONDS, 0.2 * 2**failures)
                    log.warning(
                        "recording %d outcomes failed (retry in %.1f s): %s",
                        len(batch),
                        backoff,
                        err,
                    )
                    time.sleep(backoff)
                    continue
            with self._lock:
                if self._workers_done.is_set() and not self._done:
                    return

    def _take_done(self) -> list[Finished]:
        with self._lock:
            batch, self._done = self._done[:FLUSH_MAX], self._done[FLUSH_MAX:]
        return batch

    def _recorded(self, batch: list[Finished], accepted: set[int]) -> None:
        if not batch:
            return
        refused = [item.task.id for item in batch if item.task.id not in accepted]
        with self._lock:
            # Outcomes a failed attempt may have committed (its answer lost with the
            # connection): this retry's fence refuses them as already final.
            suspects = [task_id for task_id in refused if task_id in self._maybe_recorded]
            self._maybe_recorded.difference_update(item.task.id for item in batch)
        if suspects:
            try:
                earlier = self.store.final_under(self.node_id, suspects)
            except StaskError as err:
                log.debug("could not check refused finishes: %s", err)
                earlier = set()
            accepted = accepted | earlier
            refused = [task_id for task_id in refused if task_id not in earlier]
        with self._lock:
            self._held.difference_update(item.task.id for item in batch)
            self.completed += len(accepted)
        if refused:
            log.warning("finish refused for tasks %s: another node holds them", refused)

    def _unrecorded(self, batch: list[Finished]) -> None:
        """Recording failed, perhaps after its commit: keep them, in order, for the next try."""
        with self._lock:
            self._done[:0] = batch
            self._maybe_recorded.update(item.task.id for item in batch)

    def _reconcile(self) -> None:
        """Release tasks the database says this node holds but this process does not know of.

        That happens when a claim committed on the server but its answer was lost with the
        connection: without this they would stay running under a live node forever.
        """
        try:
            in_database = self.store.running_task_ids(self.node_id)
        except StaskError as err:
            log.warning("could not check held tasks: %s", err)
            return
        with self._lock:
            unknown = [task_id for task_id in in_database if task_id not in self._held]
        if unknown:
            log.warning("tasks %s were claimed by a claim that seemed to fail; releasing", unknown)
            self._release(unknown, "Released: claimed while the database connection broke")

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self, workers: list[threading.Thread], completer: threading.Thread) -> None:
        self.request_stop()
        with self._lock:
            prefetched = [task.id for task in self._ready]
            self._ready.clear()
        self._release(prefetched, "Released: its runner stopped before starting it")
        deadline = time.monotonic() + self.options.grace_seconds
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            unfinished = list(self._running)
            for context in self._running.values():
                context.abandon()
        self._workers_done.set()
        self._flush_now.set()
        completer.join(timeout=max(5.0, self.options.grace_seconds))
        # Outcomes are recorded now, so whatever the database still says this node holds is
        # unfinished: also a task whose thread gave up early (its lease looked lost) or one
        # this process lost track of. Releasing them here beats waiting out the lease.
        try:
            unfinished = sorted({*unfinished, *self.store.running_task_ids(self.node_id)})
        except StaskError as err:
            log.warning("could not list held tasks at shutdown: %s", err)
        self._release(unfinished, "Released: its runner shut down before it finished")
        if self.listener is not None:
            self.listener.stop()
        self.liveness.stop()
        if self.store is not self.app.store:
            self.store.dispose()
        log.info("runner %s stopped: %d tasks recorded", self.node_id, self.completed)

    def _release(self, task_ids: list[int], message: str) -> None:
        if not task_ids:
            return
        try:
            released = NodeStore(self.store).release(self.node_id, task_ids, message)
            log.info("released %d task(s) back to the queue", len(released))
        except StaskError as err:  # the rescuer requeues them after the lease instead
            log.warning("could not release %s: %s", task_ids, err)


def _to_record(batch: list[Finished]) -> tuple[list[tuple[int, Outcome]], list[JSONDict]]:
    """The outcomes and log lines of a batch, as the store records them."""
    return [(item.task.id, item.outcome) for item in batch], [
        entry for item in batch for entry in item.logs
    ]
