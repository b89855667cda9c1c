"""The facade's operations for people and dashboards: accounts, listing, statistics, health,
metrics, bulk actions. ``Stask`` inherits them; ``web`` and ``cli`` reach them through it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from stask.core.redact import Redactor
from stask.errors import InvalidState, NotFound, StaskError, ValidationError
from stask.models import JSONDict, TaskQuery, utcnow

if TYPE_CHECKING:
    from stask.core.accounts import Accounts
    from stask.core.listing import Listing
    from stask.core.stats import Statistics
    from stask.db.store import Store
    from stask.settings import Settings


class Operations:
    settings: Settings

    if TYPE_CHECKING:

        @property
        def store(self) -> Store: ...

    @functools.cached_property
    def redactor(self) -> Redactor:
        return Redactor(self.settings.redact_keys)

    @functools.cached_property
    def accounts(self) -> Accounts:
        from stask.core.accounts import Accounts

        return Accounts(self.store, self.settings)

    @functools.cached_property
    def listing(self) -> Listing:
        from stask.core.listing import Listing

        return Listing(self.store, self.redactor)

    @functools.cached_property
    def statistics(self) -> Statistics:
        from stask.core.stats import Statistics

        return Statistics(self.store, self.settings)

    def metrics(self) -> tuple[bytes, str]:
        """One Prometheus scrape: (body, content type)."""
        from stask.core.metrics import render_metrics

        return render_metrics(self.store, self.settings)

    def health(self) -> JSONDict:
        """Whether the database answers, and how many runners heartbeat within the lease."""
        from stask.errors import StaskError

        try:
            live = self.statistics.stats.live_nodes(self.settings.lease_seconds)
        except StaskError as err:
            return {"database": False, "runners": 0, "message": err.message}
        return {"database": True, "runners": live, "checked_at": utcnow().isoformat() + "Z"}

    def throughput(self, hours: int = 24) -> list[JSONDict]:
        """Tasks completed, failed and cancelled per hour of the last ``hours``, oldest first."""
        from stask.core.overview import throughput

        return throughput(self, hours)  # type: ignore[arg-type]

    def runners(self) -> list[JSONDict]:
        """Every runner process with its host, pid, concurrency, queues and last heartbeat."""
        from stask.core.overview import runners

        return runners(self)  # type: ignore[arg-type]

    def next_runs(self, identifier: str, count: int = 5) -> list[dt.datetime]:
        """When the worker's schedule fires next (naive UTC), at most ``count`` times."""
        from stask.core import schedules

        schedule = self.schedule(identifier)  # type: ignore[attr-defined]
        if not schedule.fires:
            return []
        return schedules.next_runs(schedule, utcnow(), max(1, min(count, 100)))

    @functools.cached_property
    def bulk_jobs(self) -> BulkJobs:
        return BulkJobs()

    def bulk(self, action: str, query: TaskQuery, *, started_by: str | None = None) -> str:
        """Start applying ``action`` (cancel, retry, delete) to every task matching ``query``
        on a background thread of this process; the job's id, to follow with ``bulk_job``."""
        if action not in ("cancel", "retry", "delete"):
            raise ValidationError(f"unknown bulk action {action!r} - use cancel, retry or delete")
        method = getattr(self, action)
        return self.bulk_jobs.start(action, started_by, self.listing.ids(query), method)

    def bulk_job(self, job_id: str) -> JSONDict:
        return self.bulk_jobs.get(job_id)

    def process_pending_in_background(
        self, batch_size: int = 100, *, started_by: str | None = None
    ) -> str:
        """Start ``process_pending(batch_size)`` on a background thread of this process (the
        dashboard's "Process pending"); the job's id, to follow with ``bulk_job``. One at a
        time per process: InvalidState while another runs."""
        if not 1 <= batch_size <= 1000:
            raise ValidationError(f"batch_size {batch_size} is not between 1 and 1000")
        process = self.process_pending  # type: ignore[attr-defined]
        return self.bulk_jobs.start_batch(
            "process_pending", started_by, lambda: process(batch_size)
        )


@dataclasses.dataclass
class _Job:
    id: str
    action: str
    started_by: str | None
    started_at: dt.datetime
    status: str = "running"
    done: int = 0
    refused: int = 0
    finished_at: dt.datetime | None = None
    error: str | None = None


class BulkJobs:
    """Bulk actions in progress or done in this process (the last hundred are kept)."""

    KEEP = 100

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.RLock()

    def start(
        self,
        action: str,
        started_by: str | None,
        chunks: Iterator[list[int]],
        method: Callable[[int], Any],
        work: Callable[[], int] | None = None,
    ) -> str:
        job = _Job(secrets.token_hex(8), action, started_by, utcnow())
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.KEEP:
                del self._jobs[next(iter(self._jobs))]
        threading.Thread(
            target=self._run,
            args=(job, chunks, method, work),
            name=f"stask-bulk-{job.id}",
            daemon=True,
        ).start()
        return job.id

    def start_batch(self, action: str, started_by: str | None, work: Callable[[], int]) -> str:
        """Run ``work`` (which answers how many tasks it handled) as a job; only one job of
        ``action`` runs at a time."""
        with self._lock:  # held through start(): two presses at once cannot both pass
            if any(j.action == action and j.status == "running" for j in self._jobs.values()):
                raise InvalidState(f"a {action} job is already running in this process - wait")
            return self.start(action, started_by, iter(()), lambda _task_id: None, work)

    @staticmethod
    def _run(
        job: _Job,
        chunks: Iterator[list[int]],
        method: Callable[[int], Any],
        work: Callable[[], int] | None = None,
    ) -> None:
        try:
            if work is not None:
                job.done = work()
            for chunk in chunks:
                for task_id in chunk:
                    try:
                        method(task_id)
                        job.done += 1
                    except StaskError:
                        job.refused += 1  # gone meanwhile, or no longer in a fitting state
            job.status = "completed"
        except Exception as err:
            job.status, job.error = "failed", str(err)[:500]
        job.finished_at = utcnow()

    def get(self, job_id: str) -> JSONDict:
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no bulk job has id {job_id!r} in this process")
        data = dataclasses.asdict(job)
        for key in ("started_at", "finished_at"):
            data[key] = data[key].isoformat() + "Z" if data[key] else None
        return data
