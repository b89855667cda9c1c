"""The raw SQL baseline: a minimal one-table queue driven straight through the driver.

Each worker claims one task, "runs" it, marks it done and commits, one task per transaction,
durably: PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` (psycopg 3, synchronous_commit as
the server has it), SQLite ``BEGIN IMMEDIATE`` (sqlite3, WAL, synchronous=FULL). Concurrency
is threads, each with its own connection. ``python -m bench.raw idle ...`` is its idle poller;
``python -m bench.raw consume ... --stamp-file F`` the same poller as a consumer process whose
"task" appends ``<id> <time.time()>`` to F (its start-up and pickup from another process).
"""

from __future__ import annotations

import argparse
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Database, analyze, latency_summary, wait_until

BATCH = 1000
DEFAULT_POLL_SECONDS = 0.05


def _noop(_task_id: int) -> None:
    return None


class RawQueue:
    """One connection's view of the raw queue; ``calls`` counts every driver call it makes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.calls = 0
        self.statements = 0
        self.commits = 0
        if db.dialect == "sqlite":
            self.conn: Any = sqlite3.connect(
                db.dsn, isolation_level=None, timeout=30, check_same_thread=False
            )
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
        else:
            self.conn = psycopg.connect(db.dsn)

    @property
    def sqlite(self) -> bool:
        return self.db.dialect == "sqlite"

    def close(self) -> None:
        self.conn.close()

    def _sql(self, sqlite_sql: str, postgres_sql: str, params: tuple[Any, ...] = ()) -> Any:
        self.calls += 1
        self.statements += 1
        if self.sqlite:
            return self.conn.execute(sqlite_sql, params)
        return self.conn.execute(postgres_sql, params)

    def begin(self) -> None:
        # psycopg opens the transaction itself (a BEGIN round trip) on the first statement.
        self.calls += 1
        if self.sqlite:
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.calls += 1
        self.commits += 1
        if self.sqlite:
            self.conn.execute("COMMIT")
        else:
            self.conn.commit()

    def create_schema(self) -> None:
        if self.sqlite:
            self.conn.executescript(
                "CREATE TABLE raw_jobs (id INTEGER PRIMARY KEY, status INTEGER NOT NULL DEFAULT 0,"
                " payload TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,"
                " finished_at REAL);"
                "CREATE INDEX raw_jobs_pending ON raw_jobs (id) WHERE status = 0;"
            )
        else:
            self.conn.execute(
                "CREATE TABLE raw_jobs (id bigserial PRIMARY KEY, status smallint NOT NULL"
                " DEFAULT 0, payload jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL"
                " DEFAULT now(), finished_at timestamptz)"
            )
            self.conn.execute("CREATE INDEX raw_jobs_pending ON raw_jobs (id) WHERE status = 0")
            self.conn.commit()

    def enqueue_one(self) -> int:
        self.begin()
        row = self._sql(
            "INSERT INTO raw_jobs (created_at) VALUES (julianday('now')) RETURNING id",
            "INSERT INTO raw_jobs DEFAULT VALUES RETURNING id",
        ).fetchone()
        self.commit()
        return int(row[0])

    def enqueue_batch(self, count: int) -> None:
        """``count`` tasks in one transaction, with the driver's executemany."""
        self.begin()
        self.calls += 1
        self.statements += count
        if self.sqlite:
            self.conn.executemany(
                "INSERT INTO raw_jobs (created_at) VALUES (julianday('now'))", [()] * count
            )
        else:
            with self.conn.cursor() as cur:
                cur.executemany("INSERT INTO raw_jobs (payload) VALUES ('{}')", [()] * count)
        self.commit()

    def claim_run_finish(self, run: Callable[[int], None]) -> bool:
        """One task per transaction; False when nothing was claimable."""
        self.begin()
        row = self._sql(
            "SELECT id, payload FROM raw_jobs WHERE status = 0 ORDER BY id LIMIT 1",
            "SELECT id, payload FROM raw_jobs WHERE status = 0 ORDER BY id LIMIT 1"
            " FOR UPDATE SKIP LOCKED",
        ).fetchone()
        if row is None:
            self.commit()
            return False
        run(int(row[0]))
        self._sql(
            "UPDATE raw_jobs SET status = 2, finished_at = julianday('now') WHERE id = ?",
            "UPDATE raw_jobs SET status = 2, finished_at = now() WHERE id = %s",
            (row[0],),
        )
        self.commit()
        return True

    def poll_forever(self, run: Callable[[int], None], poll: float, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self.claim_run_finish(run):
                stop.wait(poll)

    def count_done(self) -> int:
        row = self._sql(
            "SELECT count(*) FROM raw_jobs WHERE status = 2",
            "SELECT count(*) FROM raw_jobs WHERE status = 2",
        ).fetchone()
        if not self.sqlite:
            self.conn.commit()
        return int(row[0])


def setup(db: Database) -> None:
    queue = RawQueue(db)
    try:
        queue.create_schema()
    finally:
        queue.close()


def clear(db: Database) -> None:
    """Mark every queued task done, so a later measurement starts on an empty queue."""
    queue = RawQueue(db)
    try:
        queue.begin()
        queue._sql("UPDATE raw_jobs SET status = 2", "UPDATE raw_jobs SET status = 2")
        queue.commit()
    finally:
        queue.close()


def enqueue_rate(db: Database, count: int) -> dict[str, float]:
    """Tasks per second inserted one per transaction."""
    queue = RawQueue(db)
    try:
        started = time.perf_counter()
        for _ in range(count):
            queue.enqueue_one()
        elapsed = time.perf_counter() - started
    finally:
        queue.close()
    return {"tasks": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed, 1)}


def bulk_enqueue_rate(db: Database, count: int) -> dict[str, float]:
    """Tasks per second inserted in transactions of ``BATCH`` (executemany)."""
    queue = RawQueue(db)
    try:
        started = time.perf_counter()
        left = count
        while left > 0:
            queue.enqueue_batch(min(BATCH, left))
            left -= BATCH
        elapsed = time.perf_counter() - started
    finally:
        queue.close()
    return {"tasks": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed, 1)}


def drain(db: Database, count: int, concurrency: int) -> dict[str, Any]:
    """Enqueue ``count`` no-op tasks, then time ``concurrency`` threads emptying the queue."""
    bulk = bulk_enqueue_rate(db, count)
    analyze(db)
    queues = [RawQueue(db) for _ in range(concurrency)]
    gate = threading.Barrier(concurrency + 1)

    def work(queue: RawQueue) -> None:
        gate.wait()
        while queue.claim_run_finish(_noop):
            pass

    threads = [threading.Thread(target=work, args=(q,)) for q in queues]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    done = queues[0].count_done()
    calls = sum(q.calls for q in queues)
    statements = sum(q.statements for q in queues) - 1  # minus count_done's
    commits = sum(q.commits for q in queues)
    for queue in queues:
        queue.close()
    return {
        "tasks": count,
        "done": done,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed, 1),
        "bulk_enqueue": bulk,
        "sql": {
            "statements_per_task": round(statements / count, 3),
            "round_trips_per_task": round((calls - 1) / count, 3),
            "commits_per_task": round(commits / count, 3),
        },
    }


def pickup_latency(
    db: Database, samples: int, gaps: list[float], poll: float = DEFAULT_POLL_SECONDS
) -> dict[str, Any]:
    """Enqueue-commit to start of the task, with one consumer polling every ``poll`` s."""
    started: dict[int, float] = {}
    consumer = RawQueue(db)
    producer = RawQueue(db)
    stop = threading.Event()

    def run(task_id: int) -> None:
        started[task_id] = time.perf_counter()

    thread = threading.Thread(target=consumer.poll_forever, args=(run, poll, stop), daemon=True)
    thread.start()
    seconds: list[float] = []
    try:
        time.sleep(0.3)
        for n in range(samples):
            time.sleep(gaps[n % len(gaps)])
            task_id = producer.enqueue_one()
            committed = time.perf_counter()
            if not wait_until(lambda t=task_id: t in started, timeout=30):
                raise RuntimeError(f"raw consumer never started task {task_id}")
            seconds.append(started[task_id] - committed)
    finally:
        stop.set()
        thread.join()
        consumer.close()
        producer.close()
    return {**latency_summary(seconds), "poll_ms": round(poll * 1000, 1)}


def _idle_main(args: argparse.Namespace) -> None:
    db = Database(args.dialect, args.dsn)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    queue = RawQueue(db)
    queue.poll_forever(_noop, args.poll, stop)
    queue.close()


def _consume_main(args: argparse.Namespace) -> None:
    """The poller, each task stamped in a file as it starts, as bench_probe.stamp_file does."""
    stamps = Path(args.stamp_file)

    def stamp(task_id: int) -> None:
        now = time.time()
        with stamps.open("a", encoding="utf-8") as out:
            out.write(f"{task_id} {now!r}\n")

    db = Database(args.dialect, args.dsn)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    queue = RawQueue(db)
    queue.poll_forever(stamp, args.poll, stop)
    queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description="The raw baseline as a process: an idle poller (for RSS), or a consumer "
        "that stamps each task's start in a file (start-up, pickup from another process)."
    )
    parser.add_argument("mode", choices=["idle", "consume"])
    parser.add_argument("--dialect", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL_SECONDS)
    parser.add_argument("--stamp-file", help="consume: where each task's start is appended")
    args = parser.parse_args()
    if args.mode == "consume":
        if not args.stamp_file:
            parser.error("consume needs --stamp-file")
        _consume_main(args)
    else:
        _idle_main(args)


if __name__ == "__main__":
    main()
