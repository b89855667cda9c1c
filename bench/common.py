"""Helpers shared by the benchmark parts: databases, clocks, percentiles, process memory."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
WORKERS_MODULE = "bench.workers"


@dataclass(frozen=True)
class Database:
    """One database the benchmark created for itself: a libpq DSN or a SQLite file."""

    dialect: str  # "sqlite" | "postgresql"
    dsn: str  # libpq conninfo URL, or the SQLite file path

    @property
    def url(self) -> str:
        """The SQLAlchemy URL stask takes."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.dsn}"
        return self.dsn.replace("postgresql://", "postgresql+psycopg://", 1)


@contextlib.contextmanager
def postgres_database(admin_dsn: str, prefix: str = "bench") -> Iterator[Database]:
    """A fresh, uniquely named database on the server, dropped afterwards (never reused)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    base, _, _ = admin_dsn.rpartition("/")
    try:
        yield Database("postgresql", f"{base}/{name}")
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def sqlite_database(name: str = "bench.db") -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix="stask-bench-") as folder:
        yield Database("sqlite", str(Path(folder) / name))


@contextlib.contextmanager
def database(dialect: str, admin_dsn: str, prefix: str = "bench") -> Iterator[Database]:
    if dialect == "sqlite":
        with sqlite_database(f"{prefix}.db") as db:
            yield db
    else:
        with postgres_database(admin_dsn, prefix) as db:
            yield db


def analyze(db: Database) -> None:
    """ANALYZE a PostgreSQL database after a bulk enqueue, as autovacuum's auto-analyze would.

    The server here runs with autovacuum = off, so without this every system's first plans
    would come from a table never analyzed; it is run for stask, the raw loop and the peers
    alike, outside the timed part. SQLite has no auto-analyze: nothing is done there.
    """
    if db.dialect == "postgresql":
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: list[float]) -> dict[str, float | int]:
    return {
        "samples": len(seconds),
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
        "p95_ms": round(percentile(seconds, 0.95) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.002) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds pass; whether it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def vm_rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def idle_rss(argv: list[str], env: dict[str, str], settle: float = 3.0) -> float:
    """Start a process, let it settle idle, read its RSS, stop it (it must still be alive)."""
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(settle)
        if proc.poll() is not None:
            raise RuntimeError(
                f"{argv[0]} exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
        return vm_rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the caller's STASK_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def machine_info(admin_dsn: str | None) -> dict[str, object]:
    info: dict[str, object] = {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "psycopg": psycopg.__version__,
    }
    with contextlib.suppress(OSError, ValueError, IndexError):
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    with contextlib.suppress(Exception):
        import sqlalchemy

        from stask import __version__

        info["stask"] = __version__
        info["sqlalchemy"] = sqlalchemy.__version__
    if admin_dsn:
        try:
            with psycopg.connect(admin_dsn) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                info["postgresql"] = row[0] if row else None
                for setting in ("synchronous_commit", "autovacuum", "shared_buffers"):
                    value = conn.execute(f"SHOW {setting}").fetchone()
                    info[f"postgresql_{setting}"] = value[0] if value else None
        except psycopg.Error as err:
            info["postgresql"] = f"unavailable: {err}".strip()
    info["git"] = git_state()
    return info


def git_state() -> dict[str, object]:
    """The commit measured and whether the tree had local changes (read-only git calls)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10
        )
        return done.stdout.strip()

    with contextlib.suppress(OSError, subprocess.SubprocessError):
        changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty_src": sorted(p for p in changed if p.startswith("src/")),
        }
    return {}
