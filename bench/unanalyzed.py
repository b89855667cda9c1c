"""A drain on tables the planner has no statistics for (PostgreSQL, autovacuum off).

Every other PostgreSQL drain runs ``ANALYZE`` after its bulk enqueue, as auto-analyze would.
A new install, or a server without autovacuum (this one), has none: its first burst is planned
from a table never analyzed. This drains one burst both ways, each on a fresh database with a
``stask worker --concurrency 4`` process that was started on the empty database and left idle
first (start-up is not timed, and its turn may be prepared and planned for empty tables while
it idles; see ``IDLE_SECONDS``). The burst is one transaction (``create_many`` on the bench's
own connection); the analyzed case runs ``ANALYZE`` inside it, so the worker, woken by the
commit's NOTIFY, never sees the tasks before their statistics. Timed from that commit until
the last task's outcome was recorded: the database is polled until every task has its final
status, and the end is the latest ``finished_at`` (the worker's clock as it records a batch,
naive UTC; the same wall clock as the bench's), so the 20 ms poll costs no precision.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import database
from bench.measure_stask import NOOP, prepared_app
from bench.procs import Peek, process, stask_worker_env, wait_for, wait_registered
from bench.startup import worker_argv
from stask.models import Status

# The idle worker's claims back off to one a second: in 8 s it makes about ten, past psycopg's
# prepare threshold (5), so a statement it prepares may be planned (and its plan cached, perhaps
# a generic one after five custom plans) while the tables were empty and never analyzed.
IDLE_SECONDS = 8.0
POLL_SECONDS = 0.02
FINAL = ", ".join(str(s.code) for s in (Status.COMPLETED, Status.FAILED, Status.CANCELLED))
CASES = ("unanalyzed", "analyzed")
TABLE_STATS = """
SELECT s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze, s.n_tup_ins,
       s.last_analyze, s.last_autoanalyze, s.analyze_count, s.autoanalyze_count,
       c.reltuples, c.relpages
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.relname IN ('s_queue', 's_tasks') ORDER BY s.relname
"""


def compare(admin: str, config: Path, count: int, rounds: int) -> dict[str, Any]:
    """Both cases ``rounds`` times, alternating which goes first; rates are medians."""
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    for n in range(rounds):
        for case in CASES if n % 2 == 0 else CASES[::-1]:
            runs[case].append(drain(admin, config, count, analyze=case == "analyzed"))
    found: dict[str, Any] = {
        case: {
            "per_second": statistics.median(run["per_second"] for run in runs[case]),
            "runs": runs[case],
        }
        for case in CASES
    }
    found["rounds"] = rounds
    found["tasks"] = count
    found["idle_seconds"] = IDLE_SECONDS
    found["ratio"] = round(found["unanalyzed"]["per_second"] / found["analyzed"]["per_second"], 3)
    # Each round's pair ran back to back: their ratios cancel drift between rounds.
    paired = [
        round(u["per_second"] / a["per_second"], 3)
        for u, a in zip(runs["unanalyzed"], runs["analyzed"], strict=True)
    ]
    found["ratio_per_round"] = paired
    found["ratio_median_of_rounds"] = statistics.median(paired)
    return found


def drain(admin: str, config: Path, count: int, *, analyze: bool) -> dict[str, Any]:
    with (
        database("postgresql", admin, "bench_unanalyzed") as db,
        tempfile.TemporaryDirectory(prefix="stask-bench-proc-") as folder,
    ):
        storage = Path(folder) / "storage"
        app = prepared_app(db, storage)
        try:
            env = stask_worker_env(db, storage, config)
            with (
                process(worker_argv(), env, Path(folder) / "worker.log") as child,
                Peek(db) as peek,
            ):
                wait_registered(db, child)
                time.sleep(IDLE_SECONDS)
                child.check()
                before = table_stats(peek)
                with app.store.engine.begin() as conn:
                    app.create_many([NOOP] * count, connection=conn)
                    if analyze:
                        conn.execute(text("ANALYZE"))
                    # This backend's table counters reach pg_stat_user_tables as it commits.
                    conn.execute(text("SELECT pg_stat_force_next_flush()"))
                committed, committed_wall = time.perf_counter(), time.time()
                at_start = table_stats(peek)
                done_sql = f"SELECT count(*) FROM s_tasks WHERE status IN ({FINAL})"
                wait_for(
                    lambda: peek.value(done_sql) >= count,
                    child,
                    max(120.0, count / 20),
                    f"{count} tasks to finish",
                    step=POLL_SECONDS,
                )
                observed = time.perf_counter() - committed
                last = peek.value("SELECT max(finished_at) FROM s_tasks")
                completed = peek.value(
                    f"SELECT count(*) FROM s_tasks WHERE status = {Status.COMPLETED.code}"
                )
        finally:
            app.close()
        recorded = wall_seconds(last) - committed_wall if last is not None else None
        # The poll's figure is the fallback (and the bound: it saw every outcome committed).
        elapsed = recorded if recorded is not None and 0 < recorded <= observed else observed
        return {
            "analyzed": analyze,
            "tasks": count,
            "completed": completed,
            "seconds": round(elapsed, 3),
            "per_second": round(count / elapsed, 1),
            "last_finished_at_seconds": None if recorded is None else round(recorded, 4),
            "observed_by_poll_seconds": round(observed, 3),
            "poll_seconds": POLL_SECONDS,
            "tables_before_enqueue": before,
            "tables_at_drain_start": at_start,
        }


def wall_seconds(stamp: dt.datetime) -> float:
    """``time.time()`` of a stored timestamp (stask stores naive UTC)."""
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()


def table_stats(peek: Peek) -> dict[str, dict[str, Any]]:
    """``pg_stat_user_tables`` and ``pg_class`` (what the planner reads) for the hot tables;
    timestamps as text (None: never analyzed)."""
    found: dict[str, dict[str, Any]] = {}
    for row in peek.rows(TABLE_STATS):
        name = row.pop("relname")
        found[name] = {
            key: value if value is None or isinstance(value, int | float) else str(value)
            for key, value in row.items()
        }
    return found
