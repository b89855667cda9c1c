"""pgqueuer and procrastinate on PostgreSQL, measured like stask; run with bench/.venv-peers.

Never imported by stask or by the main benchmark: ``bench.run`` starts
``bench/.venv-peers/bin/python -m bench.peers measure ...`` and reads the JSON it prints.
Each system gets a fresh database per measurement and uses its own schema installer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Database, analyze, idle_rss, latency_summary, postgres_database

STARTED: dict[int, float] = {}
BATCH = 1000
SYSTEMS = ("pgqueuer", "procrastinate")


class StatementCount:
    """Counts statements sent through psycopg's async cursors and asyncpg's connections.

    Both peers run in autocommit here, so every statement is its own transaction.
    """

    _ASYNCPG = ("execute", "executemany", "fetch", "fetchrow", "fetchval")

    def __init__(self) -> None:
        self.calls = 0
        self.statements = 0
        self._saved: list[tuple[type, str, Any]] = []

    def _wrap(self, cls: type, name: str, weigh_many: bool) -> None:
        original = getattr(cls, name)
        counter = self

        async def counted(this: Any, query: Any, *args: Any, **kw: Any) -> Any:
            counter.calls += 1
            if weigh_many and args:
                args = (list(args[0]), *args[1:])
                counter.statements += len(args[0])
            else:
                counter.statements += 1
            return await original(this, query, *args, **kw)

        self._saved.append((cls, name, original))
        setattr(cls, name, counted)

    def __enter__(self) -> StatementCount:
        self._wrap(psycopg.AsyncCursor, "execute", weigh_many=False)
        self._wrap(psycopg.AsyncCursor, "executemany", weigh_many=True)
        with contextlib.suppress(ImportError):
            import asyncpg

            for name in self._ASYNCPG:
                self._wrap(asyncpg.Connection, name, weigh_many=name == "executemany")
        return self

    def __exit__(self, *exc: object) -> None:
        for cls, name, original in reversed(self._saved):
            setattr(cls, name, original)
        self._saved.clear()

    def per_task(self, tasks: int) -> dict[str, float]:
        return {
            "statements_per_task": round(self.statements / tasks, 3),
            "round_trips_per_task": round(self.calls / tasks, 3),
        }


async def stop_after(running: asyncio.Task[Any], cap: float, stop: Callable[[], Any]) -> None:
    """Let a worker run until it returns or ``cap`` seconds pass, then stop it gracefully."""
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(running), cap)
    if not running.done():
        stop()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(running, 60)


def drained(
    count: int, done: int, elapsed: float, bulk: float, counted: StatementCount
) -> dict[str, Any]:
    """A drain's figures; one stopped at its time cap is measured on what it finished."""
    figures: dict[str, Any] = {
        **rate(done, elapsed),
        "enqueued": count,
        "bulk_enqueue": rate(count, bulk),
        "sql": counted.per_task(max(done, 1)),
    }
    if done < count:
        figures["partial"] = f"stopped at the time cap: {done} of {count} done"
    return figures


def rate(count: int, elapsed: float) -> dict[str, float]:
    return {"tasks": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed, 1)}


async def wait_for(key: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while key not in STARTED:
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {key} never started")
        await asyncio.sleep(0.0005)


# -- pgqueuer ------------------------------------------------------------------------------------

# Concurrency c of the table, in pgqueuer's terms. Async entrypoints have no serial mode; the
# tightest worker-wide cap it accepts is max_concurrent_tasks = 2 x batch_size.
PGQ_SETTINGS: dict[str, dict[str, int]] = {
    "c1": {"batch_size": 1, "max_concurrent_tasks": 2},
    "c4": {"batch_size": 2, "max_concurrent_tasks": 4},
    "defaults": {},
}


class PgQueuerBench:
    name = "pgqueuer"
    mapping = (
        "asyncpg driver (its README's), async no-op entrypoint, tables from `pgq install` "
        "(durable); c1 = batch_size 1 + max_concurrent_tasks 2 (its tightest cap), c4 = "
        "batch_size 2 + max_concurrent_tasks 4, defaults = batch_size 10, no cap"
    )

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    def install(self) -> None:
        pgq = Path(sys.executable).with_name("pgq")
        subprocess.run([str(pgq), "--pg-dsn", self.dsn, "install"], check=True, capture_output=True)

    async def queries(self) -> Any:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        return Queries(AsyncpgDriver(await asyncpg.connect(self.dsn)))

    async def enqueue(self, count: int, batch: int) -> float:
        queries = await self.queries()
        try:
            started = time.perf_counter()
            if batch == 1:
                for _ in range(count):
                    await queries.enqueue("noop", None)
            else:
                for left in range(count, 0, -batch):
                    size = min(batch, left)
                    await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
            return time.perf_counter() - started
        finally:
            await queries.driver._connection.close()

    async def manager(self) -> Any:
        from pgqueuer import Job, QueueManager

        qm = QueueManager(await self.queries())

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        @qm.entrypoint("stamp")
        async def stamp(job: Job) -> None:
            STARTED[int(job.payload or b"0")] = time.perf_counter()

        return qm

    async def done(self) -> int:
        queries = await self.queries()
        conn = queries.driver._connection
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'")
            )
        finally:
            await conn.close()

    async def drain(self, count: int, concurrency: str, cap: float) -> dict[str, Any]:
        from pgqueuer.domain.types import QueueExecutionMode

        bulk = await self.enqueue(count, BATCH)
        analyze(Database("postgresql", self.dsn))
        qm = await self.manager()
        with StatementCount() as counted:
            started = time.perf_counter()
            running = asyncio.create_task(
                qm.run(mode=QueueExecutionMode.drain, **PGQ_SETTINGS[concurrency])
            )
            await stop_after(running, cap, qm.shutdown.set)
            elapsed = time.perf_counter() - started
        await qm.queries.driver._connection.close()
        return drained(count, await self.done(), elapsed, bulk, counted)

    async def latency(self, samples: int, gaps: list[float]) -> dict[str, Any]:
        qm = await self.manager()
        producer = await self.queries()
        running = asyncio.create_task(qm.run())
        try:
            await asyncio.sleep(1.0)
            seconds = []
            for n in range(1, samples + 1):
                await asyncio.sleep(gaps[(n - 1) % len(gaps)])
                await producer.enqueue("stamp", str(n).encode())
                committed = time.perf_counter()
                await wait_for(n)
                seconds.append(STARTED[n] - committed)
        finally:
            await stop_after(running, 0, qm.shutdown.set)
            await qm.queries.driver._connection.close()
            await producer.driver._connection.close()
        return latency_summary(seconds)

    async def idle(self) -> None:
        await (await self.manager()).run()


# -- procrastinate --------------------------------------------------------------------------------


class ProcrastinateBench:
    name = "procrastinate"
    mapping = (
        "async no-op task; run_worker_async(concurrency=c, wait=False) drains; defaults "
        "otherwise (listen_notify on, jobs kept)"
    )

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.app = self.make_app()

    def make_app(self) -> Any:
        import procrastinate

        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.dsn))

        @app.task(name="noop")
        async def noop() -> None:
            return None

        @app.task(name="stamp")
        async def stamp(n: int) -> None:
            STARTED[n] = time.perf_counter()

        self.noop, self.stamp = noop, stamp
        return app

    def install(self) -> None:
        async def apply() -> None:
            async with self.app.open_async():
                await self.app.schema_manager.apply_schema_async()

        asyncio.run(apply())
        self.app = self.make_app()  # a fresh app for the measurement's own event loop

    async def enqueue(self, count: int, batch: int) -> float:
        async with self.app.open_async():
            started = time.perf_counter()
            if batch == 1:
                for _ in range(count):
                    await self.noop.defer_async()
            else:
                for left in range(count, 0, -batch):
                    await self.noop.batch_defer_async(*[{}] * min(batch, left))
            return time.perf_counter() - started

    async def drain(self, count: int, concurrency: str, cap: float) -> dict[str, Any]:
        bulk = await self.enqueue(count, BATCH)
        analyze(Database("postgresql", self.dsn))
        async with self.app.open_async():
            with StatementCount() as counted:
                started = time.perf_counter()
                running = asyncio.create_task(
                    self.app.run_worker_async(
                        concurrency=int(concurrency[1:]),
                        wait=False,
                        install_signal_handlers=False,
                    )
                )
                await stop_after(running, cap, running.cancel)
                elapsed = time.perf_counter() - started
            async with self.app.connector.pool.connection() as conn:
                row = await (
                    await conn.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                    )
                ).fetchone()
        return drained(count, int(row[0]) if row else 0, elapsed, bulk, counted)

    async def latency(self, samples: int, gaps: list[float]) -> dict[str, Any]:
        async with self.app.open_async():
            running = asyncio.create_task(
                self.app.run_worker_async(concurrency=4, wait=True, install_signal_handlers=False)
            )
            try:
                await asyncio.sleep(1.0)
                seconds = []
                for n in range(1, samples + 1):
                    await asyncio.sleep(gaps[(n - 1) % len(gaps)])
                    await self.stamp.defer_async(n=n)
                    committed = time.perf_counter()
                    await wait_for(n)
                    seconds.append(STARTED[n] - committed)
            finally:
                await stop_after(running, 0, running.cancel)
        return latency_summary(seconds)

    async def idle(self) -> None:
        async with self.app.open_async():
            await self.app.run_worker_async(concurrency=4, wait=True)


# -- driver ---------------------------------------------------------------------------------------

Bench = PgQueuerBench | ProcrastinateBench


def make(system: str, dsn: str) -> Bench:
    return PgQueuerBench(dsn) if system == "pgqueuer" else ProcrastinateBench(dsn)


def on_fresh_db(
    admin: str, system: str, measure: Callable[[Bench], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """Run one measurement on a new database with the system's schema; errors become text."""
    try:
        with postgres_database(admin, f"bench_{system}") as db:
            bench = make(system, db.dsn)
            bench.install()
            return asyncio.run(measure(bench))
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}".strip()[:500]}


def measure_system(system: str, args: argparse.Namespace, gaps: list[float]) -> dict[str, Any]:
    figures: dict[str, Any] = {"mapping": make(system, "").mapping, "version": version(system)}

    async def single(bench: Bench) -> dict[str, Any]:
        return rate(args.single, await bench.enqueue(args.single, 1))

    figures["enqueue"] = on_fresh_db(args.admin, system, single)
    for concurrency in ("c1", "c4", "defaults") if system == "pgqueuer" else ("c1", "c4"):

        async def drain(bench: Bench, c: str = concurrency) -> dict[str, Any]:
            return await bench.drain(args.tasks, c, args.cap)

        figures[f"drain_{concurrency}"] = on_fresh_db(args.admin, system, drain)

    async def latency(bench: Bench) -> dict[str, Any]:
        STARTED.clear()
        return await bench.latency(args.samples, gaps)

    figures["latency"] = on_fresh_db(args.admin, system, latency)
    figures["idle_rss"] = idle_figure(system, args.admin)
    return figures


def idle_figure(system: str, admin: str) -> dict[str, Any]:
    try:
        with postgres_database(admin, f"bench_{system}") as db:
            make(system, db.dsn).install()
            argv = [sys.executable, "-m", "bench.peers", "idle", system, "--dsn", db.dsn]
            return {"rss_mb": idle_rss(argv, env=None)}
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}".strip()[:500]}


def version(system: str) -> str:
    from importlib.metadata import version as dist_version

    return dist_version(system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    measure = sub.add_parser("measure")
    measure.add_argument("--admin", required=True, help="libpq URL of a database to CREATE from")
    measure.add_argument("--tasks", type=int, default=10_000)
    measure.add_argument("--single", type=int, default=1000)
    measure.add_argument("--samples", type=int, default=20)
    measure.add_argument("--cap", type=float, default=20.0, help="longest drain, seconds")
    measure.add_argument("--gaps", default="", help="comma-separated seconds between samples")
    measure.add_argument("--systems", default=",".join(SYSTEMS))
    idle = sub.add_parser("idle")
    idle.add_argument("system", choices=SYSTEMS)
    idle.add_argument("--dsn", required=True)
    args = parser.parse_args()
    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # "App in __main__" notices
    if args.mode == "idle":
        asyncio.run(make(args.system, args.dsn).idle())
        return
    gaps = [float(g) for g in args.gaps.split(",") if g] or [
        random.Random(7).uniform(0.1, 1.5) for _ in range(args.samples)
    ]
    results = {
        system: measure_system(system, args, gaps)
        for system in args.systems.split(",")
        if system in SYSTEMS
    }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
