"""Hostile task code under real runner processes: whatever a task does, the runner stays up.

Every misbehaving task (tests/hostile_workers.py) must end as its own failure with its real
reason, beside good tasks that complete; and a runner whose workers' settings() start failing
must keep its heartbeat, so no other runner rescues (and runs a second time) what it holds.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

import stask
from stask import Stask, Status, Task
from stask.db.nodes import NodeStore
from stask.db.tables import tasks as tasks_table
from stask.models import utcnow
from tests.conftest import ROOT, fresh_app
from tests.helpers import wait_until

STASK = str(Path(sys.executable).with_name("stask"))
WORKERS = "tests.hostile_workers"
MAX_RUNS = 5
LIMITS = {
    "STASK_MAX_OPTIONS_BYTES": "4096",
    "STASK_MAX_RESULT_BYTES": "4096",
    "STASK_MAX_MESSAGE_BYTES": "1024",
    "STASK_MAX_LOG_CONTEXT_BYTES": "2048",
    "STASK_MAX_RUNS": str(MAX_RUNS),
}


@pytest.fixture
def hostile_app(db_url: str, storage: Path) -> Iterator[Stask]:
    yield from fresh_app(db_url, storage, WORKERS)


@pytest.fixture
def hostile_env(cli_env: dict[str, str]) -> dict[str, str]:
    # The runners import the very stask this test imported (a checkout's src/ included).
    source = Path(stask.__file__).resolve().parent.parent
    return {
        **cli_env,
        **LIMITS,
        "STASK_WORKERS": WORKERS,
        "STASK_LEASE_SECONDS": "2",
        "STASK_HEARTBEAT_SECONDS": "0.3",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(source)]),
    }


class Runners:
    """`stask worker` processes, their stderr in files; killed and shown after the test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
        err = self.folder / f"runner-{len(self.started)}.err"
        with err.open("w") as sink:  # a file, not a pipe: a chatty runner never blocks on it
            proc = subprocess.Popen(
                [STASK, "worker", "--poll", "0.1", *args],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.started.append((proc, err))
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        return next(err.read_text() for started, err in self.started if started is proc)

    def assert_alive(self) -> None:
        for proc, err in self.started:
            if proc.poll() is not None:
                pytest.fail(
                    f"runner {proc.pid} exited with code {proc.returncode}:\n{err.read_text()}"
                )


@pytest.fixture
def runners(tmp_path: Path) -> Iterator[Runners]:
    spawned = Runners(tmp_path)
    yield spawned
    for proc, err in spawned.started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        # Shown by pytest when the test failed: what each runner logged.
        print(f"--- runner {proc.pid} (exit {proc.returncode}) output:\n{err.read_text()}")


def _describe(app: Stask, ids: list[int]) -> str:
    lines = []
    for task_id in ids:
        task = app.get(task_id)
        lines.append(
            f"  {task.id} {task.identifier}.{task.action}: {task.status.value} "
            f"attempts={task.attempts} message={_short(task.message)}"
        )
    return "\n".join(lines)


def _short(text: str | None, limit: int = 300) -> str:
    return repr(text if text is None or len(text) <= limit else text[:limit] + "...")


# -- 1. a suite of misbehaving tasks beside good ones --------------------------------------------


@dataclass(frozen=True)
class Bad:
    """A misbehaving task and how it must end: failed (unless ``status`` says otherwise), with
    each group of ``message`` fragments matched by one of its members (case-insensitive)."""

    identifier: str
    action: str
    max_attempts: int
    message: tuple[tuple[str, ...], ...] = ()
    error: tuple[str, ...] = ()  # fragments of the stored error (the traceback)
    status: Status = Status.FAILED
    result: Any = None


SIZE = ("limit", "bytes", "large", "size")
BAD = [
    Bad("hostile", "system_exit", 2, (("SystemExit",),), ("SystemExit",)),
    Bad("hostile", "keyboard_interrupt", 1, (("KeyboardInterrupt",),), ("KeyboardInterrupt",)),
    Bad("hostile", "recursion", 1, (("RecursionError",),), ("RecursionError", "_recurse")),
    Bad("hostile", "memory", 2, (("MemoryError",),), ("MemoryError", "pretend the heap")),
    Bad("hostile", "log_context", 1, (("ValidationError",), ("json",)), ("ValidationError",)),
    Bad(
        "hostile",
        "log_context_caught",
        1,
        status=Status.COMPLETED,
        result={"raised": "ValidationError"},
    ),
    Bad("hostile", "non_json_result", 1, (("json",),)),
    Bad("hostile", "deep_result", 1, (("result",), ("deep", "nest", "json"))),
    Bad("hostile", "big_result", 1, (("result",), SIZE)),
    Bad("hostile", "big_message", 1, (("ValidationError",), SIZE), ("ValidationError",)),
    Bad("hostile", "big_log_line", 1, (("ValidationError",), SIZE), ("ValidationError",)),
    Bad(
        "hostile",
        "big_log_context",
        1,
        (("ValidationError",), ("context",), SIZE),
        ("ValidationError",),
    ),
    Bad("hostile", "big_options", 1, (("ValidationError",), ("option",), SIZE)),
    Bad("hostile", "retry_forever", 10, ((str(MAX_RUNS),),)),
    Bad("broken_init", "run", 1, (("RuntimeError",), ("broken constructor",)), ("RuntimeError",)),
    Bad("broken_settings", "read", 1, (("RuntimeError",), ("config service",)), ("Traceback",)),
    Bad("hostile", "vanished", 1, (("vanished",),)),  # an action the worker no longer has
]
EXCEPTION_KINDS = {"system_exit", "keyboard_interrupt", "recursion", "memory"}  # a traceback


@dataclass
class Suite:
    good: dict[int, int]  # task id -> its n
    bad: dict[int, Bad]
    retry_log: Path

    @property
    def ids(self) -> list[int]:
        return sorted([*self.good, *self.bad])


def _create_suite(app: Stask, tmp_path: Path) -> Suite:
    """Each bad task between two good ones, in id order (so claimed interleaved)."""
    retry_log = tmp_path / "retries.log"
    good: dict[int, int] = {}
    bad: dict[int, Bad] = {}
    n = 0
    for kind in [None, *BAD]:
        if kind is not None:
            action = "good" if kind.action == "vanished" else kind.action
            options = {"log": str(retry_log)} if kind.action == "retry_forever" else {}
            task = app.create(kind.identifier, action, options, max_attempts=kind.max_attempts)
            bad[task.id] = kind
        for _ in range(2):
            n += 1
            good[app.create("hostile", "good", {"n": n}).id] = n
    vanished = [task_id for task_id, kind in bad.items() if kind.action == "vanished"]
    with app.store.writing() as conn:  # queued before a deploy removed its action
        conn.execute(
            update(tasks_table).where(tasks_table.c.id.in_(vanished)).values(action="vanished")
        )
    return Suite(good, bad, retry_log)


def _all_final(app: Stask, ids: list[int]) -> bool:
    return all(app.get(task_id).is_finished for task_id in ids)


def _check_suite(app: Stask, suite: Suite) -> None:
    problems: list[str] = []
    for task_id, n in suite.good.items():
        task = app.get(task_id)
        if task.status is not Status.COMPLETED or task.result != {"n": n, "attempt": 1}:
            problems.append(f"good task {task_id}: {task.status.value} {_short(task.message)}")
    for task_id, kind in suite.bad.items():
        problems += _check_bad(app.get(task_id), kind)
    runs = suite.retry_log.read_text().splitlines() if suite.retry_log.exists() else []
    for task_id, kind in suite.bad.items():
        if kind.action == "retry_forever":
            attempts = [int(run.split()[1]) for run in runs if int(run.split()[0]) == task_id]
            if attempts != list(range(1, MAX_RUNS + 1)):
                problems.append(
                    f"retry_forever ran with attempts {attempts}, not 1..{MAX_RUNS} "
                    "(each run a new attempt, STASK_MAX_RUNS in all)"
                )
    children = [t for t in app.list(limit=1000) if t.options.get("n") == -1]
    if children:
        problems.append(f"big_options created a task with oversized options: {children[0].id}")
    assert not problems, "\n".join(problems)


def _check_bad(task: Task, kind: Bad) -> list[str]:
    name = f"{kind.identifier}.{kind.action} (task {task.id})"
    if task.status is not kind.status:
        return [f"{name}: {task.status.value}, not {kind.status.value}: {_short(task.message)}"]
    if kind.status is Status.COMPLETED:
        if task.result != kind.result:
            return [f"{name}: result {task.result!r}, not {kind.result!r}"]
        return []
    problems = []
    if task.attempts != min(kind.max_attempts, MAX_RUNS):
        problems.append(f"{name}: ended after {task.attempts} attempts")
    message = (task.message or "").lower()
    for group in kind.message:
        if not any(fragment.lower() in message for fragment in group):
            problems.append(f"{name}: message {_short(task.message)} has none of {group}")
    wanted = (*kind.error, "Traceback") if kind.action in EXCEPTION_KINDS else kind.error
    for fragment in wanted:
        if fragment not in (task.error or ""):
            problems.append(f"{name}: error has no {fragment!r}: {(task.error or '')[-300:]!r}")
    return problems


@pytest.mark.slow
def test_hostile_tasks_under_one_worker_process_fail_alone(
    hostile_app: Stask, hostile_env: dict[str, str], runners: Runners, tmp_path: Path
) -> None:
    suite = _create_suite(hostile_app, tmp_path)
    env = {**hostile_env, "HOSTILE_BROKEN_INIT": "1"}
    proc = runners.start(env, "-c", "2")

    def done() -> bool:
        runners.assert_alive()
        return _all_final(hostile_app, suite.ids)

    wait_until(
        done, timeout=60, what=lambda: f"every task final:\n{_describe(hostile_app, suite.ids)}"
    )
    later = utcnow() + dt.timedelta(seconds=1)  # a few heartbeats after the last task
    runners.assert_alive()
    _check_suite(hostile_app, suite)
    # Its heartbeat outlived settings() starting to fail (the broken_settings task).
    wait_until(
        lambda: _beat_since(hostile_app, proc.pid, later),
        timeout=10,
        what=lambda: f"a heartbeat after the suite: {NodeStore(hostile_app.store).all()}",
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in runners.output(proc)


def _beat_since(app: Stask, pid: int, since: dt.datetime) -> bool:
    return any(
        node["pid"] == pid and node["heartbeat_at"] > since for node in NodeStore(app.store).all()
    )


@pytest.mark.slow
def test_hostile_tasks_under_run_pending_fail_alone(
    hostile_app: Stask, hostile_env: dict[str, str], tmp_path: Path
) -> None:
    suite = _create_suite(hostile_app, tmp_path)
    env = {**hostile_env, "HOSTILE_BROKEN_INIT": "1"}
    deadline = time.monotonic() + 60
    invocations = 0
    while not _all_final(hostile_app, suite.ids):
        if time.monotonic() > deadline:
            pytest.fail(f"not final after {invocations} runs:\n{_describe(hostile_app, suite.ids)}")
        done = subprocess.run(
            [STASK, "run-pending"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        invocations += 1
        said = f"run-pending #{invocations} (exit {done.returncode}):\n{done.stdout}{done.stderr}"
        assert done.returncode == 0, said
        assert "Traceback" not in done.stdout + done.stderr, said
        if done.stdout.strip() == "Processed 0 task(s).":
            time.sleep(0.2)  # the rest wait out a retry backoff
    _check_suite(hostile_app, suite)


# -- 2. fencing: a runner whose settings() start failing keeps its lease -------------------------


def _runs(log: Path) -> dict[int, list[tuple[str, int, int, float]]]:
    """Per task id: its (kind, attempt, pid, time) events, in time order."""
    found: dict[int, list[tuple[str, int, int, float]]] = {}
    for line in log.read_text().splitlines():
        kind, task_id, attempt, pid, when = line.split()
        found.setdefault(int(task_id), []).append((kind, int(attempt), int(pid), float(when)))
    return {task_id: sorted(events, key=lambda e: e[3]) for task_id, events in found.items()}


def _overlaps(events: list[tuple[str, int, int, float]]) -> list[str]:
    """Starts of a run while another run of the same task had not ended."""
    open_runs: Counter[tuple[int, int]] = Counter()
    found = []
    for kind, attempt, pid, when in events:
        if kind == "start":
            if sum(open_runs.values()):
                found.append(f"attempt {attempt} in {pid} at {when:.3f} beside {dict(open_runs)}")
            open_runs[(attempt, pid)] += 1
        else:
            open_runs[(attempt, pid)] -= 1
    return found


@pytest.mark.slow
def test_a_runner_whose_settings_start_failing_keeps_its_lease(
    hostile_app: Stask, hostile_env: dict[str, str], runners: Runners, tmp_path: Path
) -> None:
    log, flag = tmp_path / "runs.log", tmp_path / "hiccup.flag"
    raised = Path(f"{flag}.raised")
    ids = hostile_app.create_many(
        [("hiccup", "work", {"log": str(log), "seconds": 0.5 + (i % 6) / 10}) for i in range(40)]
    )
    env = {**hostile_env, "HOSTILE_HICCUP_FLAG": str(flag)}
    # A deep prefetch: tasks wait in a runner's buffer for longer than the lease.
    first = runners.start(env, "-c", "2", "--prefetch", "6")
    second = runners.start(env, "-c", "2", "--prefetch", "6")
    wait_until(
        lambda: log.exists() and f" {first.pid} " in log.read_text(),
        timeout=30,
        what="the first runner's first start",
    )
    staged = tmp_path / "hiccup.tmp"  # written whole, then moved: never seen empty (= everyone)
    staged.write_text(f"{first.pid}\n")
    staged.replace(flag)

    def done() -> bool:
        runners.assert_alive()
        return _all_final(hostile_app, ids)

    wait_until(done, timeout=90, what=lambda: f"every task final:\n{_describe(hostile_app, ids)}")
    later = utcnow() + dt.timedelta(seconds=1)  # a few heartbeats after the last task
    deadline = time.monotonic() + 10
    while not (beating := _beat_since(hostile_app, first.pid, later)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    runners.assert_alive()
    for proc in (first, second):
        proc.send_signal(signal.SIGTERM)
    for proc in (first, second):
        assert proc.wait(timeout=30) == 0, runners.output(proc)

    hiccups = raised.read_text().splitlines() if raised.exists() else []
    assert any(line.split()[0] == str(first.pid) for line in hiccups), (
        "settings() never failed in the first runner after the flag: the test did not exercise "
        "the heartbeat's settings path"
    )
    assert all(line.split()[0] == str(first.pid) for line in hiccups)
    runs = _runs(log)
    overlapping = {task_id: o for task_id, events in runs.items() if (o := _overlaps(events))}
    assert not overlapping, f"tasks run twice at once: {overlapping}"
    starts = {
        task_id: [e[1:3] for e in events if e[0] == "start"] for task_id, events in runs.items()
    }
    wrong = []
    for task_id in ids:
        task = hostile_app.get(task_id)
        attempt, pid = starts[task_id][-1]
        if task.status is not Status.COMPLETED or task.result != {"pid": pid, "attempt": attempt}:
            wrong.append(
                f"task {task_id} {task.status.value} with result {task.result} "
                f"({_short(task.message)}), its runs (attempt, pid): {starts[task_id]}"
            )
    assert not wrong, "not completed by its last started run:\n" + "\n".join(wrong)
    assert beating, "the first runner stopped heartbeating once its workers' settings() failed"
    assert "Traceback" not in runners.output(first) + runners.output(second)
    again = {task_id: seen for task_id, seen in starts.items() if len(seen) > 1}
    assert not again, f"tasks run more than once (attempt, pid): {again}"
