"""SQLite's WAL: a runner resets it when overlapping readers kept SQLite from doing so."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import stask.db.dialects as dialects_module
from stask import Stask
from stask.db.engine import sqlite_path
from stask.runner import Runner, RunnerOptions

SMALL_WAL = 256 * 1024


def wal_of(app: Stask) -> Path:
    database = sqlite_path(app.store.url)
    assert database is not None
    return Path(f"{database}-wal")


@pytest.fixture
def reader(app: Stask, dialect: str) -> Iterator[sqlite3.Connection]:
    """A connection inside a read transaction: SQLite cannot reset the WAL under it."""
    if dialect != "sqlite":
        pytest.skip("the WAL is SQLite's")
    database = sqlite_path(app.store.url)
    connection = sqlite3.connect(str(database), isolation_level=None)
    connection.execute("BEGIN")
    connection.execute("SELECT count(*) FROM s_tasks").fetchone()
    yield connection
    connection.close()


def grow_wal(app: Stask, past: int) -> int:
    while (size := wal_of(app).stat().st_size) < past:
        app.create_many([("mailer", "send", {"to": "x" * 500})] * 200)
    return size


def test_a_runner_resets_a_wal_that_a_reader_held_back(
    app: Stask,
    reader: sqlite3.Connection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(dialects_module, "WAL_RESET_BYTES", SMALL_WAL)
    monkeypatch.setattr(dialects_module, "WAL_RESET_WAIT_MS", 50)
    grown = grow_wal(app, 4 * SMALL_WAL)
    created = app.count()
    runner = Runner(app, RunnerOptions(concurrency=1))
    caplog.set_level(logging.INFO, logger="stask.db")

    runner.tick()  # the reader still holds its snapshot: checkpointed, not reset
    assert wal_of(app).stat().st_size >= grown
    assert "readers still used it" in caplog.text

    reader.execute("COMMIT")
    runner.tick()
    assert wal_of(app).stat().st_size == 0
    assert "checkpointed and truncated" in caplog.text
    assert app.count() == created  # everything the WAL held is in the database file


def test_a_wal_under_the_limit_is_left_to_sqlite(
    app: Stask, reader: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    reader.execute("COMMIT")
    grow_wal(app, SMALL_WAL)
    size = wal_of(app).stat().st_size
    assert size < dialects_module.WAL_RESET_BYTES
    caplog.set_level(logging.INFO, logger="stask.db")
    app.store.housekeeping.maintain()
    assert wal_of(app).stat().st_size == size
    assert caplog.text == ""


def test_run_pending_resets_it_too(
    app: Stask, reader: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hosts without a daemon run `stask run-pending` from cron: each batch checks the WAL."""
    monkeypatch.setattr(dialects_module, "WAL_RESET_BYTES", SMALL_WAL)
    grow_wal(app, 2 * SMALL_WAL)
    reader.execute("COMMIT")
    assert app.process_pending(batch_size=1) == 1
    assert wal_of(app).stat().st_size == 0
