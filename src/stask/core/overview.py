"""What the admin UI's overviews read besides statistics: tasks finished per hour, from the
hourly rollups, and the runner processes with their heartbeats."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from stask.db.nodes import NodeStore
from stask.db.stats import HOUR, hour_floor
from stask.models import JSONDict, utcnow

if TYPE_CHECKING:
    from stask.core.facade import Stask

MAX_HOURS = 24 * 31


def throughput(app: Stask, hours: int = 24, *, now: dt.datetime | None = None) -> list[JSONDict]:
    """One entry per hour of the last ``hours`` (clamped 1-744), oldest first: completed,
    failed and cancelled tasks. Rolls up first, so only the last few seconds can be missing."""
    hours = max(1, min(MAX_HOURS, int(hours)))
    now = now or utcnow()
    app.statistics.refresh(now, max_seconds=1.0)
    first = hour_floor(now) - (hours - 1) * HOUR
    found = app.statistics.stats.hourly(first)
    series = []
    for step in range(hours):
        hour = first + step * HOUR
        totals = found.get(hour)
        series.append(
            {
                "hour": hour.isoformat() + "Z",
                "completed": totals.completed if totals else 0,
                "failed": totals.failed if totals else 0,
                "cancelled": totals.cancelled if totals else 0,
            }
        )
    return series


def runners(app: Stask, *, now: dt.datetime | None = None) -> list[JSONDict]:
    """Every runner process in ``s_nodes``: host, pid, concurrency, queues, version, when it
    started and last heartbeated, and whether that was within the lease."""
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
        }
        for row in NodeStore(app.store).all()
    ]
