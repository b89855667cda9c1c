"""Performance statistics (the seed's summary, per-worker figures and alerts) from the hourly
rollups in ``s_stats`` plus the tasks finished since the last roll-up; never a scan of s_tasks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from stask.db.stats import DURATION_BOUNDS_MS, HOUR, StatsStore, Totals, hour_floor
from stask.db.store import Store
from stask.models import JSONDict, utcnow
from stask.settings import Settings

__all__ = ["DURATION_BOUNDS_MS", "Statistics", "duration_quantile_ms"]

MAX_HOURS = 24 * 365
MIB = 1024 * 1024
# A read rolls up at most about this long: after an upgrade the first roll-up has the whole
# history to add, which the runner's own refresh (no budget) works through meanwhile.
READ_ROLL_UP_SECONDS = 1.0


def clamp_hours(hours: int) -> int:
    """A period of 1 to 8760 hours (a year)."""
    return max(1, min(MAX_HOURS, int(hours)))


def duration_quantile_ms(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of the durations counted in ``buckets``, in ms (None: none).

    As Prometheus' histogram_quantile: find the bucket holding rank ``q * count`` and
    interpolate linearly between its bounds (the first bucket starts at 0). A rank in the
    bucket above the last bound answers that bound, the least those tasks took.
    """
    count = sum(buckets)
    if count == 0:
        return None
    rank = q * count
    below = 0
    for index, in_bucket in enumerate(buckets):
        if in_bucket and below + in_bucket >= rank:
            if index == len(DURATION_BOUNDS_MS):
                return float(DURATION_BOUNDS_MS[-1])
            lower = DURATION_BOUNDS_MS[index - 1] if index else 0
            upper = DURATION_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - below) / in_bucket
        below += in_bucket
    return float(DURATION_BOUNDS_MS[-1])  # pragma: no cover - rank <= count always lands


def iso_z(moment: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``, to the second (stask stores naive UTC)."""
    return None if moment is None else moment.replace(microsecond=0).isoformat() + "Z"


def success_rate(totals: Totals) -> float | None:
    """Percent of completed among completed and failed tasks (a cancel is neither)."""
    decided = totals.completed + totals.failed
    return 100 * totals.completed / decided if decided else None


def average_duration(totals: Totals) -> float | None:
    """Mean duration in seconds of the tasks that recorded one."""
    return totals.duration_ms_sum / totals.duration_count / 1000 if totals.duration_count else None


def average_memory(totals: Totals) -> int | None:
    """Mean peak memory in bytes of the tasks that recorded one."""
    return totals.memory_sum // totals.memory_count if totals.memory_count else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def performance(totals: Totals) -> JSONDict:
    """Success rate (percent), mean and p95 duration (seconds, 2 decimals) and mean peak
    memory (bytes); None where no task counts."""
    p95 = duration_quantile_ms(totals.buckets, 0.95)
    return {
        "success_rate": _rounded(success_rate(totals)),
        "average_duration": _rounded(average_duration(totals)),
        "p95_duration": None if p95 is None else round(p95 / 1000, 2),
        "average_memory": average_memory(totals),
    }


def overall(found: Mapping[str, Totals]) -> Totals:
    """The sum over every worker."""
    summed = Totals()
    for totals in found.values():
        summed = summed.plus(totals)
    return summed


class Statistics:
    """Summaries, per-worker figures, alerts and the roll-up that keeps them cheap.

    Every read rolls up first (``refresh``), so the live tail it adds is at most
    ``stats_grace_seconds`` of finishes plus what ended since the previous read.
    """

    def __init__(self, store: Store, settings: Settings) -> None:
        self.stats = StatsStore(store)
        self.settings = settings

    def refresh(self, now: dt.datetime | None = None, *, max_seconds: float | None = None) -> int:
        """Roll up the tasks that finished up to ``stats_grace_seconds`` ago (later finishes may
        not have committed yet); the number added. Two small reads when nothing is new."""
        until = (now or utcnow()) - dt.timedelta(seconds=self.settings.stats_grace_seconds)
        return self.stats.roll_up(until, max_seconds=max_seconds)

    def _period(self, hours: int, now: dt.datetime | None) -> tuple[int, dt.datetime, dt.datetime]:
        hours = clamp_hours(hours)
        now = now or utcnow()
        self.refresh(now, max_seconds=READ_ROLL_UP_SECONDS)
        return hours, hour_floor(now) - hours * HOUR, now

    def report(self, hours: int = 24, *, now: dt.datetime | None = None) -> JSONDict:
        """``summary``, ``workers`` and ``alerts`` of one period from one read (the statistics
        page shows all three: three reads of a month's hourly rows cost ~3x)."""
        hours, start, now = self._period(hours, now)
        found = self.stats.finished_since(start)
        return {
            "summary": self._summary(found, hours, start, now),
            "workers": _per_worker(found),
            "alerts": self._alerts(found),
        }

    def summary(self, hours: int = 24, *, now: dt.datetime | None = None) -> JSONDict:
        """The seed's ``/performance/summary``: tasks that finished since the start of the UTC
        hour ``hours`` before now (``hours`` is clamped to 1..8760), those running and queued
        now, and their performance. ``queued`` counts at most 10,000 (``queued_capped``)."""
        hours, start, now = self._period(hours, now)
        return self._summary(self.stats.finished_since(start), hours, start, now)

    def _summary(
        self, found: dict[str, Totals], hours: int, start: dt.datetime, now: dt.datetime
    ) -> JSONDict:
        totals = overall(found)
        running = self.stats.running()
        queued, capped = self.stats.queued()
        return {
            "period": {"hours": hours, "from": iso_z(start), "to": iso_z(now)},
            "tasks": {
                "total": totals.finished + running + queued,
                "completed": totals.completed,
                "failed": totals.failed,
                "cancelled": totals.cancelled,
                "running": running,
                "queued": queued,
                "queued_capped": capped,
            },
            "performance": performance(totals),
        }

    def workers(self, hours: int = 24, *, now: dt.datetime | None = None) -> dict[str, JSONDict]:
        """The seed's ``/performance/workers``: per worker that finished a task in the period
        (as in ``summary``), its counts, performance and last finish, by identifier."""
        _, start, _ = self._period(hours, now)
        return _per_worker(self.stats.finished_since(start))

    def alerts(self, hours: int = 24, *, now: dt.datetime | None = None) -> list[JSONDict]:
        """The seed's ``/performance/alerts`` over the period, overall and per worker.

        A warning when the success rate is below ``alert_success_rate``, or the mean duration
        (seconds) or mean peak memory (bytes) is above ``alert_average_duration`` /
        ``alert_average_memory``; critical when it is twice as bad: failures above twice the
        share the threshold allows (95 % -> below 90 %), or a mean above twice the threshold.
        A value equal to its threshold raises nothing. Per-worker alerts carry ``identifier``.
        """
        _, start, _ = self._period(hours, now)
        return self._alerts(self.stats.finished_since(start))

    def _alerts(self, found: dict[str, Totals]) -> list[JSONDict]:
        raised = self._judge(overall(found), None)
        for identifier in sorted(found):
            raised += self._judge(found[identifier], identifier)
        return raised

    def _judge(self, totals: Totals, identifier: str | None) -> list[JSONDict]:
        # Judged on exact values, reported rounded as in the summary.
        rate, duration, memory = (
            success_rate(totals),
            average_duration(totals),
            average_memory(totals),
        )
        s = self.settings
        who = "Task" if identifier is None else f"Worker {identifier}: task"
        raised: list[JSONDict] = []

        def alert(kind: str, critical: bool, message: str, value: float, threshold: float) -> None:
            entry: JSONDict = {
                "type": kind,
                "severity": "critical" if critical else "warning",
                "message": message,
                "value": value,
                "threshold": threshold,
            }
            if identifier is not None:
                entry["identifier"] = identifier
            raised.append(entry)

        if rate is not None and rate < s.alert_success_rate:
            allowed = 100 - s.alert_success_rate
            alert(
                "low_success_rate",
                100 - rate > 2 * allowed,
                f"{who} success rate is below threshold: {round(rate, 2):g}%",
                round(rate, 2),
                s.alert_success_rate,
            )
        if duration is not None and duration > s.alert_average_duration:
            alert(
                "high_average_duration",
                duration > 2 * s.alert_average_duration,
                f"{who} average duration is above threshold: {round(duration, 2):g} s",
                round(duration, 2),
                s.alert_average_duration,
            )
        if memory is not None and memory > s.alert_average_memory:
            alert(
                "high_memory_usage",
                memory > 2 * s.alert_average_memory,
                f"{who} average peak memory is above threshold: {memory / MIB:.1f} MiB",
                memory,
                s.alert_average_memory,
            )
        return raised


def _per_worker(found: Mapping[str, Totals]) -> dict[str, JSONDict]:
    return {
        identifier: {
            "identifier": identifier,
            "total_tasks": totals.finished,
            "completed": totals.completed,
            "failed": totals.failed,
            "cancelled": totals.cancelled,
            **performance(totals),
            "last_execution": iso_z(totals.last_finished_at),
        }
        for identifier, totals in sorted(found.items())
        if totals.finished
    }
