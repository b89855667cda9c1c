"""The first five minutes: the README's quickstart as written, `stask run`'s Ctrl-C, the one
cron line, and `stask worker -p N` children serving their parent's database."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stask import Stask, Status
from stask.models import utcnow
from tests.conftest import ROOT, fresh_app, fresh_database
from tests.helpers import Processes, wait_until
from tests.test_runner import WORKERS

STASK = str(Path(sys.executable).with_name("stask"))
README = ROOT / "README.md"
FENCED = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
STEP = re.compile(r"^\*\*(\d+)\. ", re.MULTILINE)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of someone who just installed stask: no STASK_*, no PYTHONPATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("STASK_") and key != "PYTHONPATH"
    }
    # `stask run` serves the web app: on a free port, so parallel tests never collide.
    return {**env, "COLUMNS": "200", "STASK_PORT": "0", **extra}


def run_in(folder: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [STASK, *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done


# -- worker modules import from the current directory ------------------------------------------


def test_worker_modules_import_from_the_directory_stask_runs_in(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "workers.py").write_text(
        "from stask import BaseWorker\n\n\n"
        "class Hello(BaseWorker):\n"
        '    identifier = "hello"\n\n'
        "    def task_say(self, task, options):\n"
        '        return {"said": "hello"}\n'
    )
    env = clean_env(STASK_WORKERS="myapp.workers")
    run_in(tmp_path, env, "migrate")
    assert (
        "Registered 1 new worker(s): hello" in run_in(tmp_path, env, "workers", "discover").stdout
    )
    run_in(tmp_path, env, "create", "hello", "say")
    assert run_in(tmp_path, env, "run-pending").stdout.strip() == "Processed 1 task(s)."
    shown = json.loads(run_in(tmp_path, env, "show", "1", "--json").stdout)
    assert (shown["status"], shown["result"]) == ("completed", {"said": "hello"})
    assert (tmp_path / "storage" / "stask.db").is_file()  # the default, in that folder


# -- the README quickstart, as written -----------------------------------------------------------


def quickstart_steps() -> dict[int, str]:
    """The README's quickstart section, by its numbered steps (**1. Install** ...)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Quickstart")
    end = text.index("\n## ", start + 1)
    section = text[start:end]
    marks = list(STEP.finditer(section))
    assert [int(m[1]) for m in marks] == list(range(1, len(marks) + 1)), "steps renumbered?"
    return {
        int(mark[1]): section[mark.start() : nxt.start() if nxt else len(section)]
        for mark, nxt in zip(marks, [*marks[1:], None], strict=True)
    }


def code_blocks(step: str, language: str) -> list[str]:
    return [body for lang, body in FENCED.findall(step) if lang == language]


def commands(block: str) -> Iterator[tuple[list[str], str]]:
    """Each shell command of a README block with its trailing comment; the cron line of a
    comment (``* * * * * cd /srv/app && stask run-pending``) counts as its command."""
    for line in block.splitlines():
        code, _sep, comment = line.partition("#")
        if not code.strip():
            cron = re.search(r"\* \* \* \* \* cd \S+ && (stask .*)$", comment)
            if cron:
                yield shlex.split(cron[1]), "cron"
            continue
        yield shlex.split(code), comment.strip()


@pytest.fixture
def fresh_url(dialect: str, tmp_path: Path) -> Iterator[str | None]:
    """A brand-new, empty database (None for SQLite: the quickstart's default file)."""
    if dialect == "sqlite":
        yield None
    else:
        yield from fresh_database("mariadb" if dialect == "mysql" else dialect, tmp_path)


def test_readme_quickstart_runs_as_written_in_a_fresh_folder(
    fresh_url: str | None, tmp_path: Path
) -> None:
    """Steps 2-5 of README.md's quickstart, read from the README itself, through the installed
    `stask` in an empty folder with no PYTHONPATH.

    Step 1 (pip install) is what made this virtualenv. Step 4's long-lived runners end for the
    test: `stask run` runs as `stask run --until-idle`, `stask worker -c 8` until its task is
    done, then SIGTERM; the create line of step 3 is repeated before each later runner so every
    way of running has a task of its own. Step 5 runs as written except that the worker's
    `time.sleep(0.5)` per recipient is cut to 5 ms (101 tasks would take 50 s), and on
    PostgreSQL / MariaDB its SQLite URL is the test's database.
    """
    steps = quickstart_steps()
    folder = tmp_path / "app"
    folder.mkdir()
    env = clean_env() if fresh_url is None else clean_env(STASK_DATABASE_URL=fresh_url)

    # 2. The worker file and its empty package, named by the README's words.
    worker_file = re.search(r"Save this as `([^`]+)`", steps[2])
    package_init = re.search(r"with an empty `([^`]+)`", steps[2])
    assert worker_file is not None, steps[2]
    assert package_init is not None, steps[2]
    (worker_source,) = code_blocks(steps[2], "python")
    (folder / package_init[1]).parent.mkdir(parents=True, exist_ok=True)
    (folder / package_init[1]).write_text("")
    (folder / worker_file[1]).write_text(worker_source)

    # 3. Register it and queue a task.
    (register,) = code_blocks(steps[3], "bash")
    create = _register_and_create(folder, env, register)
    if fresh_url is None:
        assert (folder / "storage" / "stask.db").is_file()  # "creates ./storage/stask.db"

    url = fresh_url or f"sqlite:///{folder / 'storage' / 'stask.db'}"
    watcher = Stask(
        database_url=url, storage=folder / "storage", workers=[], use_entry_points=False
    )
    try:
        # 4. Run it (each way the README shows) and watch.
        (watch,) = code_blocks(steps[4], "bash")
        _run_and_watch(folder, env, watch, create, watcher)
        assert watcher.stats()["completed"] == 3

        # 5. Or do it all from Python (in the same folder, as a script).
        (script, *_more) = code_blocks(steps[5], "python")
        if fresh_url is not None:
            assert '"sqlite:///./storage/stask.db"' in script
            script = script.replace('"sqlite:///./storage/stask.db"', repr(fresh_url))
        fast_sleep = (
            "import time\n_sleep = time.sleep\n"
            "time.sleep = lambda seconds: _sleep(min(seconds, 0.005))\n"
        )
        (folder / "quickstart.py").write_text(fast_sleep + script)
        done = subprocess.run(
            [sys.executable, "quickstart.py"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "completed {'sent': 1}"
        assert watcher.stats()["completed"] == 3 + 100  # the batch of 100 of 101 new tasks
        assert watcher.stats()["pending"] == 1
    finally:
        watcher.close()


def _register_and_create(folder: Path, env: dict[str, str], block: str) -> list[str]:
    """Step 3's lines (``export`` sets ``env``); the arguments of its create command."""
    create: list[str] | None = None
    for args, comment in commands(block):
        if args[0] == "export":
            name, _sep, value = args[1].partition("=")
            env[name] = value
            continue
        assert args[0] == "stask", args
        done = run_in(folder, env, *args[1:])
        if args[1:3] == ["workers", "discover"]:
            assert comment in done.stdout  # "Registered 1 new worker(s): newsletter"
        if args[1] == "create":
            create = args[1:]
            assert done.stdout.startswith("Created task 1: newsletter"), done.stdout
    assert create is not None, block
    return create


def _run_and_watch(
    folder: Path, env: dict[str, str], block: str, create: list[str], watcher: Stask
) -> None:
    """Step 4's lines: each runner runs a task of its own, then show, logs and tasks."""
    latest, runners = 1, 0
    for args, _comment in commands(block):
        assert args[0] == "stask", args
        command = args[1]
        if command not in {"run", "worker", "run-pending"}:
            done = run_in(folder, env, *args[1:])
            if command == "show":
                assert "completed" in done.stdout
                assert "sent" in done.stdout
            elif command == "logs":
                assert "newsletter sent" in done.stdout
            elif command == "tasks":
                assert json.loads(done.stdout) == []  # --status failed: none
            continue
        if runners:
            latest = json.loads(run_in(folder, env, *create, "--json").stdout)["id"]
        runners += 1
        if command == "run":
            run_in(folder, env, *args[1:], "--until-idle")
        elif command == "worker":
            _run_worker_until_done(folder, env, args[1:], watcher, latest)
        else:
            assert run_in(folder, env, *args[1:]).stdout.strip() == "Processed 1 task(s)."
        task = watcher.get(latest)
        assert task.status is Status.COMPLETED, (command, task)
        assert (task.result, task.attempts) == ({"sent": 3}, 1), (command, task)
    assert runners == 3, "stask run, stask worker and the cron line's run-pending"


def _run_worker_until_done(
    folder: Path, env: dict[str, str], args: list[str], watcher: Stask, task_id: int
) -> None:
    err = folder / "worker.err"
    with err.open("w") as sink:
        proc = subprocess.Popen(
            [STASK, *args], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        wait_until(
            lambda: watcher.get(task_id).is_finished or proc.poll() is not None,
            what=lambda: f"the worker's task; its log:\n{err.read_text()}",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- Ctrl-C on `stask run` ------------------------------------------------------------------------


@pytest.fixture
def runner_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, WORKERS, "tests.sample_workers")


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `stask ...` processes (stderr to a file); killed and shown after the test."""
    with Processes(tmp_path, "stask") as procs:

        def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
            return procs.start([STASK, *args], env, cwd=tmp_path)

        yield start


def _run_env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "STASK_WORKERS": f"{WORKERS},tests.sample_workers"}


def test_ctrl_c_on_stask_run_lets_the_running_task_finish_then_exits(
    runner_app: Stask,
    cli_env: dict[str, str],
    started: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    log = tmp_path / "touched.log"
    task = runner_app.create("counter", "touch", {"log": str(log), "delay": 1.5})
    proc = started(_run_env(cli_env), "run", "--poll", "0.1")
    wait_until(lambda: log.exists() and log.read_text().strip() != "", what="the task's start")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None, "exited while its task was still running"
    assert proc.wait(timeout=30) == 0
    done = runner_app.get(task.id)
    assert done.status is Status.COMPLETED  # finished before the process exited
    assert done.attempts == 1
    assert len(log.read_text().split("\n")) == 2  # one line: it ran once
    assert runner_app.store.task_reads.running_task_ids() == []


def test_a_second_ctrl_c_on_stask_run_exits_at_once(
    runner_app: Stask,
    cli_env: dict[str, str],
    started: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    log, release = tmp_path / "events.log", tmp_path / "release"
    task = runner_app.create("long", "hold", {"log": str(log), "release": str(release)})
    proc = started(_run_env(cli_env), "run", "--poll", "0.1")
    wait_until(lambda: log.exists() and "start" in log.read_text(), what="the task's start")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # draining: the task holds until released (grace 30 s)
    asked = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 1
    assert time.monotonic() - asked < 5
    assert runner_app.get(task.id).status is Status.RUNNING  # left to the rescuer


# -- one cron line: run-pending fires due schedules, then runs them ------------------------------


@pytest.fixture
def schedule_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, "tests.schedule_workers")


def test_run_pending_fires_due_schedules_and_runs_their_tasks(
    schedule_app: Stask, cli_env: dict[str, str]
) -> None:
    # Set two days ago: today's 00:00 UTC slot is due now (and fires once).
    schedule_app.set_schedule(
        "digest", {"type": "cron", "expression": "0 0 * * *"}, now=utcnow() - dt.timedelta(days=2)
    )
    env = {**cli_env, "STASK_WORKERS": "tests.schedule_workers"}
    done = run_in(ROOT, env, "run-pending")
    assert done.stdout.strip() == "Processed 1 task(s).", done.stderr
    (task,) = schedule_app.list(worker="digest")
    assert (task.status, task.action, task.started_by) == (Status.COMPLETED, "build", "schedule")
    assert task.result == {"built": {}}
    assert task.unique_key is not None
    assert task.unique_key.startswith("sched:digest:build:")


# -- `stask worker -p N`: the children serve what the parent was told -----------------------------


def test_worker_processes_serve_the_database_storage_and_workers_given_to_the_parent(
    runner_app: Stask,
    db_url: str,
    storage: Path,
    cli_env: dict[str, str],
    started: Callable[..., subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    # The environment names another database that works (as a stale export would): a child
    # that read it instead of --database-url would serve it silently.
    decoy_url = f"sqlite:///{tmp_path / 'decoy.db'}"
    decoy = Stask(
        database_url=decoy_url,
        storage=tmp_path / "decoy-storage",
        workers=[WORKERS],
        use_entry_points=False,
    )
    decoy.migrate()
    decoy.discover()
    env = {
        **cli_env,
        "STASK_DATABASE_URL": decoy_url,
        "stask_storage": str(tmp_path / "decoy-storage"),  # any letter case is read
        "STASK_WORKERS": "tests.schedule_workers",
    }
    log = tmp_path / "touched.log"
    ids = runner_app.create_many(
        [("counter", "touch", {"log": str(log), "delay": 0.1}) for _ in range(30)]
    )
    export = runner_app.create("inventory", "export")
    parent = started(
        env, "--database-url", db_url, "--storage", str(storage),
        "--workers", f"{WORKERS},tests.sample_workers",
        "worker", "-p", "2", "-c", "1", "--prefetch", "0", "--poll", "0.1",
    )  # fmt: skip
    try:
        wait_until(
            lambda: runner_app.stats()["completed"] == 31 or parent.poll() is not None,
            timeout=30,
            what=lambda: f"31 completed, have {runner_app.stats()}",
        )
    finally:
        parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 0
    assert runner_app.stats()["completed"] == 31
    pids = {int(line.split()[1]) for line in log.read_text().splitlines()}
    assert len(pids) == 2  # both children did the work
    assert parent.pid not in pids
    assert {int(line.split()[0]) for line in log.read_text().splitlines()} == set(ids)
    assert (storage / "tasks" / str(export.id) / "out.csv").is_file()
    assert runner_app.result_file(export.id).is_file()
    assert not (tmp_path / "decoy-storage").exists()
    assert decoy.count() == 0
    decoy.close()


def test_child_environment_holds_the_parents_settings_in_one_spelling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from stask.cli.worker import child_environment
    from stask.settings import load_settings

    monkeypatch.setenv("stask_database_url", "sqlite:///decoy.db")  # read in any letter case
    monkeypatch.setenv("Stask_Workers", "decoy.workers")
    monkeypatch.setenv("UNRELATED", "kept")
    settings = load_settings(
        database_url="sqlite:///real.db", storage=tmp_path, workers=["a.workers", "b.workers"]
    )
    env = child_environment(settings)
    stask_keys = {key for key in env if key.upper().startswith("STASK_")}
    assert all(key.isupper() for key in stask_keys), stask_keys
    assert env["STASK_DATABASE_URL"] == "sqlite:///real.db"
    assert env["STASK_STORAGE"] == str(tmp_path)
    assert env["STASK_WORKERS"] == "a.workers,b.workers"
    assert env["UNRELATED"] == "kept"
    monkeypatch.setattr(os, "environ", env)
    assert load_settings() == settings  # a child resolves exactly what its parent did
