"""The SQLite wake file: touched after an enqueue commits, watched with inotify."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import make_url

from stask import Stask
from stask.db import wakefile
from stask.db.engine import build_engine, parse_url
from stask.db.migrate import upgrade
from stask.models import utcnow
from tests.conftest import TEST_WORKERS


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////data/stask.db", "/data/stask.db-stask-wake"),
        ("sqlite:///rel/stask.db", "rel/stask.db-stask-wake"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:shared?mode=memory&cache=shared&uri=true", None),
    ],
)
def test_wake_path(url: str, expected: str | None) -> None:
    path = wakefile.wake_path(make_url(url))
    assert (None if path is None else str(path)) == expected


def test_watcher_wakes_on_touch_and_survives_the_file_being_removed(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite-stask-wake"
    woken = threading.Semaphore(0)
    watcher = wakefile.FileWatcher(path, woken.release)
    watcher.start()
    try:
        assert watcher.listening.wait(5)
        assert path.exists()  # created by the watcher, so the first enqueue has a file to touch
        wakefile.touch(path)
        assert woken.acquire(timeout=5)
        path.unlink()
        # The watch is re-established on a new file, and touches reach the runner again.
        assert wait_for(lambda: watcher.watches == 2 and watcher.listening.is_set())
        assert path.exists()
        seen = watcher.received
        wakefile.touch(path)
        assert wait_for(lambda: watcher.received > seen)
    finally:
        started = time.monotonic()
        watcher.stop()
        stopped_in = time.monotonic() - started
    assert not any(t.name == "stask-wake-file" and t.is_alive() for t in threading.enumerate())
    assert stopped_in < 5  # stop() unblocks select() through its pipe rather than a timeout


def test_touch_creates_a_missing_file_and_ignores_an_unwritable_folder(tmp_path: Path) -> None:
    path = tmp_path / "x-stask-wake"
    wakefile.touch(path)
    assert path.exists()
    wakefile.touch(tmp_path / "missing-folder" / "x-stask-wake")  # logged, never raised


def test_an_insert_of_due_tasks_touches_the_file_once_committed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = build_engine(url, create=True)
    upgrade(engine)
    engine.dispose()
    app = Stask(database_url=url, storage=tmp_path / "s", workers=TEST_WORKERS)
    try:
        app.discover()
        path = wakefile.wake_path(parse_url(url))
        assert path is not None
        assert not path.exists()
        app.create("mailer", "send", run_at=utcnow() + dt.timedelta(hours=1))
        assert not path.exists()  # not due: nothing for a runner to do now
        app.create("mailer", "send")
        assert path.exists()
        before = path.stat().st_mtime_ns
        time.sleep(0.01)
        app.create_many([("mailer", "send")] * 20)
        assert path.stat().st_mtime_ns > before
    finally:
        app.close()
