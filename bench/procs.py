"""Processes for the sections that time real ``stask worker`` commands: start, watch, stop.

A worker process is judged from outside, as an operator would see it: the rows it writes
(``s_nodes`` when it is up, task statuses as it records them) and the stamps its probe actions
append to a file (``bench_probe.stamp_file``: ``<task id> <time.time()>``, the wall clock every
process on the machine shares). ``python -m bench.procs produce ...`` is the producer process
of the pickup measurement: it enqueues at given gaps and prints when each enqueue returned.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from bench.common import ROOT, WORKERS_MODULE, Database, clean_env

STOP_TIMEOUT = 15.0  # SIGTERM, then SIGKILL: a process that ignores its stop is killed


def stask_worker_env(db: Database, storage: Path, config: Path) -> dict[str, str]:
    """The environment of a ``stask worker`` serving ``db`` with the bench workers only."""
    return clean_env(
        STASK_DATABASE_URL=db.url,
        STASK_STORAGE=str(storage),
        STASK_WORKERS=WORKERS_MODULE,
        STASK_CONFIG=str(config),
    )


class Process:
    """A child process whose stderr goes to a file (read back when something went wrong)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.stop_seconds: float | None = None
        with log.open("wb") as err:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 600) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:].strip()
        return ""

    def check(self) -> None:
        """Raise at once (with its last words) if the process has ended."""
        code = self.popen.poll()
        if code is not None:
            raise RuntimeError(f"{Path(self.argv[0]).name} exited with {code}: {self.tail()}")

    def stop(self) -> None:
        """SIGTERM and wait (the worker's graceful stop), SIGKILL after ``STOP_TIMEOUT``."""
        if self.popen.poll() is not None:
            return
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=STOP_TIMEOUT)
            self.stop_seconds = round(time.monotonic() - started, 3)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[Process]:
    """A child for the duration of the block; always stopped (and reaped) afterwards."""
    child = Process(argv, env, log)
    try:
        yield child
    finally:
        child.stop()


class Peek:
    """One reading connection to a database the bench watches (autocommit: every query sees
    the latest commits)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        if db.dialect == "sqlite":
            self.conn: Any = sqlite3.connect(db.dsn, isolation_level=None, timeout=30)
        else:
            self.conn = psycopg.connect(db.dsn, autocommit=True)

    def value(self, sql: str) -> Any:
        row = self.conn.execute(sql).fetchone()
        return None if row is None else row[0]

    def rows(self, sql: str) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Peek:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(
    condition: Callable[[], bool], child: Process, timeout: float, what: str, step: float = 0.005
) -> None:
    """Poll ``condition``; fail at once if ``child`` died, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        child.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}: {child.tail()}")
        time.sleep(step)


def wait_registered(db: Database, child: Process, timeout: float = 60.0) -> None:
    """Until the worker's node row is in ``s_nodes`` (its liveness started; the claim loop
    follows within milliseconds)."""
    with Peek(db) as peek:
        wait_for(
            lambda: bool(peek.value("SELECT count(*) FROM s_nodes")),
            child,
            timeout,
            "the worker to register in s_nodes",
            step=0.02,
        )


def read_stamps(path: Path) -> dict[int, float]:
    """Task id -> the ``time.time()`` its action started, from a stamp file (a line still
    being written, without its newline, is left for the next read)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    stamps: dict[int, float] = {}
    for line in text.splitlines(keepends=True):
        if line.endswith("\n"):
            task_id, stamp = line.split()
            stamps[int(task_id)] = float(stamp)
    return stamps


def wait_for_stamps(
    path: Path, ids: list[int], child: Process, timeout: float = 30.0
) -> dict[int, float]:
    """The stamps of ``ids``, once all are in the file."""
    found: dict[int, float] = {}

    def all_in() -> bool:
        found.update(read_stamps(path))
        return all(task_id in found for task_id in ids)

    wait_for(all_in, child, timeout, f"task(s) {ids[:5]} to start", step=0.002)
    return {task_id: found[task_id] for task_id in ids}


def run_producer(argv: list[str], timeout: float) -> list[tuple[int, float]]:
    """Run ``python -m bench.procs produce ...``; (task id, when its enqueue returned)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.procs", "produce", *argv],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"producer exited with {done.returncode}: {done.stderr[-600:]}")
    return [(int(task_id), float(at)) for task_id, at in json.loads(done.stdout)["samples"]]


def _produce(args: argparse.Namespace) -> None:
    """The producer process: one app (or raw connection) made once, then an enqueue after
    each gap; when each returned (its commit done) goes to stdout as JSON at the end."""
    gaps = [float(g) for g in args.gaps.split(",")]
    create: Callable[[], int]
    if args.system == "stask":
        from stask import Stask

        app = Stask(
            database_url=args.url,
            storage=args.storage,
            workers=[WORKERS_MODULE],
            use_entry_points=False,
        )
        options = {"file": args.stamp_file}

        def create() -> int:
            return app.create("bench_probe", "stamp_file", options).id

        close = app.close
    else:
        from bench.raw import RawQueue

        queue = RawQueue(Database(args.dialect, args.dsn))
        create, close = queue.enqueue_one, queue.close
    samples = []
    try:
        for gap in gaps:
            time.sleep(gap)
            task_id = create()
            samples.append((task_id, time.time()))
    finally:
        close()
    print(json.dumps({"samples": samples}))


def main() -> None:
    parser = argparse.ArgumentParser(description="The bench's producer process.")
    parser.add_argument("mode", choices=["produce"])
    parser.add_argument("--system", choices=["stask", "raw"], required=True)
    parser.add_argument("--gaps", required=True, help="comma-separated seconds before each")
    parser.add_argument("--url", help="stask: the SQLAlchemy URL")
    parser.add_argument("--storage", help="stask: the storage folder")
    parser.add_argument("--stamp-file", help="stask: where the probe action stamps")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql"], help="raw")
    parser.add_argument("--dsn", help="raw: libpq URL or SQLite file")
    _produce(parser.parse_args())


if __name__ == "__main__":
    main()
