"""The real ``stask worker`` process: its start-up, and its pickup of another process's tasks.

The in-process figures (``measure_stask``) put the runner on a thread next to the producer:
one clock, no imports, no connection set-up. These start the command an operator runs, with
the bench workers (``STASK_WORKERS=bench.workers``) and an empty ``stask.toml``, and time it
from outside: each action appends ``time.time()`` to a stamp file, the clock both processes
share. The raw loop's consumer process (``python -m bench.raw consume``) is timed the same way.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import raw
from bench.common import ROOT, Database, clean_env, database, latency_summary
from bench.measure_stask import prepared_app, stask_command
from bench.procs import (
    Process,
    process,
    run_producer,
    stask_worker_env,
    wait_for_stamps,
    wait_registered,
)

CONCURRENCY = 4
STAMP = ("bench_probe", "stamp_file")
SETTLE_SECONDS = 1.0  # after the warm-up task: the worker's claim loop backs off, as when idle
IMPORTS = {
    "python_bare": "pass",
    "stask_cli": "import stask.cli",
    "stask_cli_worker": "import stask.cli.worker",
    "bench_raw": "import bench.raw",
}


def worker_argv() -> list[str]:
    return [*stask_command(), "worker", "--concurrency", str(CONCURRENCY)]


def raw_argv(db: Database, stamps: Path, poll: float) -> list[str]:
    argv = [sys.executable, "-m", "bench.raw", "consume", "--dialect", db.dialect]
    return [*argv, "--dsn", db.dsn, "--poll", str(poll), "--stamp-file", str(stamps)]


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="stask-bench-proc-") as folder:
        yield Path(folder)


def startup_times(
    dialect: str, admin: str, config: Path, starts: int, poll: float
) -> dict[str, dict[str, Any]]:
    """Wall time from just before ``Popen`` to the first task's action, a task being queued
    already on a freshly migrated database; stask and raw alternate, a new database and a new
    process each start, stopped with SIGTERM after."""
    seconds: dict[str, list[float]] = {"stask": [], "raw": []}
    stops: dict[str, list[float | None]] = {"stask": [], "raw": []}
    for _ in range(starts):
        for side, start in (("stask", _stask_start), ("raw", _raw_start)):
            took, stopped = start(dialect, admin, config, poll)
            seconds[side].append(took)
            stops[side].append(stopped)
    return {
        side: {
            "starts": starts,
            "median_seconds": round(statistics.median(values), 4),
            "min_seconds": round(min(values), 4),
            "max_seconds": round(max(values), 4),
            "seconds": [round(v, 4) for v in values],
            "sigterm_exit_seconds": stops[side],
            "command": "stask worker --concurrency 4" if side == "stask" else "bench.raw consume",
        }
        for side, values in seconds.items()
    }


def _stask_start(
    dialect: str, admin: str, config: Path, _poll: float
) -> tuple[float, float | None]:
    with database(dialect, admin, "bench_start") as db, scratch() as folder:
        storage, stamps = folder / "storage", folder / "stamps"
        app = prepared_app(db, storage)
        try:
            task_id = app.create(*STAMP, {"file": str(stamps)}).id
        finally:
            app.close()
        env = stask_worker_env(db, storage, config)
        started = time.time()
        with process(worker_argv(), env, folder / "worker.log") as child:
            stamp = wait_for_stamps(stamps, [task_id], child)[task_id]
        return stamp - started, child.stop_seconds


def _raw_start(dialect: str, admin: str, _config: Path, poll: float) -> tuple[float, float | None]:
    with database(dialect, admin, "bench_raw_start") as db, scratch() as folder:
        raw.setup(db)
        queue = raw.RawQueue(db)
        try:
            task_id = queue.enqueue_one()
        finally:
            queue.close()
        stamps = folder / "stamps"
        started = time.time()
        with process(raw_argv(db, stamps, poll), clean_env(), folder / "raw.log") as child:
            stamp = wait_for_stamps(stamps, [task_id], child)[task_id]
        return stamp - started, child.stop_seconds


def import_times(repeats: int) -> dict[str, Any]:
    """Wall time of ``python -c <code>`` in a fresh process, each code in turn, medians: what
    of the start-up is the interpreter and what importing the command's modules."""
    seconds: dict[str, list[float]] = {name: [] for name in IMPORTS}
    env = clean_env()
    for _ in range(repeats):
        for name, code in IMPORTS.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
            seconds[name].append(time.perf_counter() - started)
    medians = {f"{name}_seconds": round(statistics.median(v), 4) for name, v in seconds.items()}
    return {
        "repeats": repeats,
        "codes": IMPORTS,
        **medians,
        "samples": {name: [round(v, 4) for v in values] for name, values in seconds.items()},
    }


def producer_pickup(
    dialect: str, admin: str, config: Path, gaps: list[float], poll: float
) -> dict[str, dict[str, Any]]:
    """A worker process (stask's, then the raw loop's consumer) idle; a producer process
    enqueues after each gap; from the return of each enqueue to its action's start."""
    return {
        "raw": _raw_pickup(dialect, admin, gaps, poll),
        "stask": _stask_pickup(dialect, admin, config, gaps),
    }


def _stask_pickup(dialect: str, admin: str, config: Path, gaps: list[float]) -> dict[str, Any]:
    with database(dialect, admin, "bench_pickup") as db, scratch() as folder:
        storage, stamps = folder / "storage", folder / "stamps"
        app = prepared_app(db, storage)
        try:
            env = stask_worker_env(db, storage, config)
            with process(worker_argv(), env, folder / "worker.log") as child:
                wait_registered(db, child)
                warm = app.create(*STAMP, {"file": str(stamps)}).id
                wait_for_stamps(stamps, [warm], child)
                time.sleep(SETTLE_SECONDS)
                argv = ["--system", "stask", "--url", db.url, "--storage", str(storage)]
                argv += ["--stamp-file", str(stamps)]
                return _samples(child, stamps, argv, gaps)
        finally:
            app.close()


def _raw_pickup(dialect: str, admin: str, gaps: list[float], poll: float) -> dict[str, Any]:
    with database(dialect, admin, "bench_raw_pickup") as db, scratch() as folder:
        raw.setup(db)
        stamps = folder / "stamps"
        with process(raw_argv(db, stamps, poll), clean_env(), folder / "raw.log") as child:
            queue = raw.RawQueue(db)
            try:
                warm = queue.enqueue_one()
            finally:
                queue.close()
            wait_for_stamps(stamps, [warm], child)
            time.sleep(SETTLE_SECONDS)
            argv = ["--system", "raw", "--dialect", db.dialect, "--dsn", db.dsn]
            return _samples(child, stamps, argv, gaps) | {"poll_ms": round(poll * 1000, 1)}


def _samples(child: Process, stamps: Path, argv: list[str], gaps: list[float]) -> dict[str, Any]:
    argv = [*argv, "--gaps", ",".join(str(g) for g in gaps)]
    returned = run_producer(argv, timeout=60 + 2 * sum(gaps))
    started = wait_for_stamps(stamps, [task_id for task_id, _ in returned], child)
    seconds = [started[task_id] - at for task_id, at in returned]
    return latency_summary(seconds) | {
        "min_ms": round(min(seconds) * 1000, 2),
        "samples_ms": [round(s * 1000, 2) for s in seconds],
    }
