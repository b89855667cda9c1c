"""A process's presence in ``s_nodes``: register, heartbeat on a thread, rescue the dead, leave.

Used by the runner daemon and by cron-mode ``process_pending`` alike, so every process that
holds tasks is covered by a lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from stask.db.nodes import NodeInfo, NodeStore, Rescue
from stask.errors import StaskError

log = logging.getLogger("stask.liveness")


class Liveness:
    """Keeps one node alive in the database while it holds tasks.

    ``on_lost`` is called when heartbeats have failed for most of the lease: the node must
    assume its tasks are being rescued elsewhere and stop them. ``on_tick`` runs after every
    heartbeat (the runner fires due schedules there).
    """

    def __init__(
        self,
        nodes: NodeStore,
        node_id: str,
        *,
        lease_seconds: float,
        heartbeat_seconds: float,
        concurrency: int = 1,
        queues: list[str] | None = None,
        on_rescue: Callable[[Rescue], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        from stask import __version__

        self.nodes = nodes
        self.info = NodeInfo(
            id=node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=concurrency,
            queues=queues or [],
            version=__version__,
        )
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = min(heartbeat_seconds, lease_seconds / 3)
        self.on_rescue = on_rescue
        self.on_lost = on_lost
        self.on_tick = on_tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat = time.monotonic()

    def start(self) -> None:
        self.nodes.register(self.info)
        self.last_beat = time.monotonic()
        self.rescue()
        self._thread = threading.Thread(target=self._loop, name="stask-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, *, remove: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if remove:
            try:
                self.nodes.remove(self.info.id)
            except StaskError as err:
                log.warning("could not remove node %s: %s", self.info.id, err)

    def rescue(self) -> None:
        try:
            rescued = self.nodes.rescue_stale(self.lease_seconds)
        except StaskError as err:
            log.warning("rescue pass failed: %s", err)
            return
        if rescued.requeued or rescued.failed:
            log.warning(
                "rescued tasks of silent runners %s: requeued %s, failed %s",
                rescued.dead_nodes,
                rescued.requeued,
                rescued.failed,
            )
            if self.on_rescue is not None:
                self.on_rescue(rescued)

    def beat(self) -> None:
        try:
            if not self.nodes.heartbeat(self.info.id):
                log.warning("node %s was declared dead; registering again", self.info.id)
                self.nodes.register(self.info)
            self.last_beat = time.monotonic()
        except StaskError as err:
            silent = time.monotonic() - self.last_beat
            log.warning("heartbeat failed (%.0f s since the last one): %s", silent, err)
            if silent > self.lease_seconds * 0.8 and self.on_lost is not None:
                self.on_lost()

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            self.beat()
            self.rescue()
            self.tick()

    def tick(self) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick()
        except StaskError as err:
            log.warning("periodic work failed: %s", err)
