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

from stask.db.nodes import NodeStore
from stask.errors import StaskError
from stask.models import JSONDict, NodeInfo, Rescue

log = logging.getLogger("stask.liveness")


class Liveness:
    """Keeps one node alive in the database while it holds tasks.

    ``on_lost`` is called when heartbeats have failed for most of the lease, and when the node
    finds itself declared dead (before it registers again): it must assume its tasks are being
    rescued elsewhere and give them up. ``on_tick`` runs after every heartbeat; it must not run
    user code (worker ``__init__`` or ``settings()``), which can hang or raise: the runner runs
    that on a thread of its own.

    Nothing on this thread may end it: every error is logged and the next beat tries again.
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
        report: Callable[[], JSONDict] | None = None,
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
        self.report = report  # what the runner learned, written with each heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_beat = time.monotonic()
        self._lost = False

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

    @property
    def healthy(self) -> bool:
        """Whether the last heartbeat is recent enough that no one may rescue our tasks yet."""
        return time.monotonic() - self.last_beat <= self.lease_seconds * LOST_FRACTION

    def rescue(self) -> None:
        try:
            rescued = self.nodes.rescue_stale(self.lease_seconds)
        except Exception as err:
            log.warning("rescue pass failed: %s", _describe(err))
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
            if not self.nodes.heartbeat(self.info.id, pace=self._report()):
                log.warning(
                    "node %s was declared dead; giving up what it held and registering again",
                    self.info.id,
                )
                self._give_up()
                self.nodes.register(self.info)
            self.last_beat = time.monotonic()
            self._lost = False
        except Exception as err:
            silent = time.monotonic() - self.last_beat
            log.warning("heartbeat failed (%.0f s since the last one): %s", silent, _describe(err))
            if not self.healthy and not self._lost:
                self._lost = True
                self._give_up()

    def _report(self) -> JSONDict | None:
        """The runner's report; a failing one is left out, never the heartbeat."""
        if self.report is None:
            return None
        try:
            return self.report()
        except Exception as err:
            log.warning("runner report failed: %s", _describe(err))
            return None

    def _give_up(self) -> None:
        if self.on_lost is None:
            return
        try:
            self.on_lost()
        except Exception:
            log.exception("giving up the tasks of node %s failed", self.info.id)

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self.beat()
                self.rescue()
                self.tick()
            except BaseException:  # pragma: no cover - each step catches its own errors
                log.exception("heartbeat thread error; going on")

    def tick(self) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick()
        except Exception as err:
            log.warning("periodic work failed: %s", _describe(err))


# Past this fraction of the lease without a heartbeat, the node gives its tasks up: other
# nodes may rescue them once the whole lease has passed.
LOST_FRACTION = 0.8


def _describe(err: Exception) -> str:
    return err.message if isinstance(err, StaskError) else f"{type(err).__name__}: {err}"
