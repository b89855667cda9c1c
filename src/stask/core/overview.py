"""What the admin UI's overviews read besides statistics: tasks finished per hour, from the
hourly rollups, and the runner processes with their heartbeats."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from stask.db.nodes import NodeStore
from stask.db.stats import HOUR, Totals, hour_floor
from stask.models import JSONDict, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask

MAX_HOURS = 24 * 31


# Up to this many hours a series has a point per hour; past it, a point per day (a month of
# hourly points made the statistics page 185 KB and ~0.3 s to render, bench.web_routes).
HOURLY_UP_TO = 48


def throughput(app: Stask, hours: int = 24, *, now: dt.datetime | None = None) -> list[JSONDict]:
    """The last ``hours`` (clamped 1-744), oldest first: completed, failed and cancelled tasks
    per hour, or per 24 hours past ``HOURLY_UP_TO`` (``hour`` is each point's start). Rolls up
    first, so only the last few seconds can be missing."""
    hours = max(1, min(MAX_HOURS, int(hours)))
    now = now or utcnow()
    app.statistics.refresh(now, max_seconds=1.0)
    first = hour_floor(now) - (hours - 1) * HOUR
    reads = app.statistics.stats
    found = reads.hourly(first)
    # The live tail (finished within the roll-up's grace, ~30 s): in the current hour, else a
    # chart under "5 completed" stays flat for its first half minute.
    watermark = reads.watermark()
    if watermark is not None:
        current = hour_floor(now)
        for tail in reads.tail(max(watermark, first)).values():
            found[current] = found.get(current, Totals()).plus(tail)
    width = 1 if hours <= HOURLY_UP_TO else 24
    series = []
    for start in range(0, hours, width):
        counts = {"completed": 0, "failed": 0, "cancelled": 0}
        for step in range(start, min(start + width, hours)):
            totals = found.get(first + step * HOUR)
            if totals is not None:
                counts["completed"] += totals.completed
                counts["failed"] += totals.failed
                counts["cancelled"] += totals.cancelled
        series.append({"hour": (first + start * HOUR).isoformat() + "Z", **counts})
    return series


def runners(app: Stask, *, now: dt.datetime | None = None) -> list[JSONDict]:
    """Every runner process in ``s_nodes``: host, pid, concurrency, queues, version, when it
    started and last heartbeated, whether that was within the lease, and what it learned
    about its tasks."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=app.settings.lease_seconds)
    return [
        {
            "id": row["id"],
            "host": row["host"],
            "pid": row["pid"],
            "concurrency": row["concurrency"],
            "queues": list(row["queues"] or []),
            "version": row["version"],
            "started_at": row["started_at"],
            "heartbeat_at": row["heartbeat_at"],
            "live": row["heartbeat_at"] >= cutoff,
            # prefetch, turn_ms and the learned ms per action (runner/pace.py); None before
            # its first heartbeat.
            "pace": row["pace"],
        }
        for row in NodeStore(app.store).all()
    ]
