"""PostgreSQL wake-ups: one NOTIFY per insert batch of due tasks, heard by idle runners.

Sent from application code, never by a per-row trigger (NOTIFY takes a global lock at commit).
A notification can be lost (PgBouncer in transaction mode drops LISTEN), so runners still poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, text

log = logging.getLogger("stask.notify")
CHANNEL = "stask_enqueued"
RECONNECT_MAX_SECONDS = 10.0


class WakeSource(Protocol):
    """Something that wakes an idle runner when another process enqueues: LISTEN on
    PostgreSQL, an inotify watch on SQLite (``stask.db.wakefile``)."""

    listening: threading.Event
    received: int

    def start(self) -> None: ...

    def stop(self) -> None: ...


def announce(conn: Connection) -> None:
    """Queue one notification; PostgreSQL delivers it when (and if) the transaction commits."""
    conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


class Listener:
    """Calls ``on_notify`` for every notification, on its own connection, until ``stop``."""

    def __init__(self, engine: Engine, on_notify: Callable[[], None]) -> None:
        self.engine = engine
        self.on_notify = on_notify
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stask-listen", daemon=True)
        self.listening = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            raw: Any = None
            try:
                raw = self.engine.raw_connection()
                driver = raw.driver_connection
                raw.detach()  # a long-lived LISTEN connection stays out of the pool
                driver.autocommit = True
                driver.execute(f"LISTEN {CHANNEL}")
                self.listening.set()
                backoff = 0.5
                while not self._stop.is_set():
                    for _ in driver.notifies(timeout=1.0):
                        self.received += 1
                        self.on_notify()
            except Exception as err:  # reconnect; polling covers the gap
                self.listening.clear()
                log.warning("LISTEN connection failed (retrying in %.1f s): %s", backoff, err)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)
            finally:
                if raw is not None:
                    try:
                        raw.close()
                    except Exception:  # already broken
                        log.debug("closing a broken LISTEN connection failed", exc_info=True)
