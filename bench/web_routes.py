"""``python -m bench.web_routes``: latency of the web API's list, count, search and summary routes
over a large task table (issue 12: p95 at most 200 ms each with 1,000,000 tasks).

Per database (SQLite and PostgreSQL): a fresh database, ``Stask.migrate()``, the example workers
registered, ``--tasks`` rows (1,000,000; ``--quick`` 100,000) written into ``s_tasks`` by one
``INSERT ... SELECT`` (PostgreSQL ``generate_series``, SQLite a recursive CTE) plus ``s_queue``
rows for the pending ones, the statistics roll-up run once (timed: it is the background job),
then ``VACUUM ANALYZE`` (PostgreSQL) / ``ANALYZE`` (SQLite). The app is served by uvicorn on a
free loopback port in a thread of this process and every route is asked over real HTTP by one
``httpx.Client`` with an API token, one request at a time: warm-up, then ``--requests`` timed
requests per route (p50, p95, max). One more request per route records its SQL statements
(SQLAlchemy cursor events) and, for a route over the target, ``EXPLAIN`` of its slowest one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
from rich.console import Console
from rich.table import Table

from bench.common import (
    DEFAULT_POSTGRES,
    ROOT,
    Database,
    latency_summary,
    machine_info,
    postgres_database,
)

TARGET_MS = 200.0
RESULTS = ROOT / "bench" / "results" / "web_routes.json"
DIALECTS = ("sqlite", "postgresql")
# The example workers and their share of the tasks (tenths), with their action.
WORKERS: tuple[tuple[str, str, int], ...] = (
    ("product_import", "import", 4),
    ("product_export", "export", 3),
    ("sales_report", "generate", 2),
    ("cleanup", "clean", 1),
)
SOURCES = 50  # meta.source takes 50 values: one task in 50 has each
DAYS = 30
ROLLUP_CAP_SECONDS = 900.0

# A well-mixed hash of the row number g (a permutation of 1..P-1, P = 4294967291, prime): the
# status comes from h % 100, the worker from h / 100 % 10, meta.source from h / 1000 % 50.
# Status shares: 90 % completed (80), 5 % failed (100), 2 % cancelled (90), 3 % pending (10).
_STATUS = (
    "CASE WHEN h % 100 < 90 THEN 80 WHEN h % 100 < 95 THEN 100 WHEN h % 100 < 97 THEN 90 "
    "ELSE 10 END"
)
_WORKER_CASE = (
    "CASE WHEN h / 100 % 10 < 4 THEN '{0}' WHEN h / 100 % 10 < 7 THEN '{1}' "
    "WHEN h / 100 % 10 < 9 THEN '{2}' ELSE '{3}' END"
)
IDENTIFIER_SQL = _WORKER_CASE.format(*(w[0] for w in WORKERS))
ACTION_SQL = _WORKER_CASE.format(*(w[1] for w in WORKERS))
# Durations: 9 in 10 between 20 ms and 2 s, the rest up to 2 minutes; peak memory 20-220 MiB.
DURATION_SQL = "(CASE WHEN h / 7 % 10 = 0 THEN 20 + h / 11 % 120000 ELSE 20 + h / 11 % 2000 END)"
MEMORY_SQL = "(20971520 + (h / 13 % 200) * 1048576)"
WAIT_SQL = "(h / 17 % 5000)"  # ms between created_at and started_at
PRIORITY_SQL = "(CASE WHEN h / 19 % 10 = 0 THEN 1 WHEN h / 19 % 10 = 1 THEN 10 ELSE 5 END)"

COLUMNS = (
    "identifier, action, status, priority, queue, meta, result, progress, processed, total, "
    "message, error, attempts, max_attempts, run_at, started_by, cancel_requested, created_at, "
    "started_at, finished_at, updated_at, duration_ms, peak_memory"
)

POSTGRES_FILL = f"""
INSERT INTO s_tasks ({COLUMNS})
SELECT {IDENTIFIER_SQL}, {ACTION_SQL}, status, priority, 'default',
       jsonb_build_object('rows', rows, 'source', 'shop-' || (h / 1000 % {SOURCES}),
                          'order', 'ord-' || g),
       CASE WHEN status = 80 THEN jsonb_build_object('imported', rows) END,
       CASE WHEN status = 80 THEN 100 WHEN status = 10 THEN 0 ELSE 40 END,
       CASE WHEN status = 80 THEN rows WHEN status = 10 THEN 0 ELSE rows / 2 END,
       CASE WHEN status = 10 THEN 0 ELSE rows END,
       CASE WHEN status = 100 THEN 'row ' || (rows / 2) || ': bad price' END,
       CASE WHEN status = 100 THEN
         E'Traceback (most recent call last):\\n  File "x.py", line 1\\nValueError: bad price'
       END,
       CASE WHEN status = 100 THEN 3 WHEN status = 10 THEN 0 ELSE 1 END, 3,
       created, 'admin', status = 90, created,
       CASE WHEN status <> 10 THEN started END,
       CASE WHEN status <> 10 THEN started + duration * interval '1 millisecond' END,
       CASE WHEN status <> 10 THEN started + duration * interval '1 millisecond' ELSE created END,
       CASE WHEN status <> 10 THEN duration END,
       CASE WHEN status <> 10 THEN memory END
FROM (
  SELECT g, h, {_STATUS} AS status, {PRIORITY_SQL} AS priority, 10 + h / 23 % 990 AS rows,
         {DURATION_SQL} AS duration, {MEMORY_SQL} AS memory, created,
         created + {WAIT_SQL} * interval '1 millisecond' AS started
  FROM (
    SELECT g, (g::bigint * 2654435761) % 4294967291 AS h,
           %(start)s::timestamp + (g - 1)::bigint * %(step_ms)s * interval '1 millisecond'
             AS created
    FROM generate_series(1, %(n)s) AS g
  ) AS hashed
) AS task
ORDER BY g
"""

# SQLite stores SQLAlchemy DateTime as 'YYYY-MM-DD HH:MM:SS.ffffff' text: built from ms here.
_TS = (
    "(strftime('%Y-%m-%d %H:%M:%S', ({0}) / 1000, 'unixepoch') "
    "|| printf('.%06d', ({0}) % 1000 * 1000))"
)
_FINISHED_MS = "(started_ms + duration)"
SQLITE_FILL = f"""
WITH RECURSIVE seq(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM seq WHERE g < :n),
hashed AS (
  SELECT g, (g * 2654435761) % 4294967291 AS h, :start_ms + (g - 1) * :step_ms AS created_ms
  FROM seq
),
task AS (
  SELECT g, h, {_STATUS} AS status, {PRIORITY_SQL} AS priority, 10 + h / 23 % 990 AS rows,
         {DURATION_SQL} AS duration, {MEMORY_SQL} AS memory, created_ms,
         created_ms + {WAIT_SQL} AS started_ms
  FROM hashed
)
INSERT INTO s_tasks ({COLUMNS})
SELECT {IDENTIFIER_SQL}, {ACTION_SQL}, status, priority, 'default',
       json_object('rows', rows, 'source', 'shop-' || (h / 1000 % {SOURCES}), 'order', 'ord-' || g),
       CASE WHEN status = 80 THEN json_object('imported', rows) END,
       CASE WHEN status = 80 THEN 100 WHEN status = 10 THEN 0 ELSE 40 END,
       CASE WHEN status = 80 THEN rows WHEN status = 10 THEN 0 ELSE rows / 2 END,
       CASE WHEN status = 10 THEN 0 ELSE rows END,
       CASE WHEN status = 100 THEN 'row ' || (rows / 2) || ': bad price' END,
       CASE WHEN status = 100 THEN
         'Traceback (most recent call last):' || char(10) || '  File "x.py", line 1' || char(10)
         || 'ValueError: bad price'
       END,
       CASE WHEN status = 100 THEN 3 WHEN status = 10 THEN 0 ELSE 1 END, 3,
       {_TS.format("created_ms")}, 'admin', status = 90, {_TS.format("created_ms")},
       CASE WHEN status <> 10 THEN {_TS.format("started_ms")} END,
       CASE WHEN status <> 10 THEN {_TS.format(_FINISHED_MS)} END,
       CASE WHEN status <> 10 THEN {_TS.format(_FINISHED_MS)} ELSE {_TS.format("created_ms")} END,
       CASE WHEN status <> 10 THEN duration END,
       CASE WHEN status <> 10 THEN memory END
FROM task ORDER BY g
"""

QUEUE_FILL = """
INSERT INTO s_queue (task_id, queue, identifier, priority, run_at)
SELECT id, queue, identifier, priority, run_at FROM s_tasks WHERE status = 10
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.web_routes", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 tasks instead of 1,000,000")
    parser.add_argument("--tasks", type=int, help="tasks in s_tasks (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per route")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per route first")
    parser.add_argument("--only", default="", help="sqlite and/or postgresql (comma-separated)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="libpq URL to CREATE from")
    parser.add_argument(
        "--no-sqlite-analyze",
        action="store_true",
        help="leave SQLite without ANALYZE statistics (stask itself never runs ANALYZE there)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args(argv)
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    if wanted - set(DIALECTS):
        parser.error(f"unknown --only names: {', '.join(sorted(wanted - set(DIALECTS)))}")
    args.dialects = [d for d in DIALECTS if d in wanted] or list(DIALECTS)
    args.tasks = args.tasks or (100_000 if args.quick else 1_000_000)
    if args.requests < 1 or args.tasks < 1_000:
        parser.error("--requests must be positive and --tasks at least 1,000")
    return args


# -- databases ---------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(dialect: str, admin_dsn: str) -> Iterator[Database]:
    if dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="stask-bench-web-") as folder:
            yield Database("sqlite", str(Path(folder) / "web.db"))
        return
    with postgres_database(admin_dsn, prefix="stask_bench_web") as database:
        yield database


def fill(db: Database, n: int, now: dt.datetime) -> dict[str, Any]:
    """``n`` tasks created over the last 30 days (ids in created order) and their queue rows."""
    start = now - dt.timedelta(days=DAYS)
    # The newest is created 10 minutes ago: it and its (at most 2 min) run end before now.
    step_ms = max(1, int((DAYS * 86_400_000 - 600_000) / n))
    started = time.perf_counter()
    if db.dialect == "postgresql":
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            # psycopg reads % as a placeholder: the modulo operators are doubled.
            sql = POSTGRES_FILL.replace(" % ", " %% ")
            conn.execute(sql, {"start": start, "step_ms": step_ms, "n": n})
            inserted = time.perf_counter()
            conn.execute(QUEUE_FILL)
    else:
        lite = sqlite3.connect(db.dsn)
        try:
            lite.execute("PRAGMA journal_mode = WAL")
            epoch = dt.datetime(1970, 1, 1)
            start_ms = int((start - epoch).total_seconds() * 1000)
            with lite:
                lite.execute(SQLITE_FILL, {"start_ms": start_ms, "step_ms": step_ms, "n": n})
            inserted = time.perf_counter()
            with lite:
                lite.execute(QUEUE_FILL)
            lite.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            lite.close()
    return {
        "tasks": n,
        "insert_seconds": round(inserted - started, 1),
        "queue_seconds": round(time.perf_counter() - inserted, 1),
    }


def analyze(db: Database, sqlite_analyze: bool) -> float:
    """What autovacuum does to a settled table on PostgreSQL (VACUUM ANALYZE: the statistics
    and the visibility map index-only scans need); ANALYZE on SQLite unless asked not to."""
    started = time.perf_counter()
    if db.dialect == "postgresql":
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
    elif sqlite_analyze:
        lite = sqlite3.connect(db.dsn)
        try:
            lite.execute("ANALYZE")
            lite.commit()
        finally:
            lite.close()
    return round(time.perf_counter() - started, 1)


def distribution(db: Database) -> dict[str, Any]:
    sql = "SELECT status, identifier, count(*) FROM s_tasks GROUP BY status, identifier"
    if db.dialect == "postgresql":
        with psycopg.connect(db.dsn) as conn:
            rows = conn.execute(sql).fetchall()
            queued = conn.execute("SELECT count(*) FROM s_queue").fetchone()
    else:
        lite = sqlite3.connect(db.dsn)
        try:
            rows = lite.execute(sql).fetchall()
            queued = lite.execute("SELECT count(*) FROM s_queue").fetchone()
        finally:
            lite.close()
    by_status: dict[str, int] = {}
    by_worker: dict[str, int] = {}
    for status, identifier, count in rows:
        by_status[str(status)] = by_status.get(str(status), 0) + count
        by_worker[identifier] = by_worker.get(identifier, 0) + count
    return {
        "by_status": by_status,
        "by_worker": by_worker,
        "queued": queued[0] if queued else 0,
        "finished": sum(v for k, v in by_status.items() if k in ("80", "90", "100")),
    }


# -- serving -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(api: Any) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread of this process; its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        api, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class Statements:
    """Every statement the app's engine runs while ``on``: (SQL, parameters, seconds)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.on = False
        self.found: list[tuple[str, Any, float]] = []
        self.lock = threading.Lock()

        def before(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            conn.info.setdefault("bench_started", []).append(time.perf_counter())

        def after(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
        ) -> None:
            begun = conn.info["bench_started"].pop()
            if self.on:
                with self.lock:
                    self.found.append((statement, params, time.perf_counter() - begun))

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[tuple[str, Any, float]]]:
        with self.lock:
            self.found = []
        self.on = True
        try:
            yield self.found
        finally:
            self.on = False


def explain(app: Any, statement: str, params: Any) -> list[str]:
    """The plan of one statement the app ran: EXPLAIN (ANALYZE, BUFFERS) on PostgreSQL,
    EXPLAIN QUERY PLAN on SQLite."""
    engine = app.store.engine
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = [str(row[0]) for row in rows]
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            plan = [f"{row[0]}|{row[1]}| {row[3]}" for row in rows]
        begun = time.perf_counter()
        fetched = len(conn.exec_driver_sql(statement, params).fetchall())
        plan.append(
            f"(re-run with every row fetched: {(time.perf_counter() - begun) * 1000:.1f} ms, "
            f"{fetched} rows)"
        )
        conn.rollback()
    return plan


# -- the routes --------------------------------------------------------------------------------


def routes(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, path, query parameters) of every route measured; two floors first."""
    worker = WORKERS[1][0]  # product_export: 30 % of the tasks
    return [
        ("floor: /stask/health (no auth)", "/stask/health", {}),
        ("floor: /stask/api/session (token)", "/stask/api/session", {}),
        ("tasks, first page (limit=50)", "/stask/api/tasks", {"limit": 50}),
        ("tasks, deep keyset page (cursor=N/2)", "/stask/api/tasks",
         {"limit": 50, "cursor": n // 2}),
        ("tasks ?status=failed", "/stask/api/tasks", {"status": "failed"}),
        (f"tasks ?worker={worker}", "/stask/api/tasks", {"worker": worker}),
        ("count (unfiltered, cap 10,000)", "/stask/api/tasks/count", {}),
        ("count ?status=failed", "/stask/api/tasks/count", {"status": "failed"}),
        ("search worker:sales_report status:failed", "/stask/api/tasks",
         {"q": "worker:sales_report status:failed"}),
        (f"search #{n // 3} (exact id)", "/stask/api/tasks", {"q": f"#{n // 3}"}),
        ("search meta.source:shop-7 (1 in 50)", "/stask/api/tasks", {"q": "meta.source:shop-7"}),
        ("search meta.order:ord-5 (one old task)", "/stask/api/tasks", {"q": "meta.order:ord-5"}),
        ("summary ?hours=24", "/stask/performance/summary", {"hours": 24}),
        ("summary ?hours=720", "/stask/performance/summary", {"hours": 720}),
        ("workers ?hours=720", "/stask/performance/workers", {"hours": 720}),
        # The admin UI's pages (issue 13), rendered on the server from the same facade calls.
        ("page: dashboard", "/stask/", {}),
        ("page: tasks", "/stask/tasks", {}),
        ("page: tasks ?status=failed", "/stask/tasks", {"status": "failed"}),
        ("page: tasks ?q=meta.order:ord-5", "/stask/tasks", {"q": "meta.order:ord-5"}),
        (f"page: task #{n // 3}", f"/stask/tasks/{n // 3}", {}),
        ("page: statistics (24 h)", "/stask/stats", {}),
        ("page: statistics ?hours=720", "/stask/stats", {"hours": 720}),
    ]  # fmt: skip


def check(response: httpx.Response, label: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{label}: HTTP {response.status_code}: {response.text[:300]}")
    if response.headers.get("content-type", "").startswith("text/html"):
        return {"page": f"{len(response.content):,} bytes of HTML"}
    body: dict[str, Any] = response.json()
    if body.get("success") is False:
        raise RuntimeError(f"{label}: {response.text[:300]}")
    return body


def shape(body: dict[str, Any]) -> str:
    """What a route answered, in a few words (to see that it did what was asked)."""
    if "page" in body:
        return str(body["page"])
    if "tasks" in body and isinstance(body["tasks"], list):
        return f"{len(body['tasks'])} rows, next_cursor={body.get('next_cursor')}"
    if "count" in body:
        return f"count {body['text']}"
    if "tasks" in body and isinstance(body["tasks"], dict):
        t = body["tasks"]
        return f"completed {t['completed']:,} failed {t['failed']:,} queued {t['queued']:,}"
    if "workers" in body:
        return f"{len(body['workers'])} workers"
    return ",".join(sorted(body))[:60]


def measure_routes(
    app: Any, client: httpx.Client, statements: Statements, args: argparse.Namespace
) -> list[dict[str, Any]]:
    found = []
    for label, path, params in routes(args.tasks):
        print(f"  {label} ...", file=sys.stderr, flush=True)
        for _ in range(args.warmup):
            check(client.get(path, params=params), label)
        seconds = []
        answer: dict[str, Any] = {}
        for _ in range(args.requests):
            begun = time.perf_counter()
            response = client.get(path, params=params)
            seconds.append(time.perf_counter() - begun)
            answer = check(response, label)
        with statements.recording() as ran:
            begun = time.perf_counter()
            check(client.get(path, params=params), label)
            traced = time.perf_counter() - begun
        summary = latency_summary(seconds)
        slowest = max(ran, key=lambda s: s[2]) if ran else None
        row: dict[str, Any] = {
            "route": label,
            "path": path,
            "params": params,
            **summary,
            "pass": summary["p95_ms"] <= TARGET_MS,
            "answer": shape(answer),
            "traced_request_ms": round(traced * 1000, 2),
            "statements": [
                {"sql": " ".join(sql.split())[:300], "ms": round(s * 1000, 2)} for sql, _, s in ran
            ],
        }
        if slowest is not None and (not row["pass"] or slowest[2] * 1000 > TARGET_MS / 2):
            try:
                row["slowest_sql"] = slowest[0]
                row["slowest_params"] = repr(slowest[1])
                row["plan"] = explain(app, slowest[0], slowest[1])
            except Exception as err:  # a plan is a diagnosis, never a reason to stop
                row["plan"] = [f"EXPLAIN failed: {type(err).__name__}: {err}"]
        found.append(row)
    return found


def measure_dialect(dialect: str, args: argparse.Namespace) -> dict[str, Any]:
    from stask import Stask
    from stask.web import create_app

    result: dict[str, Any] = {"dialect": dialect}
    with (
        fresh_database(dialect, args.postgres) as db,
        tempfile.TemporaryDirectory(prefix="stask-storage-") as storage,
    ):
        app = Stask(
            database_url=db.url,
            storage=storage,
            workers=["stask.examples"],
            use_entry_points=False,
        )
        try:
            app.migrate()
            app.discover()
            print(f"{dialect}: filling {args.tasks:,} tasks ...", file=sys.stderr, flush=True)
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            result["fill"] = fill(db, args.tasks, now)
            result["distribution"] = distribution(db)
            print(f"{dialect}: statistics roll-up ...", file=sys.stderr, flush=True)
            begun = time.perf_counter()
            # Capped: a roll-up that stops advancing must not hang the benchmark.
            rolled = app.statistics.refresh(max_seconds=ROLLUP_CAP_SECONDS)
            watermark = app.statistics.stats.watermark()
            result["rollup"] = {
                "tasks": rolled,
                "seconds": round(time.perf_counter() - begun, 2),
                "watermark": str(watermark),
            }
            if rolled < result["distribution"]["finished"]:
                print(f"  roll-up counted {rolled:,} tasks only", file=sys.stderr, flush=True)
            result["analyze_seconds"] = analyze(db, not args.no_sqlite_analyze)
            result["sqlite_analyzed"] = dialect == "sqlite" and not args.no_sqlite_analyze
            app.accounts.add_user("admin", "admin", "a-long-password-123")
            _, token = app.accounts.create_token("bench", "admin")
            statements = Statements(app.store.engine)
            api = create_app(app, secure_cookie=False)
            with (
                served(api) as base,
                httpx.Client(
                    base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
                ) as client,
            ):
                result["how"] = f"uvicorn {base} in a thread; one httpx.Client, sequential"
                result["routes"] = measure_routes(app, client, statements, args)
        finally:
            app.close()
    return result


# -- the report --------------------------------------------------------------------------------


def print_report(report: dict[str, Any], console: Console) -> None:
    for found in report["databases"]:
        if "error" in found:
            console.print(f"[red]{found['dialect']}: {found['error']}[/red]")
            continue
        fill_info, rollup = found["fill"], found["rollup"]
        title = (
            f"stask web routes - {found['dialect']}, {fill_info['tasks']:,} tasks "
            f"(fill {fill_info['insert_seconds']} s, roll-up of {rollup['tasks']:,} finished "
            f"tasks {rollup['seconds']} s, analyze {found['analyze_seconds']} s)"
        )
        table = Table(title=title, title_justify="left")
        table.add_column("route")
        for name in ("p50 ms", "p95 ms", "max ms"):
            table.add_column(name, justify="right")
        table.add_column(f"p95 <= {TARGET_MS:g} ms")
        table.add_column("answer")
        for row in found["routes"]:
            floor = row["route"].startswith("floor")
            verdict = "" if floor else ("[green]pass[/green]" if row["pass"] else "[red]FAIL[/red]")
            table.add_row(
                row["route"],
                f"{row['p50_ms']:.1f}",
                f"{row['p95_ms']:.1f}",
                f"{row['max_ms']:.1f}",
                verdict,
                row["answer"],
            )
        console.print(table)
        for row in found["routes"]:
            if "plan" in row:
                console.print(
                    f"[bold]{found['dialect']} / {row['route']}[/bold]: slowest statement "
                    f"{max(s['ms'] for s in row['statements']):.1f} ms of "
                    f"{row['traced_request_ms']:.1f} ms"
                )
                sql = re.sub(
                    r"^SELECT .*? FROM ", "SELECT ... FROM ", " ".join(row["slowest_sql"].split())
                )
                console.print(f"  {sql[:600]}  -- {row['slowest_params']}", markup=False)
                for line in row["plan"][:40]:
                    console.print("    " + line, markup=False)
    machine = report["machine"]
    console.print(
        f"{report['requests']} timed requests per route after {report['warmup']} warm-up; "
        f"load average {report['load_before']} before, {report['load_after']} after; "
        f"{machine.get('cores')} cores ({machine.get('cpu', '?')}); client and server share "
        "this process."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {
        "command": shlex.join(["python", "-m", "bench.web_routes", *(argv or sys.argv[1:])]),
        "machine": machine_info(args.postgres if "postgresql" in args.dialects else None),
        "tasks": args.tasks,
        "requests": args.requests,
        "warmup": args.warmup,
        "target_ms": TARGET_MS,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "databases": [],
    }
    for dialect in args.dialects:
        started = time.monotonic()
        try:
            found = measure_dialect(dialect, args)
        except Exception as err:
            print(f"{dialect} failed: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            found = {"dialect": dialect, "error": f"{type(err).__name__}: {err}"[:500]}
        found["wall_seconds"] = round(time.monotonic() - started, 1)
        report["databases"].append(found)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_report(report, Console(width=200))
    print(f"JSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
