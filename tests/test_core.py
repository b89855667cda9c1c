"""The worker contract and the ``Stask`` facade, on every database dialect."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import os
import sys
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from stask import BaseWorker, Priority, Stask, Status, Task, TaskContext
from stask.core.context import PROGRESS_INTERVAL_SECONDS, LeaseLost, TaskCancelled
from stask.core.registry import Registry
from stask.core.worker import normalize_action
from stask.db.tables import queue, task_logs, tasks
from stask.errors import (
    ConfigError,
    DatabaseUnavailable,
    InvalidOptions,
    ResultNotFound,
    TaskNotFound,
    UnknownAction,
    UnknownWorker,
    ValidationError,
    WorkerDefinitionError,
    WorkerInactive,
)
from stask.models import Claim, JSONDict, utcnow
from tests import sample_workers
from tests.conftest import fresh_app

SAMPLE = "tests.sample_workers"
PROBE = "tests.probe_workers"
EXAMPLES = "stask.examples"
SPELLINGS = ["Sync-Stock", "syncStock", "sync stock", "SYNC_STOCK"]


# -- helpers -----------------------------------------------------------------------------------


def make_app(db_url: str, storage: Path, *modules: str) -> Stask:
    return Stask(database_url=db_url, storage=storage, workers=modules, use_entry_points=False)


def make_due(app: Stask, task_id: int) -> None:
    """Move a waiting task's run_at into the past, in the history and in the claimable set."""
    past = utcnow() - dt.timedelta(seconds=1)
    with app.store.engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(run_at=past))
        conn.execute(update(queue).where(queue.c.task_id == task_id).values(run_at=past))


def run_one(app: Stask, identifier: str, action: str, options: JSONDict | None = None) -> Task:
    """Create a task, run everything due, and return the task as stored afterwards."""
    task = app.create(identifier, action, options)
    assert app.process_pending() >= 1
    return app.get(task.id)


@pytest.fixture
def calls() -> Iterator[list[tuple[str, int]]]:
    """What the sample workers ran in this process, in order."""
    sample_workers.CALLS.clear()
    yield sample_workers.CALLS
    sample_workers.CALLS.clear()


@pytest.fixture
def probe_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, PROBE)


@pytest.fixture
def examples_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, EXAMPLES)


# -- action names ------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [*SPELLINGS, "  sync--stock ", "sync_stock"])
def test_normalize_action_spellings(spelling: str) -> None:
    assert normalize_action(spelling) == "sync_stock"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("exportCSVFile", "export_csv_file"), ("HTTPSync", "http_sync"), ("run2Now", "run2_now")],
)
def test_normalize_action_acronyms(name: str, expected: str) -> None:
    assert normalize_action(name) == expected


def test_create_with_any_spelling_stores_normalized_action(app: Stask) -> None:
    created = [app.create("inventory", spelling, {"rows": 1}) for spelling in SPELLINGS]
    assert {task.action for task in created} == {"sync_stock"}
    assert app.count(action="Sync-Stock") == len(SPELLINGS)
    assert app.process_pending() == len(SPELLINGS)
    assert {app.get(task.id).status for task in created} == {Status.COMPLETED}


def test_action_methods_normalize_and_clash() -> None:
    class Camel(BaseWorker):
        identifier = "camel"

        def task_syncStock(self, task: TaskContext, options: dict[str, Any]) -> None:
            pass

    assert Camel.actions() == {"sync_stock": "task_syncStock"}

    class Clash(Camel):
        identifier = "clash"

        def task_sync_stock(self, task: TaskContext, options: dict[str, Any]) -> None:
            pass

    with pytest.raises(WorkerDefinitionError, match="sync_stock"):
        Clash.validate()


# -- worker settings ---------------------------------------------------------------------------


def test_settings_defaults_merged_with_stored(app: Stask) -> None:
    defaults = {"api": {"url": "https://example.invalid", "timeout": 30}, "batch": 10}
    assert app.worker("inventory").settings == defaults

    app.set_config("inventory", "api.timeout", 60)

    assert app.worker("inventory").settings == {
        "api": {"url": "https://example.invalid", "timeout": 60},
        "batch": 10,
    }
    assert app.get_config("inventory", "api.timeout") == 60
    assert app.get_config("inventory", "api.url") == "https://example.invalid"
    # Only what was set is stored; defaults stay in code.
    row = app.store.workers.get("inventory")
    assert row is not None
    assert row.settings == {"api": {"timeout": 60}}


def test_config_persists_for_a_new_instance(app: Stask, db_url: str, storage: Path) -> None:
    app.set_config("inventory", "api.timeout", 99)
    app.update_config("inventory", {"batch": 50, "api.url": "https://shop.test", "new": [1, 2]})

    other = make_app(db_url, storage, SAMPLE)
    try:
        assert other.get_config("inventory", "api.timeout") == 99
        assert other.get_config("inventory", "api.url") == "https://shop.test"
        assert other.get_config("inventory", "batch") == 50
        assert other.get_config("inventory", "new") == [1, 2]
        assert other.get_config("inventory", "api.missing", "fallback") == "fallback"
        assert other.get_config("inventory") == {
            "api": {"url": "https://shop.test", "timeout": 99},
            "batch": 50,
            "new": [1, 2],
        }
    finally:
        other.close()


def test_set_config_creates_nested_dicts(app: Stask) -> None:
    app.set_config("mailer", "a.b.c", 1)
    app.set_config("inventory", "batch.size", 5)  # replaces the scalar default

    assert app.get_config("mailer", "a") == {"b": {"c": 1}}
    row = app.store.workers.get("mailer")
    assert row is not None
    assert row.settings == {"a": {"b": {"c": 1}}}
    assert app.get_config("inventory", "batch") == {"size": 5}


def test_config_rejects_malformed_keys(app: Stask) -> None:
    for key in ("", "a..b", ".a"):
        with pytest.raises(ValidationError, match="config key"):
            app.set_config("inventory", key, 1)


def test_config_of_unknown_worker(app: Stask) -> None:
    with pytest.raises(UnknownWorker, match="ghost"):
        app.get_config("ghost", "a")
    with pytest.raises(UnknownWorker, match="ghost"):
        app.set_config("ghost", "a", 1)
    with pytest.raises(UnknownWorker, match="ghost"):
        app.update_config("ghost", {"a": 1})


def test_action_reads_config(app: Stask) -> None:
    app.set_config("inventory", "api.timeout", 5)
    done = run_one(app, "inventory", "config")
    assert done.result == {"timeout": 5, "batch": 10}


# -- discovery ---------------------------------------------------------------------------------


def test_discover_registers_metadata(app: Stask) -> None:
    app.store.housekeeping.truncate_all()
    found = {info.identifier: info for info in app.discover()}

    assert set(found) == {"inventory", "mailer"}
    inventory = found["inventory"]
    assert inventory.class_path == "tests.sample_workers:Inventory"
    assert (inventory.scope, inventory.title, inventory.icon) == ("shop", "Inventory", "box")
    assert {"sync_stock", "async_echo", "export"} <= set(inventory.actions)
    assert inventory.active
    assert not inventory.orphaned


def test_discover_keeps_stored_settings(app: Stask, db_url: str, storage: Path) -> None:
    app.set_config("inventory", "batch", 77)
    assert app.discover() == []

    wider = make_app(db_url, storage, SAMPLE, PROBE)
    try:
        assert [info.identifier for info in wider.discover()] == ["probe"]
    finally:
        wider.close()

    assert app.get_config("inventory", "batch") == 77
    assert {info.identifier for info in app.workers()} == {"inventory", "mailer", "probe"}


def test_rescan_refreshes_metadata_only(app: Stask) -> None:
    app.deactivate("inventory")
    app.set_config("inventory", "batch", 5)
    app.store.workers.update("inventory", {"title": "Old title", "actions": ["gone"]})

    updated = app.rescan()

    assert [info.identifier for info in updated] == ["inventory"]
    info = app.worker("inventory")
    assert info.title == "Inventory"
    assert "sync_stock" in info.actions
    assert "gone" not in info.actions
    assert not info.active  # an operator's choice, not metadata
    assert app.get_config("inventory", "batch") == 5
    assert app.rescan() == []


def _register_gone_worker(app: Stask) -> None:
    assert app.store.workers.insert(
        {
            "identifier": "legacy",
            "class_path": "tests.nowhere:Gone",
            "scope": "old",
            "title": "Legacy",
            "description": "",
            "icon": "cog",
            "actions": ["run"],
            "active": True,
            "position": 9,
            "settings": {},
        }
    )


def test_unimportable_worker_is_orphaned_and_never_run(app: Stask) -> None:
    _register_gone_worker(app)
    orphaned = {info.identifier: info.orphaned for info in app.workers()}
    assert orphaned == {"inventory": False, "mailer": False, "legacy": True}

    task = app.create("legacy", "run")
    assert app.process_pending() == 0
    assert app.get(task.id).status is Status.PENDING
    # Its settings stay editable although its class is gone.
    app.set_config("legacy", "x", 1)
    assert app.get_config("legacy", "x") == 1


def test_clean_orphaned_removes_worker_keeps_tasks(app: Stask) -> None:
    _register_gone_worker(app)
    task = app.create("legacy", "run")

    assert app.clean_orphaned() == ["legacy"]

    assert {info.identifier for info in app.workers()} == {"inventory", "mailer"}
    assert app.get(task.id).identifier == "legacy"
    with pytest.raises(UnknownWorker):
        app.create("legacy", "run")
    assert app.clean_orphaned() == []


def test_stale_class_path_of_a_runnable_worker(app: Stask) -> None:
    """A moved class: the identifier still runs here, so it is not orphaned; rescan fixes it."""
    app.store.workers.update("mailer", {"class_path": "tests.nowhere:Gone"})

    assert not app.worker("mailer").orphaned
    assert app.clean_orphaned() == []
    assert [info.class_path for info in app.rescan()] == ["tests.sample_workers:Mailer"]
    done = run_one(app, "mailer", "send", {"to": "x"})
    assert done.status is Status.COMPLETED


def test_activate_and_deactivate(app: Stask) -> None:
    assert not app.deactivate("mailer").active
    assert [info.identifier for info in app.workers(active_only=True)] == ["inventory"]
    with pytest.raises(WorkerInactive, match="mailer"):
        app.create("mailer", "send")

    assert app.activate("mailer").active
    assert app.create("mailer", "send").status is Status.PENDING
    with pytest.raises(UnknownWorker):
        app.deactivate("ghost")


def test_tasks_of_inactive_worker_wait(app: Stask, calls: list[tuple[str, int]]) -> None:
    task = app.create("mailer", "send", {"to": "a@example.test"})
    app.deactivate("mailer")

    assert app.process_pending() == 0
    assert app.get(task.id).status is Status.PENDING
    assert calls == []

    app.activate("mailer")
    assert app.process_pending() == 1
    done = app.get(task.id)
    assert done.status is Status.COMPLETED
    assert done.result == {"sent": "a@example.test"}


# -- registry errors (no database) -------------------------------------------------------------


def _module(monkeypatch: pytest.MonkeyPatch, name: str, *classes: type[BaseWorker]) -> str:
    module = types.ModuleType(name)
    for cls in classes:
        setattr(module, cls.__name__, cls)
    monkeypatch.setitem(sys.modules, name, module)
    return name


def test_registry_module_that_does_not_import() -> None:
    with pytest.raises(ConfigError, match=r"tests\.no_such_module"):
        Registry(["tests.no_such_module"], use_entry_points=False).classes()


def test_registry_module_that_fails_while_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stask_broken_workers.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"stask_broken_workers.*boom"):
        Registry(["stask_broken_workers"], use_entry_points=False).classes()


def test_registry_two_classes_one_identifier(monkeypatch: pytest.MonkeyPatch) -> None:
    class First(BaseWorker):
        identifier = "inventory"

        def task_run(self, task: TaskContext, options: dict[str, Any]) -> None:
            pass

    name = _module(monkeypatch, "tests.fake_twins", First)
    with pytest.raises(WorkerDefinitionError, match=r"Inventory.*First|First.*Inventory"):
        Registry([SAMPLE, name], use_entry_points=False).classes()


class _Runs(BaseWorker):
    def task_run(self, task: TaskContext, options: dict[str, Any]) -> None:
        pass


class _NoActions(BaseWorker):
    identifier = "no_actions"

    def run(self) -> None:
        pass


class _BadIdentifier(_Runs):
    identifier = "Bad-Name"


class _DigitIdentifier(_Runs):
    identifier = "9lives"


class _NoAttempts(_Runs):
    identifier = "no_attempts"
    max_attempts = 0


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (_NoActions, "no actions"),
        (_BadIdentifier, "Bad-Name"),
        (_DigitIdentifier, "9lives"),
        (_NoAttempts, "max_attempts"),
    ],
)
def test_registry_rejects_bad_worker_classes(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseWorker], message: str
) -> None:
    name = _module(monkeypatch, "tests.fake_bad", cls)
    with pytest.raises(WorkerDefinitionError, match=message):
        Registry([name], use_entry_points=False).classes()


def test_registry_skips_bases_without_identifier(monkeypatch: pytest.MonkeyPatch) -> None:
    class Real(_Runs):
        identifier = "real"

    name = _module(monkeypatch, "tests.fake_bases", BaseWorker, _Runs, Real)
    assert Registry([name], use_entry_points=False).classes() == {"real": Real}


# -- creating tasks ----------------------------------------------------------------------------


def test_create_unknown_worker_lists_registered(app: Stask) -> None:
    with pytest.raises(UnknownWorker, match=r"'ghost'.*inventory, mailer"):
        app.create("ghost", "run")


def test_create_unknown_action_lists_actions(app: Stask) -> None:
    with pytest.raises(UnknownAction, match=r"'fly'.*async_echo.*sync_stock") as caught:
        app.create("inventory", "fly")
    assert "give_up" in caught.value.message


@pytest.mark.parametrize(
    "value",
    [dt.datetime(2024, 1, 1), object(), {"nested": {1, 2}}, float("nan")],
    ids=["datetime", "object", "nested-set", "nan"],
)
def test_create_rejects_non_json_options(app: Stask, value: object) -> None:
    with pytest.raises(InvalidOptions, match="'when'"):
        app.create("inventory", "sync_stock", {"rows": 1, "when": value})
    with pytest.raises(InvalidOptions, match="'when'"):
        app.create_many([("mailer", "send"), ("inventory", "sync_stock", {"when": value})])
    assert app.count() == 0
    assert app.store.task_reads.queued_count() == 0


def test_create_rejects_bad_priority_attempts_and_queue(app: Stask) -> None:
    with pytest.raises(ValidationError, match="urgent"):
        app.create("mailer", "send", priority="urgent")
    with pytest.raises(ValidationError, match="max_attempts"):
        app.create("mailer", "send", max_attempts=0)
    with pytest.raises(ValidationError, match="non-empty string, got ''"):
        app.create("mailer", "send", queue="")
    with pytest.raises(ValidationError, match="101 characters"):
        app.create_many(
            [("mailer", "send"), {"identifier": "mailer", "action": "send", "queue": "q" * 101}]
        )
    assert app.count() == 0


def test_create_returns_frozen_pending_task(app: Stask) -> None:
    task = app.create("inventory", "syncStock", {"rows": 2}, priority="HIGH", started_by="ann")

    assert isinstance(task, Task)
    assert task.status is Status.PENDING
    assert task.priority is Priority.HIGH
    assert task.to_dict()["priority"] == "high"
    assert task.to_dict()["status"] == "pending"
    assert task.options == {"rows": 2}
    assert (task.attempts, task.max_attempts) == (0, 2)  # Inventory.max_attempts
    assert task.started_by == "ann"
    assert app.get(task.id) == task
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(task, "status", Status.FAILED)  # noqa: B010 - assignment is what is refused


def test_run_at_in_future_waits_until_due(app: Stask) -> None:
    zone = dt.timezone(dt.timedelta(hours=3))
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).astimezone(zone)
    task = app.create("inventory", "sync_stock", {"rows": 1}, run_at=when)

    assert task.run_at == when.astimezone(dt.UTC).replace(tzinfo=None)
    assert task.display_status == "scheduled"
    assert app.process_pending() == 0

    make_due(app, task.id)
    assert app.process_pending() == 1
    assert app.get(task.id).status is Status.COMPLETED


# -- running -----------------------------------------------------------------------------------


def test_process_pending_batch_size_and_claim_order(
    app: Stask, calls: list[tuple[str, int]]
) -> None:
    low = app.create("inventory", "sync_stock", {"rows": 1}, priority="low")
    normal = app.create("mailer", "send")
    high = app.create("inventory", "sync_stock", {"rows": 1}, priority="high")
    normal_later = app.create("mailer", "send")

    assert app.process_pending(batch_size=2) == 2
    assert [task_id for _, task_id in calls] == [high.id, normal.id]
    assert app.get(low.id).status is Status.PENDING

    assert app.process_pending(batch_size=10) == 2
    assert [task_id for _, task_id in calls] == [high.id, normal.id, normal_later.id, low.id]
    assert app.process_pending() == 0
    with pytest.raises(ValidationError):
        app.process_pending(batch_size=0)


def test_return_value_becomes_result(app: Stask) -> None:
    done = run_one(app, "inventory", "sync_stock", {"rows": 5, "echo": "hi"})

    assert done.status is Status.COMPLETED
    assert done.result == {"synced": 5, "echo": "hi"}
    assert (done.progress, done.processed, done.total) == (100, 5, 5)
    assert done.message == "Row **5**"
    assert done.attempts == 1
    assert done.started_at is not None
    assert done.finished_at is not None
    assert done.duration_ms is not None
    assert done.eta_seconds == 0
    [entry] = app.get_logs(done.id)
    assert (entry.level, entry.message, entry.context) == ("info", "synced", {"rows": 5})


def test_mark_finished_wins_over_return_value(app: Stask) -> None:
    done = run_one(app, "inventory", "finish_early")
    assert done.status is Status.COMPLETED
    assert done.result == {"early": True}
    assert done.message == "All done early"


def test_mark_failed_fails_without_retry(app: Stask) -> None:
    done = run_one(app, "inventory", "give_up")

    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.message == "Validation failed: file is required"
    assert app.store.task_reads.queued_count() == 0
    assert app.process_pending() == 0


def test_exception_retries_then_fails_with_traceback(app: Stask) -> None:
    task = app.create("inventory", "fail")
    assert app.process_pending() == 1

    first = app.get(task.id)
    assert first.status is Status.PENDING
    assert first.attempts == 1
    assert first.error is not None
    assert "Traceback" in first.error
    assert "RuntimeError: broken on attempt 1" in first.error
    assert first.message is not None
    assert first.message.startswith("Attempt 1 of 2 failed: RuntimeError: broken on attempt 1")
    assert first.display_status == "retrying"
    assert first.run_at > utcnow()
    assert app.process_pending() == 0  # backing off

    make_due(app, task.id)
    assert app.process_pending() == 1

    last = app.get(task.id)
    assert last.status is Status.FAILED
    assert last.attempts == 2
    assert last.message == "RuntimeError: broken on attempt 2"
    assert last.error is not None
    assert "Traceback" in last.error
    assert "broken on attempt 2" in last.error
    assert app.store.task_reads.queued_count() == 0
    errors = app.get_error_logs(task.id)
    assert [entry.context["attempt"] for entry in errors] == [1, 2]
    assert "broken on attempt 2" in errors[-1].context["traceback"]
    assert app.process_pending() == 0


def test_non_json_return_value_fails_clearly(app: Stask) -> None:
    done = run_one(app, "inventory", "not_json")
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.message is not None
    assert "not JSON" in done.message
    assert done.result is None


def test_path_result_is_downloadable(app: Stask, storage: Path) -> None:
    done = run_one(app, "inventory", "export")

    assert done.status is Status.COMPLETED
    content = "id,name\n1,a\n"
    assert done.result == {
        "file": f"tasks/{done.id}/out.csv",
        "name": "out.csv",
        "size": len(content),
    }
    path = app.result_file(done.id)
    assert path.read_text(encoding="utf-8") == content
    assert storage.resolve() in path.parents

    path.unlink()
    with pytest.raises(ResultNotFound, match="gone"):
        app.result_file(done.id)


def test_result_file_of_task_without_file(app: Stask) -> None:
    done = run_one(app, "mailer", "send", {"to": "x"})
    with pytest.raises(ResultNotFound):
        app.result_file(done.id)
    with pytest.raises(TaskNotFound):
        app.result_file(done.id + 1000)


def test_path_result_outside_storage_fails(probe_app: Stask, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("no", encoding="utf-8")
    done = run_one(probe_app, "probe", "outside", {"path": str(outside)})
    assert done.status is Status.FAILED
    assert done.message is not None
    assert "not a file under storage" in done.message


def test_async_action_runs(app: Stask) -> None:
    done = run_one(app, "inventory", "async_echo", {"value": 7})
    assert done.status is Status.COMPLETED
    assert done.result == {"async": True, "value": 7}
    assert done.message == "half"
    assert done.progress == 100


def test_progress_lands_while_the_action_runs(probe_app: Stask) -> None:
    done = run_one(probe_app, "probe", "observe")
    assert done.result == {"progress": 25, "processed": 1, "message": "A **quarter**"}
    assert (done.progress, done.processed, done.total) == (100, 1, 4)


def test_failed_task_keeps_the_progress_it_reached(probe_app: Stask) -> None:
    done = run_one(probe_app, "probe", "partial")
    assert done.status is Status.FAILED
    assert (done.progress, done.processed, done.total) == (30, 3, 10)
    assert done.message == "stopped at three"


# -- TaskContext (no database) -----------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeSink:
    """Records what a context sends; answers the cancel flag (None: the task was lost)."""

    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []
        self.logs: list[JSONDict] = []
        self.flag: bool | None = False
        self.cancel_checks = 0

    def save_progress(self, claim: Claim, values: Mapping[str, Any]) -> bool | None:
        self.writes.append(dict(values))
        return self.flag

    def cancel_requested(self, claim: Claim) -> bool | None:
        self.cancel_checks += 1
        return self.flag

    def write_logs(self, entries: list[JSONDict]) -> None:
        self.logs.extend(entries)


def make_task(**changes: Any) -> Task:
    now = utcnow()
    values: dict[str, Any] = {
        "id": 7,
        "identifier": "inventory",
        "action": "sync_stock",
        "status": Status.RUNNING,
        "priority": Priority.NORMAL,
        "queue": "default",
        "options": {},
        "result": None,
        "progress": 0,
        "processed": 0,
        "total": 0,
        "eta_seconds": None,
        "message": None,
        "error": None,
        "attempts": 1,
        "max_attempts": 3,
        "run_at": now,
        "unique_key": None,
        "started_by": None,
        "locked_by": "node",
        "locked_at": now,
        "cancel_requested": False,
        "created_at": now,
        "started_at": now,
        "finished_at": None,
        "updated_at": now,
        "duration_ms": None,
        "peak_memory": None,
    }
    values.update(changes)
    return Task(**values)


def make_context(
    tmp_path: Path, sink: FakeSink | None = None, clock: FakeClock | None = None
) -> TaskContext:
    return TaskContext(make_task(), sink or FakeSink(), tmp_path, clock=clock or FakeClock())


@pytest.mark.parametrize(
    ("processed", "total", "percent"),
    [(0, 3, 0), (1, 3, 33), (2, 3, 66), (3, 3, 100), (7, 3, 100), (5, 0, 0)],
)
def test_percent_from_processed_and_total(
    tmp_path: Path, processed: int, total: int, percent: int
) -> None:
    ctx = make_context(tmp_path)
    ctx.progress(processed=processed, total=total)
    assert ctx.percent == percent
    assert type(ctx.percent) is int


@pytest.mark.parametrize("bad", [101, -1, 50.5, True, "50"])
def test_percent_outside_range_or_not_int(tmp_path: Path, bad: Any) -> None:
    ctx = make_context(tmp_path)
    with pytest.raises(ValidationError, match="percent"):
        ctx.progress(percent=bad)
    ctx.progress(percent=100)
    assert ctx.percent == 100


def test_negative_counts_refused(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    with pytest.raises(ValidationError, match="processed"):
        ctx.progress(processed=-1)
    with pytest.raises(ValidationError, match="total"):
        ctx.progress(total=-1)


def test_eta_from_observed_rate(tmp_path: Path) -> None:
    clock = FakeClock()
    ctx = make_context(tmp_path, clock=clock)

    ctx.progress(processed=0, total=100)
    assert ctx.eta_seconds is None  # no rate yet

    clock.advance(10)
    ctx.progress(processed=10)
    assert ctx.eta_seconds == 90

    clock.advance(30)  # slower now: 40 s for 20 %
    ctx.progress(processed=20)
    assert ctx.eta_seconds == 160

    ctx.progress(processed=100)
    assert ctx.eta_seconds == 0


def test_progress_writes_are_throttled(tmp_path: Path) -> None:
    sink = FakeSink()
    clock = FakeClock()
    ctx = make_context(tmp_path, sink, clock)

    for i in range(1, 1001):
        ctx.progress(processed=i, total=1000, message=f"row {i}")
    assert len(sink.writes) <= 1
    assert ctx.processed == 1000  # the latest value is kept for the final write

    clock.advance(PROGRESS_INTERVAL_SECONDS + 0.01)
    ctx.progress(processed=1000, total=1000, message="row 1000")
    assert len(sink.writes) == 2
    assert sink.writes[-1]["progress"] == 100
    assert sink.writes[-1]["message"] == "row 1000"

    clock.advance(PROGRESS_INTERVAL_SECONDS + 0.01)
    ctx.progress(processed=1000, total=1000)  # nothing changed: nothing to write
    assert len(sink.writes) == 2


def test_cancel_from_progress_raises_task_cancelled(tmp_path: Path) -> None:
    assert issubclass(TaskCancelled, BaseException)
    assert not issubclass(TaskCancelled, Exception)
    sink = FakeSink()
    sink.flag = True
    ctx = make_context(tmp_path, sink)

    def action() -> None:
        try:
            ctx.progress(processed=1, total=10)
        except Exception:  # what careless action code does; it must not swallow a cancel
            pytest.fail("TaskCancelled was caught as an Exception")

    with pytest.raises(TaskCancelled):
        action()


def test_check_cancelled_polls_the_sink(tmp_path: Path) -> None:
    sink = FakeSink()
    clock = FakeClock()
    ctx = make_context(tmp_path, sink, clock)
    ctx.check_cancelled()
    assert sink.cancel_checks == 0  # just started: too soon to ask

    clock.advance(1)
    ctx.check_cancelled()
    assert sink.cancel_checks == 1

    sink.flag = True
    clock.advance(1)
    with pytest.raises(TaskCancelled):
        ctx.check_cancelled()


def test_lost_task_raises_lease_lost(tmp_path: Path) -> None:
    sink = FakeSink()
    sink.flag = None
    ctx = make_context(tmp_path, sink)
    with pytest.raises(LeaseLost):
        ctx.progress(processed=1, total=2)


def test_storage_path_stays_in_the_task_folder(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    folder = ctx.storage_path()
    assert folder == tmp_path / "tasks" / "7"
    assert folder.is_dir()
    assert ctx.storage_path("out.csv") == (folder / "out.csv").resolve()
    for escape in ("../x", "../../etc/passwd", "/etc/passwd", ""):
        with pytest.raises(ValidationError, match="storage folder"):
            ctx.storage_path(escape)


def test_context_log_levels_and_flush(tmp_path: Path) -> None:
    sink, clock = FakeSink(), FakeClock()
    ctx = make_context(tmp_path, sink, clock)
    with pytest.raises(ValidationError, match="verbose"):
        ctx.log("verbose", "nope")
    ctx.log("WARNING", "careful", line=3)
    ctx.log("info", "still batched")
    assert sink.logs == []  # lines are batched, not one INSERT each
    clock.advance(0.3)
    ctx.log("info", "third")
    assert [(e["level"], e["message"], e["context"]) for e in sink.logs] == [
        ("warning", "careful", {"line": 3}),
        ("info", "still batched", None),
        ("info", "third", None),
    ]
    ctx.log("info", "left for the end")
    assert [e["message"] for e in ctx.pending_logs()] == ["left for the end"]


def test_context_config(tmp_path: Path) -> None:
    assert make_context(tmp_path).config("a", "dflt") == "dflt"
    settings = {"api": {"timeout": 5}}

    def lookup(key: str | None, default: Any) -> Any:
        return settings["api"]["timeout"] if key == "api.timeout" else default

    ctx = TaskContext(make_task(), FakeSink(), tmp_path, config=lookup, clock=FakeClock())
    assert ctx.config("api.timeout") == 5
    assert ctx.config("other", 1) == 1


# -- logs API ----------------------------------------------------------------------------------


def test_logs_api(app: Stask) -> None:
    task = app.create("mailer", "send")
    other = app.create("mailer", "send")
    app.log(task.id, "info", "first", key=1)
    app.log(task.id, "warning", "second")
    app.log(task.id, "error", "third", code=7)
    app.log(task.id, "CRITICAL", "fourth")
    app.log(other.id, "error", "elsewhere")

    logs = app.get_logs(task.id)
    assert [(e.level, e.message) for e in logs] == [
        ("info", "first"),
        ("warning", "second"),
        ("error", "third"),
        ("critical", "fourth"),
    ]
    assert logs[0].context == {"key": 1}
    assert logs[1].context == {}
    assert [e.message for e in app.get_last_logs(task.id, 2)] == ["third", "fourth"]
    assert [e.message for e in app.get_error_logs(task.id)] == ["third", "fourth"]
    assert [e.message for e in app.get_logs(task.id, after_id=logs[1].id)] == ["third", "fourth"]

    assert app.clear_logs(task.id) == 4
    assert app.get_logs(task.id) == []
    assert [e.message for e in app.get_logs(other.id)] == ["elsewhere"]


def test_log_unknown_level(app: Stask) -> None:
    task = app.create("mailer", "send")
    with pytest.raises(ValidationError, match="verbose"):
        app.log(task.id, "verbose", "nope")
    assert app.get_logs(task.id) == []


# -- example workers ---------------------------------------------------------------------------


def test_examples_are_discovered(examples_app: Stask) -> None:
    found = {info.identifier: info for info in examples_app.workers()}
    assert set(found) == {"product_import", "product_export", "sales_report", "cleanup"}
    assert found["product_import"].scope == "shop"
    assert found["product_import"].actions == ("import",)
    assert found["cleanup"].scope == "system"
    assert found["cleanup"].settings == {"days": 30}


def test_example_import_of_generated_sample(examples_app: Stask) -> None:
    done = run_one(examples_app, "product_import", "import", {"rows": 60, "delay": 0})

    assert done.status is Status.COMPLETED
    assert done.result == {"imported": 59, "skipped": 1}  # the sample breaks every 50th price
    assert (done.progress, done.processed, done.total) == (100, 60, 60)
    [warning] = [e for e in examples_app.get_logs(done.id) if e.level == "warning"]
    assert warning.message.startswith("Line 51:")
    assert warning.context == {"line": 51, "sku": "SKU-00050"}


def test_example_import_counts_bad_prices(examples_app: Stask, tmp_path: Path) -> None:
    source = tmp_path / "products.csv"
    source.write_text(
        "sku,name,price,stock\nA1,Mug,4.50,3\nA2,Lamp,abc,1\nA3,Pen,1,10\n",
        encoding="utf-8-sig",  # with a byte order mark, as Excel saves it
    )
    done = run_one(examples_app, "product_import", "import", {"file": str(source), "delay": 0})

    assert done.status is Status.COMPLETED
    assert done.result == {"imported": 2, "skipped": 1}
    assert done.message == "Imported **2** products, skipped 1"
    [warning] = examples_app.get_logs(done.id)
    assert warning.level == "warning"
    assert "Line 3" in warning.message
    assert "'abc'" in warning.message


def test_example_import_missing_file_fails(examples_app: Stask, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    done = run_one(examples_app, "product_import", "import", {"file": str(missing)})
    assert done.status is Status.FAILED
    assert done.attempts == 1
    assert done.message == f"Import file not found: {missing}"


def test_example_options_given_as_text(examples_app: Stask) -> None:
    done = run_one(examples_app, "product_export", "export", {"rows": "3", "delay": "0"})
    assert done.status is Status.COMPLETED
    assert (done.processed, done.total) == (3, 3)

    bad = run_one(examples_app, "product_export", "export", {"rows": "many"})
    assert bad.status is Status.FAILED
    assert bad.attempts == 1
    assert bad.message is not None
    assert "'rows'" in bad.message


def test_example_export_is_downloadable_and_deterministic(examples_app: Stask) -> None:
    first = run_one(examples_app, "product_export", "export", {"rows": 25, "delay": 0})
    second = run_one(examples_app, "product_export", "export", {"rows": 25, "delay": 0})

    assert first.status is Status.COMPLETED
    assert first.result["name"] == "products.csv"
    assert (first.progress, first.processed, first.total) == (100, 25, 25)
    data = examples_app.result_file(first.id).read_bytes()
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == ["sku", "name", "price", "stock"]
    assert len(rows) == 26
    assert first.result["size"] == len(data)
    assert examples_app.result_file(second.id).read_bytes() == data


def test_example_sales_report(examples_app: Stask) -> None:
    done = run_one(examples_app, "sales_report", "generate", {"rows": 30, "delay": 0})

    assert done.status is Status.COMPLETED
    assert done.progress == 100
    assert done.result["name"].endswith(".md")
    report = examples_app.result_file(done.id).read_text(encoding="utf-8")
    assert report.startswith("# Sales report")
    assert "30 sales" in report
    assert "## Revenue by region" in report


def test_example_cleanup(examples_app: Stask, storage: Path) -> None:
    app = examples_app
    old = utcnow() - dt.timedelta(days=40)
    stale = run_one(app, "product_export", "export", {"rows": 1, "delay": 0})
    fresh = run_one(app, "product_export", "export", {"rows": 1, "delay": 0})
    app.log(fresh.id, "info", "old line")
    app.log(fresh.id, "info", "new line")
    with app.store.engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id == stale.id).values(finished_at=old))
        conn.execute(update(task_logs).where(task_logs.c.message == "old line").values(ts=old))
    orphan = storage / "tasks" / "999999"
    orphan.mkdir(parents=True)
    os.utime(orphan, (time.time() - 40 * 86400,) * 2)

    # Retention from the worker's settings: 45 days keeps everything.
    app.set_config("cleanup", "days", 45)
    kept = run_one(app, "cleanup", "clean")
    assert kept.result == {"tasks": 0, "logs": 0, "files": 0}

    done = run_one(app, "cleanup", "clean", {"days": 30})

    assert done.status is Status.COMPLETED
    assert done.result == {"tasks": 1, "logs": 1, "files": 1}
    with pytest.raises(TaskNotFound):
        app.get(stale.id)
    assert [e.message for e in app.get_logs(fresh.id)] == ["new line"]
    assert not orphan.exists()
    assert app.result_file(fresh.id).is_file()


def test_retry_snoozes_as_a_new_attempt_without_using_the_failure_budget(
    probe_app: Stask,
) -> None:
    created = probe_app.create("probe", "snooze", {"after": 3600})
    assert probe_app.process_pending() == 1
    done = probe_app.get(created.id)
    assert done.status is Status.PENDING
    # The run counted (task.attempt shows it), and the task got one attempt more for it.
    assert done.attempts == 1
    assert done.max_attempts == created.max_attempts + 1
    assert done.display_status == "retrying"
    assert done.message == "retry requested in 3600 s"
    assert probe_app.process_pending() == 0  # not due for an hour


def test_a_failed_log_write_keeps_the_lines(tmp_path: Path) -> None:
    class FlakySink(FakeSink):
        fail = True

        def write_logs(self, entries: list[dict[str, Any]]) -> None:
            if self.fail:
                raise DatabaseUnavailable("down")
            super().write_logs(entries)

    sink, clock = FlakySink(), FakeClock()
    ctx = make_context(tmp_path, sink, clock)
    clock.advance(1)
    ctx.log("info", "first")  # flush attempted and failed
    assert sink.logs == []
    sink.fail = False
    clock.advance(1)
    ctx.log("info", "second")
    assert [e["message"] for e in sink.logs] == ["first", "second"]
