"""Prometheus exposition of stask's figures, read from the database at scrape time.

Every scrape builds its own registry around one collector: no process-global state, so any
web worker answers the same numbers (they live in the database, not in a process).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from stask.core.stats import READ_ROLL_UP_SECONDS, Statistics
from stask.db.stats import DURATION_BOUNDS_MS
from stask.db.store import Store
from stask.settings import Settings


class StaskCollector(Collector):
    """All-time task counts, durations and memory per worker (rollups plus the live tail),
    and what is running, queued and alive now."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.statistics = Statistics(store, settings)
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        self.statistics.refresh(max_seconds=READ_ROLL_UP_SECONDS)
        reads = self.statistics.stats
        found = reads.finished_since(None)
        tasks = CounterMetricFamily(
            "stask_tasks", "Tasks that ended, by worker and outcome.", labels=["worker", "status"]
        )
        durations = HistogramMetricFamily(
            "stask_task_duration_seconds",
            "How long ended tasks ran, by worker.",
            labels=["worker"],
        )
        memory = SummaryMetricFamily(
            "stask_task_peak_memory_bytes",
            "Peak memory of ended tasks, by worker.",
            labels=["worker"],
        )
        for worker, totals in sorted(found.items()):
            for status, count in (
                ("completed", totals.completed),
                ("failed", totals.failed),
                ("cancelled", totals.cancelled),
            ):
                tasks.add_metric([worker, status], count)
            cumulative, buckets = 0, []
            for bound, count in zip(DURATION_BOUNDS_MS, totals.buckets, strict=False):
                cumulative += count
                buckets.append((str(bound / 1000), float(cumulative)))  # as Go: 1.0
            buckets.append(("+Inf", float(totals.duration_count)))
            durations.add_metric([worker], buckets, totals.duration_ms_sum / 1000)
            memory.add_metric([worker], totals.memory_count, totals.memory_sum)
        yield tasks
        yield durations
        yield memory
        queued, capped = reads.queued()
        yield _gauge("stask_tasks_running", "Tasks running now.", reads.running())
        yield _gauge(
            "stask_queue_depth", "Tasks waiting in the queue (counted up to a cap).", queued
        )
        yield _gauge("stask_queue_depth_capped", "1 if the queue holds more than counted.", capped)
        live = reads.live_nodes(self.settings.lease_seconds)
        yield _gauge("stask_runners_live", "Runner processes heartbeating within the lease.", live)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


def render_metrics(store: Store, settings: Settings) -> tuple[bytes, str]:
    """The exposition text of one scrape and its content type.

    The text format 0.0.4, which every Prometheus and agent reads (every name here is a
    classic one, so the newer 1.0.0 label would say nothing more).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StaskCollector(store, settings))
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
