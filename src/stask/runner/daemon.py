"""The runner daemon: claim in batches, run on threads, record in batches, stay alive, stop well.

One fetcher (the thread calling ``run``) claims as many tasks as there are free slots plus a
bounded prefetch, in one claim per batch: the ones for free slots start with the claim, the
prefetched ones only when a worker thread takes them up. Worker threads run them; a completer
thread records the outcomes in fenced batches; the liveness thread heartbeats and rescues tasks
of dead nodes; the scheduler thread fires due schedules (it calls worker code, which must never
stall or end the heartbeat).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from stask.core.context import TaskContext
from stask.core.executor import Finished, refused_value, unrecordable
from stask.core.facade import Stask
from stask.core.queues import check_queue_name
from stask.core.running import HotPath
from stask.errors import ConfigError, StaskError
from stask.models import Ahead, Claim, JSONDict, Outcome, Rescue, Task
from stask.runner.pace import Pace, action_key

log = logging.getLogger("stask.runner")
FLUSH_INTERVAL_SECONDS = 0.05
FLUSH_MAX = 500
MIN_POLL_SECONDS = 0.05
# A task started by its claim that waited this fraction of the lease before a thread took it up
# has its claim checked first: the lease may have run out while this process was starved.
STALE_FRACTION = 0.25
ERROR_BACKOFF_MAX_SECONDS = 10.0


def default_concurrency() -> int:
    return 2 * (os.cpu_count() or 1)


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    concurrency: int = field(default_factory=default_concurrency)
    queues: tuple[str, ...] = ()  # empty: every queue
    prefetch: int | None = None  # default: adapts to how long tasks take (runner/pace.py)
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
        self.pace = Pace(self.options.concurrency, fixed=self.options.prefetch)
        # Claims, starts, records and heartbeats go through their own pool (core/running.py).
        self.db = HotPath(app)
        self.executor = self.db.executor(self.node_id)
        self.liveness = self.db.liveness(
            self.node_id,
            concurrency=self.options.concurrency,
            queues=list(self.options.queues),
            on_rescue=self._on_rescue,
            on_lost=self._on_lost,
            report=self.pace.report,
        )
        mutex = threading.RLock()
        self._lock = threading.Condition(mutex)
        # Worker threads wait on this one, so a claim wakes as many as it brought tasks.
        self._has_work = threading.Condition(mutex)
        self._ready: deque[Task] = deque()
        self._running: dict[int, TaskContext] = {}
        self._done: list[Finished] = []
        # Every claim this process holds, from the claim until its outcome is recorded.
        self._held: dict[int, Claim] = {}
        # Running attempts given up (lease lost): their claims go back when their thread ends.
        self._given_up: set[int] = set()
        # When each task in hand was claimed (monotonic), to spot claims that waited long.
        self._claimed_at: dict[int, float] = {}
        self._maybe_recorded: set[int] = set()  # see _recorded
        # The action (pace.action_key) of each attempt running now.
        self._busy: dict[int, str] = {}
        self._stopping = threading.Event()
        # Turns in flight at once: two on a server, whose turn is mostly waiting for it (the
        # next claim goes out while the last one's answer is on its way); one on SQLite, whose
        # writers take turns anyway. Each lane is a fetcher thread with its own wake-up.
        self.lanes = self.db.lanes
        self._wakes = [threading.Event() for _ in range(self.lanes)]
        self._turns = 0  # turns in flight
        self._inflight = 0  # tasks those turns may bring back
        self._reconciling = False  # no turn starts while held claims are checked
        self._backlog = False  # the last turn came back full: more is due now
        self._flush_now = threading.Event()
        self._workers_done = threading.Event()
        self.completed = 0
        self._claimed_nothing = False
        self._lost = False
        self.wakeups = 0
        app.on_enqueue(self.wake)
        # LISTEN on PostgreSQL, the wake file on SQLite: another process's enqueue wakes us.
        self.listener = self.db.wake_source(self.wake)

    # -- control -------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; running tasks get the grace period (safe from a signal handler)."""
        self._stopping.set()
        self._wake_all()
        with self._lock:
            self._lock.notify_all()
            self._has_work.notify_all()

    def wake(self) -> None:
        """New work may be due (a same-process enqueue, a NOTIFY, a rescue)."""
        self.wakeups += 1
        self._wake_all()

    def _wake_all(self) -> None:
        for event in self._wakes:
            event.set()

    @property
    def prefetch(self) -> int:
        """How many tasks this runner holds beyond its slots now (fixed, or learned)."""
        return self.pace.prefetch()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def idle(self) -> bool:
        """Nothing buffered, running or unrecorded, and the last claim found nothing due."""
        with self._lock:
            return self._claimed_nothing and not (self._ready or self._running or self._done)

    def _schedule(self) -> None:
        """The scheduler thread: a ``tick`` every heartbeat period until the runner stops."""
        period = self.liveness.heartbeat_seconds
        while not self._stopping.wait(period):
            self.tick()

    def tick(self) -> None:
        """Due schedule slots (each slot once, whichever runner is first), then the store's
        upkeep (resetting a SQLite WAL that readers held back). Worker code runs here
        (settings()), so nothing it raises leaves: it is logged, and the next tick tries again.
        """
        try:
            if self.app.enqueue_due_schedules():
                self.wake()
        except Exception as err:
            log.warning("firing due schedules failed: %s: %s", type(err).__name__, err)
        try:
            self.db.maintain()
        except Exception as err:
            log.warning("database upkeep failed: %s: %s", type(err).__name__, err)

    def _on_rescue(self, _rescued: Rescue) -> None:
        self.wake()

    def _on_lost(self) -> None:
        """The lease may be gone (heartbeats failed for most of it, or this node was declared
        dead): others may rescue what it holds, so it gives everything up before it claims
        again. Prefetched tasks go back now; running ones stop at their next checkpoint and
        their claims go back when their thread ends. Their fenced writes refuse whatever a
        rescue took meanwhile."""
        with self._lock:
            prefetched = [task.claim for task in self._ready]
            self._ready.clear()
            for task_id, context in self._running.items():
                context.abandon()
                self._given_up.add(task_id)
            for claim in prefetched:
                self._held.pop(claim.id, None)
                self._claimed_at.pop(claim.id, None)
            running = len(self._running)
        log.warning(
            "runner %s gave up %d running and %d prefetched task(s): its lease may be lost",
            self.node_id,
            running,
            len(prefetched),
        )
        self._release(prefetched, "Released: its runner lost its lease before starting it")

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> None:
        identifiers = list(self.app.registry.classes())
        if not identifiers:
            raise ConfigError(
                "no worker classes found - set STASK_WORKERS (or `workers` in stask.toml) to the "
                "modules that define them"
            )
        workers = [
            threading.Thread(target=self._work, name=f"stask-worker-{n}", daemon=True)
            for n in range(self.options.concurrency)
        ]
        completer = threading.Thread(target=self._complete, name="stask-completer", daemon=True)
        scheduler = threading.Thread(target=self._schedule, name="stask-scheduler", daemon=True)
        self._seed_pace()
        try:
            self.liveness.start()
            if self.listener is not None:
                self.listener.start()
            for thread in (*workers, completer, scheduler):
                thread.start()
        except BaseException:
            # Nothing registered or listening outlives a start that failed.
            self.request_stop()
            if self.listener is not None:
                self.listener.stop()
            self.liveness.stop()
            self.db.close()
            raise
        log.info(
            "runner %s: %d threads, prefetch %s, queues %s",
            self.node_id,
            self.options.concurrency,
            self.prefetch if not self.pace.adaptive else f"adaptive (0-{self.pace.bound})",
            ", ".join(self.options.queues) or "all",
        )
        learned = self.pace.learned()
        if learned:
            log.info(
                "runner %s: durations from the database: %s",
                self.node_id,
                ", ".join(f"{key} {item.seconds * 1000:.1f} ms" for key, item in learned.items()),
            )
        lanes = [
            threading.Thread(
                target=self._fetch, args=(identifiers, lane), name=f"stask-fetch-{lane}"
            )
            for lane in range(1, self.lanes)
        ]
        try:
            for thread in lanes:
                thread.start()
            self._fetch(identifiers, 0)
        finally:
            self.request_stop()
            for thread in lanes:  # no turn may be in flight while shutdown lists held tasks
                thread.join()
            self._shutdown(workers, completer)
            scheduler.join(timeout=5)

    def _seed_pace(self) -> None:
        """Start from how long this database's recent attempts took, per worker and action."""
        if not self.pace.adaptive:
            return
        try:
            recent = self.db.recent_durations()
        except StaskError as err:  # a cold start: the runner learns as it goes
            log.warning("could not read recent task durations: %s", err)
            return
        self.pace.seed(
            (action_key(identifier, action), seconds, seen)
            for identifier, action, seconds, seen in recent
        )

    def _fetch(self, identifiers: list[str], lane: int) -> None:
        """One lane of turns: record what finished, claim what the slots will take. Lane 0
        also checks now and then that this process knows every claim the database says it
        holds."""
        wake = self._wakes[lane]
        wait = MIN_POLL_SECONDS
        failures = 0
        next_reconcile = time.monotonic() + self.app.settings.lease_seconds
        while not self.stopping:
            if not self._lease_held():
                wake.wait(min(self.options.poll_seconds, 0.5))
                wake.clear()
                continue
            want, starting, ahead = self._size_turn(lane)
            claimed: list[Task] = []
            if want > 0:
                # Outcomes waiting to be recorded go in the claim's transaction.
                batch = self._take_done()
                try:
                    claimed = self._turn(identifiers, want, starting, ahead, batch)
                    failures = 0
                except Exception as err:
                    if refused_value(err):  # a value in the batch the database refused
                        log.warning("recording %d outcomes failed: %s", len(batch), err)
                        self._record_one_by_one(batch)
                        continue
                    self._unrecorded(batch)
                    failures += 1
                    backoff = min(ERROR_BACKOFF_MAX_SECONDS, 0.5 * 2**failures)
                    log.warning("claim failed (retrying in %.1f s): %s", backoff, err)
                    wake.wait(backoff)
                    wake.clear()
                    # The claim may have committed before the connection broke.
                    self._reconcile()
                    continue
            self._claimed_nothing = want > 0 and not claimed
            if want > 0:
                self._backlog = len(claimed) == want
            if claimed:
                wait = MIN_POLL_SECONDS
                if len(claimed) == want:
                    continue  # more may be due right now
            elif want > 0:
                wait = min(wait * 2, self.options.poll_seconds)
            wake.wait(wait if want > 0 else self.options.poll_seconds)
            wake.clear()
            if lane == 0 and time.monotonic() >= next_reconcile:
                self._reconcile()
                next_reconcile = time.monotonic() + self.app.settings.lease_seconds

    def _turn(
        self,
        identifiers: list[str],
        want: int,
        starting: int,
        ahead: Ahead | None,
        batch: list[Finished],
    ) -> list[Task]:
        """Record ``batch`` and claim ``want`` tasks in one turn; the turn's reservation (see
        ``_size_turn``) ends here exactly once, whatever the database does."""
        reserved = want
        try:
            finished, logs = _to_record(batch)
            began = time.monotonic()
            claimed, accepted = self.db.record_and_claim(
                self.node_id,
                identifiers,
                want,
                start=starting,
                queues=self.options.queues or None,
                ahead=ahead,
                finished=finished,
                logs=logs,
            )
            self.pace.turn_took(time.monotonic() - began)
            reserved = 0
            self._take_in(claimed, want)
        finally:
            if reserved:
                self._take_in([], reserved)
        self._recorded(batch, accepted)
        return claimed

    def _size_turn(self, lane: int = 0) -> tuple[int, int, Ahead | None]:
        """How many tasks the next turn of ``lane`` claims (reserved until ``_take_in``; 0: no
        turn now), how many of them start with it, and what it may claim beyond the free
        slots (None: anything, the prefetch is fixed)."""
        concurrency = self.options.concurrency
        pace = self.pace
        short = pace.short_actions() if pace.adaptive else []
        quick = set(short)
        with self._lock:
            busy = self._in_hand()
            if lane and not self._second_turn(busy):
                return 0, 0, None
            # What is in hand finishes sooner than a turn returns: wait for it (briefly), so
            # the turn claims a full batch instead of the few slots free this instant.
            pause = 0.0 if self._turns else pace.drain_wait(busy, concurrency)
            if pause > 0:
                self._lock.wait_for(lambda: self.stopping or not self._in_hand(), pause)
                busy = self._in_hand()
            if self._reconciling:
                return 0, 0, None
            busy += self._inflight  # what the turns in flight bring back fills slots too
            free = max(0, concurrency - busy)
            if pace.adaptive:
                # Only as many ahead as the slots not stuck on long tasks finish in a turn.
                stuck = sum(1 for key in self._busy.values() if key not in quick)
                ahead = pace.prefetch(concurrency - stuck)
            else:
                ahead = pace.prefetch()
            # Each turn in flight holds its own prefetch; a turn claims at most the slots and
            # one prefetch.
            want = min(concurrency + ahead, concurrency + (self._turns + 1) * ahead - busy)
            if want <= 0:
                return 0, 0, None
            self._turns += 1
            self._inflight += want
        # Beyond the free slots, only actions known to finish within a turn (pace.py).
        beyond = Ahead(free, tuple(short)) if pace.adaptive else None
        # Tasks for the slots free now, and for those that free up within a turn, start with
        # the claim; the rest are prefetched, not started (pace.py).
        return want, pace.starting(free, want, concurrency), beyond

    def _second_turn(self, in_hand: int) -> bool:
        """Whether a second turn goes out now, beside the one in flight (call with the lock
        held): only while tasks are due (the last turn came back full) and the tasks in hand
        run out before a turn comes back, so the turn's latency, not the work, sets the pace.
        """
        attempt, turn = self.pace.attempt_seconds, self.pace.turn_seconds
        if self._turns != 1 or not self._backlog or attempt is None or turn is None:
            return False
        return in_hand * attempt < turn * self.options.concurrency

    def _in_hand(self) -> int:
        """Tasks claimed and not yet finished here (call with the lock held)."""
        return len(self._ready) + len(self._running)

    def _take_in(self, claimed: list[Task], reserved: int) -> None:
        """Hand a turn's claimed tasks to the worker threads and end its reservation."""
        at = time.monotonic()
        with self._lock:
            self._held.update((task.id, task.claim) for task in claimed)
            self._claimed_at.update((task.id, at) for task in claimed)
            self._ready.extend(claimed)
            self._turns -= 1
            self._inflight -= reserved
            self._lock.notify_all()  # a reconcile waits for the turns in flight
            self._has_work.notify(len(claimed))

    def _lease_held(self) -> bool:
        """False while no heartbeat landed for most of the lease (the database is away, or the
        heartbeat hangs in it): then what we hold is given up, once, and nothing is claimed."""
        if self.liveness.healthy:
            self._lost = False
            return True
        with self._lock:  # once, whichever lane notices first
            first, self._lost = not self._lost, True
        if first:
            self._on_lost()
        return False

    def _next(self) -> tuple[Task, float] | None:
        """The next task in hand and how long ago it was claimed (None: stopping)."""
        with self._lock:
            while not self._ready and not self.stopping:
                self._has_work.wait()
            if self.stopping or not self._ready:
                return None
            task = self._ready.popleft()
            claimed_at = self._claimed_at.pop(task.id, None)
            # Refill before the buffer runs dry, in batches rather than one claim per task.
            refill = len(self._ready) <= self.pace.prefetch() // 2
        if refill:
            self._wake_all()
        return task, 0.0 if claimed_at is None else time.monotonic() - claimed_at

    def _work(self) -> None:
        while (taken := self._next()) is not None:
            task, waited = taken

            def started(context: TaskContext, task_id: int = task.id) -> None:
                with self._lock:
                    self._running[task_id] = context

            finished = self._run_one(task, waited, started)
            with self._lock:
                self._running.pop(task.id, None)
                given_up = task.id in self._given_up
                self._given_up.discard(task.id)
                if finished is None or given_up:
                    self._held.pop(task.id, None)
                else:
                    self._done.append(finished)
                    if len(self._done) >= FLUSH_MAX:
                        self._flush_now.set()
                self._lock.notify_all()
            if given_up:  # its claim goes back now that nothing runs it here
                self._release([task.claim], "Released: its runner lost its lease while running it")
            self._wake_all()

    def _run_one(
        self, task: Task, waited: float, on_start: Callable[[TaskContext], None]
    ) -> Finished | None:
        """One task's attempt, started first if it was prefetched. None: it was lost (its
        claim was cancelled or rescued before the start). Whatever goes wrong is recorded as
        the attempt's failure: no exception leaves, so the thread goes on."""
        if task.started_at is not None and waited > self.liveness.lease_seconds * STALE_FRACTION:
            # Started by its claim, but it waited (this process was starved): its lease may
            # have run out meanwhile and the task been rescued. Check the claim before running.
            try:
                held = self.db.cancel_flag(task.claim) is not None
            except StaskError as err:
                log.warning("task %s: could not check its claim: %s", task.id, err)
                held = False
            if not held:
                log.warning("task %s: its claim was taken back while it waited", task.id)
                return None
        try:
            begun = self.executor.begin(task)
        except StaskError as err:  # its start could not be recorded: it did not run
            log.warning("task %s: could not start: %s", task.id, err)
            self._release([task.claim], "Released: its start could not be recorded")
            return None
        if begun is None:
            log.info("task %s was cancelled or taken back before it started", task.id)
            return None
        began = time.monotonic()
        key = action_key(task.identifier, task.action)
        with self._lock:
            self._busy[task.id] = key
        try:
            return self.executor.execute(begun, on_start=on_start)
        except BaseException as exc:  # pragma: no cover - execute records every failure
            log.exception("task %s: runner error", task.id)
            return Finished(begun, unrecordable(exc), [])
        finally:
            self.pace.attempt_took(time.monotonic() - began, key)
            with self._lock:
                self._busy.pop(task.id, None)

    def _complete(self) -> None:
        """Record outcomes the fetcher did not take along with a claim (it is idle or full)."""
        failures = 0
        while True:
            self._flush_now.wait(FLUSH_INTERVAL_SECONDS)
            self._flush_now.clear()
            batch = self._take_done()
            if batch:
                try:
                    accepted = self.db.finish_many(*_to_record(batch))
                    self._recorded(batch, accepted)
                    failures = 0
                except Exception as err:
                    if refused_value(err):  # a value in the batch the database refused
                        log.warning("recording %d outcomes failed: %s", len(batch), err)
                        self._record_one_by_one(batch)
                        continue
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

    def _record_one_by_one(self, batch: list[Finished]) -> None:
        """A batch failed on a value, not on the database: record each outcome on its own, and
        the one that cannot be written as failed with the reason, so no other task waits."""
        for item in batch:
            try:
                accepted = self.db.finish_many(*_to_record([item]))
            except Exception as err:
                if not refused_value(err):
                    log.warning("task %s: outcome not recorded yet: %s", item.task.id, err)
                    self._unrecorded([item])
                    continue
                log.warning("task %s: its outcome cannot be stored: %s", item.task.id, err)
                why = Finished(item.task, unrecordable(err), [])
                try:
                    accepted = self.db.finish_many(*_to_record([why]))
                except Exception as again:
                    log.warning("task %s: outcome not recorded yet: %s", item.task.id, again)
                    self._unrecorded([why])
                    continue
            self._recorded([item], accepted)

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
            claims = [item.task.claim for item in batch if item.task.id in suspects]
            try:
                earlier = self.db.final_under(claims)
            except StaskError as err:
                log.debug("could not check refused finishes: %s", err)
                earlier = set()
            accepted = accepted | earlier
            refused = [task_id for task_id in refused if task_id not in earlier]
        with self._lock:
            for item in batch:
                self._held.pop(item.task.id, None)
            self.completed += len(accepted)
        if refused:
            log.warning("finish refused for tasks %s: their claims no longer hold them", refused)

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
        with self._lock:  # a turn in flight holds claims this process does not know yet
            self._reconciling = True
            self._lock.wait_for(lambda: not self._turns)
        try:
            in_database = self.db.running_claims(self.node_id)
        except StaskError as err:
            log.warning("could not check held tasks: %s", err)
            return
        finally:
            with self._lock:
                self._reconciling = False
        with self._lock:
            unknown = [claim for claim in in_database if claim.id not in self._held]
        if unknown:
            ids = [claim.id for claim in unknown]
            log.warning("tasks %s were claimed by a claim that seemed to fail; releasing", ids)
            self._release(unknown, "Released: claimed while the database connection broke")

    # -- shutdown ------------------------------------------------------------------------------

    def _shutdown(self, workers: list[threading.Thread], completer: threading.Thread) -> None:
        self.request_stop()
        with self._lock:
            prefetched = [task.claim for task in self._ready]
            self._ready.clear()
        self._release(prefetched, "Released: its runner stopped before starting it")
        deadline = time.monotonic() + self.options.grace_seconds
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            unfinished = [self._held[i] for i in self._running if i in self._held]
            for context in self._running.values():
                context.abandon()
        self._workers_done.set()
        self._flush_now.set()
        completer.join(timeout=max(5.0, self.options.grace_seconds))
        # Outcomes are recorded now, so whatever the database still says this node holds is
        # unfinished: also a task whose thread gave up early (its lease looked lost) or one
        # this process lost track of. Releasing them here beats waiting out the lease.
        try:
            unfinished = sorted({*unfinished, *self.db.running_claims(self.node_id)})
        except StaskError as err:
            log.warning("could not list held tasks at shutdown: %s", err)
        self._release(unfinished, "Released: its runner shut down before it finished")
        if self.listener is not None:
            self.listener.stop()
        self.liveness.stop()
        self.db.close()
        log.info("runner %s stopped: %d tasks recorded", self.node_id, self.completed)

    def _release(self, claims: list[Claim], message: str) -> None:
        if not claims:
            return
        try:
            released = self.db.release(claims, message)
            log.info("released %d task(s) back to the queue", len(released))
        except StaskError as err:  # the rescuer requeues them after the lease instead
            log.warning("could not release %s: %s", [claim.id for claim in claims], err)


def _to_record(batch: list[Finished]) -> tuple[list[tuple[Claim, Outcome]], list[JSONDict]]:
    """The outcomes and log lines of a batch, as the store records them."""
    return [(item.task.claim, item.outcome) for item in batch], [
        entry for item in batch for entry in item.logs
    ]
