"""Running tasks against the database: ``HotPath``, the runner daemon's one way to it (claims,
starts, records, heartbeats on a pool of their own), and cron mode's ``process_pending``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stask.core import executor as executor_module
from stask.core.executor import Executor
from stask.core.liveness import Liveness
from stask.db.dialects import hot_path_store
from stask.db.nodes import NodeStore
from stask.errors import ValidationError
from stask.models import JSONDict, Rescue

if TYPE_CHECKING:
    from stask.core.facade import Stask


class HotPath:
    """What a runner's loops do to the database, bound once to the store that does it.

    Claims, starts, records and heartbeats go through a pool of their own (``hot_path_store``:
    no pre-ping on servers); waking up and firing schedules use the app's store.
    """

    def __init__(self, app: Stask) -> None:
        self.app = app
        self.store = hot_path_store(app.store)
        self.nodes = NodeStore(self.store)
        claims = self.store.claims
        self.record_and_claim = claims.record_and_claim
        self.finish_many = claims.finish_many
        self.cancel_flag = claims.cancel_flag
        self.final_under = self.store.task_reads.final_under
        self.running_claims = self.store.task_reads.running_claims
        self.recent_durations = self.store.task_reads.recent_durations
        self.release = self.nodes.release
        self.maintain = self.store.housekeeping.maintain
        self.wake_source = app.store.wake_source
        # Turns a runner keeps in flight: a server works on one while the answer of the other
        # travels and is read; SQLite's writers take turns, so a second would only wait.
        self.lanes = 1 if self.store.dialect == "sqlite" else 2

    def executor(self, node_id: str) -> Executor:
        """An executor whose starts, progress and log lines use this pool."""
        return Executor(self.app, node_id, self.store)

    def liveness(
        self,
        node_id: str,
        *,
        concurrency: int,
        queues: list[str],
        on_rescue: Callable[[Rescue], None],
        on_lost: Callable[[], None],
        report: Callable[[], JSONDict] | None = None,
    ) -> Liveness:
        settings = self.app.settings
        return Liveness(
            self.nodes,
            node_id,
            lease_seconds=settings.lease_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            concurrency=concurrency,
            queues=queues,
            on_rescue=on_rescue,
            on_lost=on_lost,
            report=report,
        )

    def close(self) -> None:
        """Close this pool (the app's own store stays open)."""
        if self.store is not self.app.store:
            self.store.dispose()


def process_pending(app: Stask, batch_size: int) -> int:
    """Fire due schedule slots, then run up to ``batch_size`` due tasks in this process, one
    claim at a time (see ``Stask.process_pending``)."""
    if batch_size < 1:
        raise ValidationError(f"batch size must be at least 1, got {batch_size}")
    identifiers = list(app.registry.classes())
    app.enqueue_due_schedules()  # each slot once, however many hosts run this at once
    executor = Executor(app, app.node_id)
    nodes = NodeStore(app.store)
    liveness = Liveness(
        nodes,
        app.node_id,
        lease_seconds=app.settings.lease_seconds,
        heartbeat_seconds=app.settings.heartbeat_seconds,
        on_tick=app.store.housekeeping.maintain,  # a cron-only host resets SQLite's WAL here
    )
    liveness.start()
    done = 0
    try:
        with executor_module.ctrl_c_stops_the_batch():
            while done < batch_size:
                claimed = app.store.claims.claim(app.node_id, identifiers, 1)
                if not claimed:
                    break
                try:
                    executor.run(claimed[0])
                except KeyboardInterrupt:  # the person's Ctrl-C, not the task's own
                    nodes.release([claimed[0].claim], "Released: run-pending was interrupted")
                    raise
                done += 1
    finally:
        liveness.stop()
    liveness.tick()  # once per batch too, however short (failures are logged)
    return done
