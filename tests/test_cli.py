"""The `stask` command through its installed entry point, on every database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import text

import stask as stask_package
from stask import Stask, Status
from stask.cli import COMMANDS, cli
from stask.models import utcnow

STASK = str(Path(sys.executable).with_name("stask"))
REQUIRED_SHOW_KEYS = {
    "id", "identifier", "action", "status", "priority", "progress", "processed", "total",
    "eta_seconds", "message", "attempts", "result", "error", "created_at", "started_at",
    "finished_at",
}  # fmt: skip


def stask(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [STASK, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def stask_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(stask(env, *args, "--json").stdout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_create_run_show_and_logs(app: Stask, cli_env: dict[str, str]) -> None:
    created = stask_json(
        cli_env, "create", "inventory", "Sync-Stock", "-o", "rows=4", "-o", "echo.deep=true",
        "--priority", "high",
    )  # fmt: skip
    assert created["status"] == "pending"
    assert created["action"] == "sync_stock"
    assert created["options"] == {"rows": 4, "echo": {"deep": True}}

    shown = stask_json(cli_env, "show", str(created["id"]))
    assert set(shown) >= REQUIRED_SHOW_KEYS
    assert (shown["status"], shown["priority"]) == ("pending", "high")

    assert stask(cli_env, "run-pending").stdout.strip() == "Processed 1 task(s)."
    shown = stask_json(cli_env, "show", str(created["id"]))
    assert shown["status"] == "completed"
    assert (shown["progress"], shown["processed"], shown["total"]) == (100, 4, 4)
    assert shown["result"] == {"synced": 4, "echo": {"deep": True}}
    assert shown["attempts"] == 1
    assert shown["finished_at"] is not None

    listed = stask_json(cli_env, "tasks", "--status", "completed", "--worker", "inventory")
    assert [t["id"] for t in listed] == [created["id"]]
    assert "synced" in stask(cli_env, "logs", str(created["id"])).stdout
    assert "synced" in stask(cli_env, "logs", str(created["id"]), "--follow").stdout
    assert "Row 4" in stask(cli_env, "show", str(created["id"])).stdout  # Markdown rendered


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("create", "nope", "run"), ("no worker 'nope'", "inventory", "mailer")),
        (("create", "inventory", "fly"), ("no action 'fly'", "sync_stock")),
        (("create", "inventory", "sync_stock", "-o", "rows"), ("key=value",)),
        (("create", "inventory", "sync_stock", "-o", "=3"), ("key=value",)),
        (("create", "inventory", "sync_stock", "--priority", "urgent"), ("urgent",)),
        (("create", "inventory", "sync_stock", "--at", "tomorrow"), ("ISO-8601",)),
        (("run-pending", "--batch-size", "0"), ("batch-size",)),
        (("tasks", "--status", "sleeping"), ("sleeping",)),
    ],
)
def test_bad_input_is_a_usage_error_and_writes_nothing(
    app: Stask, cli_env: dict[str, str], args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    done = stask(cli_env, *args, code=2)
    assert_one_line_error(done, *fragments)
    assert done.stdout == ""
    assert app.count() == 0


def test_operational_errors_exit_1(app: Stask, cli_env: dict[str, str]) -> None:
    assert_one_line_error(stask(cli_env, "show", "987654", code=1), "987654")
    app.deactivate("inventory")
    assert_one_line_error(
        stask(cli_env, "create", "inventory", "sync_stock", code=1),
        "inactive",
        "stask workers activate inventory",
    )
    assert app.count() == 0
    task = app.create("mailer", "send")
    app.process_pending()
    assert_one_line_error(stask(cli_env, "cancel", str(task.id), code=1), "already completed")


def test_database_url_errors(tmp_path: Path, cli_env: dict[str, str]) -> None:
    bad = {**cli_env, "STASK_DATABASE_URL": "not a url"}
    assert_one_line_error(stask(bad, "tasks", code=2), "invalid database URL", "sqlite:///")
    other = {**cli_env, "STASK_DATABASE_URL": "oracle://scott@localhost/orcl"}
    assert_one_line_error(stask(other, "tasks", code=2), "unsupported database 'oracle'")
    down = {**cli_env, "STASK_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    assert_one_line_error(
        stask(down, "create", "inventory", "sync_stock", code=1), "127.0.0.1:1", "cannot use"
    )
    missing = tmp_path / "nowhere" / "stask.db"
    absent = {**cli_env, "STASK_DATABASE_URL": f"sqlite:///{missing}"}
    assert_one_line_error(stask(absent, "tasks", code=1), "stask migrate")
    assert not missing.exists()
    assert not missing.parent.exists()

    stask(absent, "migrate")
    assert missing.exists()
    assert stask_json(absent, "tasks") == []


def test_help_needs_no_database(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "STASK_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"}
    assert "run-pending" in stask(env, "--help").stdout
    assert "Usage" in stask(env, "create", "--help").stdout


def test_lazy_commands_match_their_modules() -> None:
    """`stask --help` shows the stored help of commands it does not import: keep it in step."""
    with click.Context(cli) as ctx:
        assert cli.list_commands(ctx) == sorted(COMMANDS)
        for name, lazy in COMMANDS.items():
            command = cli.get_command(ctx, name)
            assert command is not None, name
            assert command.name == name
            stored = click.Command(name, help=lazy.help)
            for limit in (30, 45, 80, 200):
                assert stored.get_short_help_str(limit) == command.get_short_help_str(limit), name


# Loads what `stask worker` loads (its command, a Stask, a runner that starts, fires schedules,
# listens and stops) and names the display-only, optional or other-database libraries that got
# imported.
WORKER_PATH = """
import sys

import click

from stask import Stask
from stask.cli import cli
from stask.runner import Runner, RunnerOptions

with click.Context(cli) as ctx:
    assert cli.get_command(ctx, "worker") is not None
with Stask() as app:
    runner = Runner(app, RunnerOptions(concurrency=1, grace_seconds=0))
    runner.request_stop()
    runner.run()
unwanted = ["rich", "alembic", "cron_descriptor", "croniter", "pydantic", "pydantic_settings"]
# Another database's SQLAlchemy dialect (3.2 MB of RSS for PostgreSQL's and MySQL's).
in_use = app.store.dialect
unwanted += [f"sqlalchemy.dialects.{name}" for name in ("sqlite", "postgresql", "mysql")
             if name != in_use]
print(" ".join(name for name in unwanted if name in sys.modules))
"""


def test_worker_path_skips_display_and_migration_libraries(
    app: Stask, cli_env: dict[str, str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_PATH],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("processes", ["1", "2"])
def test_worker_refuses_a_blank_queue_name(cli_env: dict[str, str], processes: str) -> None:
    """It served no queue at all while its log line said "queues all"."""
    done = stask(cli_env, "worker", "-p", processes, "-q", "mail", "-q", " ", code=2)
    assert_one_line_error(done, "queue name must be a non-empty string, got ' '")


def test_run_pending_batch_size_and_claim_order(app: Stask, cli_env: dict[str, str]) -> None:
    low = app.create("mailer", "send", {"to": "low"}, priority="low")
    normal = app.create("mailer", "send", {"to": "normal"})
    high = app.create("mailer", "send", {"to": "high"}, priority="high")
    assert stask_json(cli_env, "run-pending", "--batch-size", "2") == {"processed": 2}
    assert app.get(high.id).status is Status.COMPLETED
    assert app.get(normal.id).status is Status.COMPLETED
    assert app.get(low.id).status is Status.PENDING
    finished = [app.get(high.id).finished_at, app.get(normal.id).finished_at]
    assert finished[0] is not None
    assert finished[1] is not None
    assert finished[0] <= finished[1]


def test_scheduled_task_waits_for_its_time(app: Stask, cli_env: dict[str, str]) -> None:
    created = stask_json(cli_env, "create", "mailer", "send", "--at", "2999-01-01T00:00:00Z")
    assert created["display_status"] == "scheduled"
    assert created["run_at"].startswith("2999-01-01T00:00:00")
    assert stask_json(cli_env, "run-pending") == {"processed": 0}


def test_workers_commands(app: Stask, cli_env: dict[str, str], db_url: str) -> None:
    listed = {w["identifier"]: w for w in stask_json(cli_env, "workers", "list")}
    assert set(listed) == {"inventory", "mailer"}
    assert listed["inventory"]["active"] is True
    assert "sync_stock" in listed["inventory"]["actions"]

    stask(cli_env, "workers", "deactivate", "mailer")
    assert not app.worker("mailer").active
    stask(cli_env, "workers", "activate", "mailer")
    assert app.worker("mailer").active
    assert_one_line_error(stask(cli_env, "workers", "activate", "ghost", code=2), "ghost")

    stask(cli_env, "workers", "config", "inventory", "api.timeout", "75")
    stask(cli_env, "workers", "config", "inventory", "api.mode", "fast")
    config = json.loads(stask(cli_env, "workers", "config", "inventory").stdout)
    assert config["api"] == {"url": "https://example.invalid", "timeout": 75, "mode": "fast"}
    assert json.loads(stask(cli_env, "workers", "config", "inventory", "api.timeout").stdout) == 75
    assert_one_line_error(
        stask(cli_env, "workers", "config", "inventory", "api.nothing", code=1), "api.nothing"
    )
    fresh = Stask(database_url=db_url, workers=["tests.sample_workers"], use_entry_points=False)
    assert fresh.get_config("inventory", "api.timeout") == 75
    fresh.close()

    assert "Registered 0 new worker(s)" in stask(cli_env, "workers", "discover").stdout
    assert "Updated 0 worker(s)" in stask(cli_env, "workers", "rescan").stdout
    assert "Removed 0 orphaned" in stask(cli_env, "workers", "clean-orphaned").stdout


def test_cancel_retry_and_clean(app: Stask, cli_env: dict[str, str]) -> None:
    task = app.create("mailer", "send")
    assert "cancelled" in stask(cli_env, "cancel", str(task.id)).stdout
    assert app.get(task.id).status is Status.CANCELLED
    assert "queued again" in stask(cli_env, "retry", str(task.id)).stdout
    assert app.get(task.id).status is Status.PENDING
    stask(cli_env, "run-pending")
    assert stask_json(cli_env, "clean", "--days", "1") == {"tasks": 0, "logs": 0, "files": 0}
    cleaned = stask_json(cli_env, "clean", "--days", "0")
    assert cleaned["tasks"] == 1
    assert app.count() == 0


def test_run_until_idle_processes_everything(app: Stask, cli_env: dict[str, str]) -> None:
    ids = app.create_many([("mailer", "send", {"to": n}) for n in range(3)])
    done = stask(cli_env, "run", "--until-idle", "--poll", "0.05")
    assert "completed: 3" in done.stdout
    assert all(app.get(i).status is Status.COMPLETED for i in ids)


def test_settings_come_from_stask_toml(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STASK_")}
    source = Path(stask_package.__file__).resolve().parent.parent  # the stask imported here
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), str(source)])
    database = tmp_path / "data" / "from-toml.db"
    (tmp_path / "stask.toml").write_text(
        f'database_url = "sqlite:///{database}"\n'
        f'storage = "{tmp_path / "files"}"\n'
        'workers = ["tests.sample_workers"]\n',
        encoding="utf-8",
    )

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [STASK, *args], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert done.returncode == code, done.stderr
        return done

    run("migrate")
    assert database.exists()
    assert "inventory" in run("workers", "discover").stdout
    # The environment wins over the file.
    other = tmp_path / "other.db"
    env["STASK_DATABASE_URL"] = f"sqlite:///{other}"
    run("migrate")
    assert other.exists()
    assert json.loads(run("workers", "list", "--json").stdout) == []
    del env["STASK_DATABASE_URL"]

    (tmp_path / "stask.toml").write_text('database_ur = "sqlite:///x.db"\n', encoding="utf-8")
    assert_one_line_error(run("tasks", code=2), "unknown key(s)", "database_ur")
    (tmp_path / "stask.toml").write_text("database_url = [unclosed\n", encoding="utf-8")
    assert_one_line_error(run("tasks", code=2), "stask.toml")


def test_wait_exits_by_outcome(app: Stask, cli_env: dict[str, str]) -> None:
    done = app.create("mailer", "send", {"to": "x"})
    failing = app.create("inventory", "fail", max_attempts=1)
    app.process_pending()
    assert f"Task {done.id} completed" in stask(cli_env, "wait", str(done.id)).stdout
    failed = stask(cli_env, "wait", str(failing.id), code=1)
    assert f"Task {failing.id} failed" in failed.stdout
    assert "broken on attempt 1" in failed.stdout
    waiting = app.create("mailer", "send")
    timed_out = stask(cli_env, "wait", str(waiting.id), "--timeout", "0.2", code=1)
    assert f"task {waiting.id} is still pending after 0.2 s" in timed_out.stderr
    assert_one_line_error(stask(cli_env, "wait", "424242", code=1), "424242")


def test_show_lists_every_attempts_error(app: Stask, cli_env: dict[str, str]) -> None:
    task = app.create("inventory", "fail")  # Inventory.max_attempts == 2
    app.process_pending()
    with app.store.engine.begin() as conn:  # make the retry due now
        conn.execute(text("UPDATE s_queue SET run_at = :t"), {"t": utcnow()})
        conn.execute(text("UPDATE s_tasks SET run_at = :t"), {"t": utcnow()})
    app.process_pending()
    shown = stask_json(cli_env, "show", str(task.id))
    assert shown["status"] == "failed"
    assert [a["attempt"] for a in shown["attempt_errors"]] == [1, 2]
    assert "broken on attempt 1" in shown["attempt_errors"][0]["traceback"]
    assert "broken on attempt 2" in shown["attempt_errors"][1]["traceback"]
    human = stask(cli_env, "show", str(task.id)).stdout
    assert "Attempt 1" in human
    assert "Attempt 2" in human
