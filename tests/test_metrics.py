"""The Prometheus exposition, parsed back and checked against tasks of known outcomes."""

from __future__ import annotations

import datetime as dt

from prometheus_client.parser import text_string_to_metric_families

from stask import Stask
from stask.core.metrics import render_metrics
from stask.core.stats import Statistics
from stask.db.nodes import NodeInfo, NodeStore
from stask.models import Status, utcnow
from tests.test_stats import ended, insert_tasks, known  # noqa: F401 - the fixture

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(app: Stask) -> Samples:
    body, content_type = render_metrics(app.store, app.settings)
    assert content_type.startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def test_task_counts_durations_and_memory_per_worker(known: Stask) -> None:  # noqa: F811
    samples = scrape(known)
    counts = {
        (dict(labels)["worker"], dict(labels)["status"]): n
        for (name, labels), n in samples.items()
        if name == "stask_tasks_total"
    }
    # All time: the mailer's failure before any summary period counts here too.
    assert counts == {
        ("inventory", "completed"): 18,
        ("inventory", "failed"): 2,
        ("inventory", "cancelled"): 0,
        ("mailer", "completed"): 4,
        ("mailer", "failed"): 1,
        ("mailer", "cancelled"): 1,
    }
    buckets = {
        labels[0][1]: n
        for (name, labels), n in samples.items()
        if name == "stask_task_duration_seconds_bucket" and ("worker", "inventory") in labels
    }
    # Cumulative: 10 tasks of 40 ms, 8 of 200 ms, 2 of 2 s.
    assert buckets["0.025"] == 0
    assert buckets["0.05"] == 10
    assert buckets["0.1"] == 10
    assert buckets["0.25"] == 18
    assert buckets["1.0"] == 18
    assert buckets["2.5"] == 20
    assert buckets["3600.0"] == 20
    assert buckets["+Inf"] == 20
    assert len(buckets) == 19
    worker = {"worker": "inventory"}
    assert value(samples, "stask_task_duration_seconds_sum", **worker) == 6.0
    assert value(samples, "stask_task_duration_seconds_count", **worker) == 20
    mailer = {"worker": "mailer"}
    assert value(samples, "stask_task_duration_seconds_sum", **mailer) == 2.1
    assert value(samples, "stask_task_duration_seconds_count", **mailer) == 5
    assert value(samples, "stask_task_peak_memory_bytes_sum", **worker) == 340 * 1024 * 1024
    assert value(samples, "stask_task_peak_memory_bytes_count", **worker) == 20
    assert value(samples, "stask_task_peak_memory_bytes_count", **mailer) == 5


def test_running_queued_and_live_runners(known: Stask) -> None:  # noqa: F811
    nodes = NodeStore(known.store)
    for name, beat in (("alive", utcnow()), ("silent", utcnow() - dt.timedelta(hours=1))):
        nodes.register(NodeInfo(name, "host", 1, 2, [], "test"), now=beat)
    samples = scrape(known)
    assert value(samples, "stask_tasks_running") == 1
    assert value(samples, "stask_queue_depth") == 2
    assert value(samples, "stask_queue_depth_capped") == 0
    assert value(samples, "stask_runners_live") == 1


def test_an_empty_database(app: Stask) -> None:
    samples = scrape(app)
    assert not [name for name, _ in samples if name == "stask_tasks_total"]
    assert value(samples, "stask_queue_depth") == 0
    assert value(samples, "stask_runners_live") == 0


def test_a_scrape_sees_tasks_that_just_ended(app: Stask) -> None:
    earlier = utcnow() - dt.timedelta(minutes=5)
    insert_tasks(app.store, [ended("mailer", Status.COMPLETED, earlier, 1500)])
    first = scrape(app)  # rolled up
    insert_tasks(app.store, [ended("mailer", Status.FAILED, utcnow(), 20)])  # the live tail
    second = scrape(app)
    mailer = {"worker": "mailer"}
    assert value(first, "stask_tasks_total", status="completed", **mailer) == 1
    assert value(first, "stask_tasks_total", status="failed", **mailer) == 0
    assert value(second, "stask_tasks_total", status="completed", **mailer) == 1
    assert value(second, "stask_tasks_total", status="failed", **mailer) == 1
    assert value(second, "stask_task_duration_seconds_count", **mailer) == 2
    assert value(second, "stask_task_duration_seconds_sum", **mailer) == 1.52
    # Once the tail task is rolled up it is counted once still: a counter never jumps.
    assert Statistics(app.store, app.settings).refresh(utcnow() + dt.timedelta(minutes=1)) == 1
    assert scrape(app) == second
