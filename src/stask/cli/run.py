"""Running tasks from the terminal: `run-pending` (cron) and `run` (live view)."""

from __future__ import annotations

import os
import threading

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from stask.cli.base import echo_json, pass_app
from stask.cli.render import tasks_table
from stask.cli.worker import concurrency_option, poll_option
from stask.core.facade import Stask
from stask.models import Status, Task
from stask.runner import Runner, RunnerOptions

REFRESH_SECONDS = 0.25
SHOWN_FINISHED = 8


@click.command("run-pending")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Run at most this many tasks, then exit.",
)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def run_pending(app: Stask, batch_size: int, as_json: bool) -> None:
    """Run due tasks in this process and exit (for a cron entry every minute)."""
    _warn_without_workers(app)
    done = app.process_pending(batch_size=batch_size)
    if as_json:
        echo_json({"processed": done})
    else:
        click.echo(f"Processed {done} task(s).")


def _warn_without_workers(app: Stask) -> None:
    if not app.registry.classes():
        click.echo(
            "Warning: no worker classes found - set STASK_WORKERS (or `workers` in stask.toml) "
            "to the modules that define them; nothing can run until then.",
            err=True,
        )


def _board(app: Stask, width: int) -> RenderableType:
    """Running tasks, then the next pending ones, then the latest finished."""
    running = app.list(status=[Status.RUNNING, Status.PREPARING], limit=20)
    pending = sorted(
        app.list(status=Status.PENDING, limit=10), key=lambda t: (t.priority.weight, t.run_at, t.id)
    )
    finished = app.list(
        status=[Status.COMPLETED, Status.FAILED, Status.CANCELLED], limit=SHOWN_FINISHED
    )
    shown: list[Task] = [*running, *pending, *finished]
    counts = app.stats()
    summary = Text(
        "  ".join(
            f"{name}: {counts[name]}"
            for name in ("pending", "running", "completed", "failed", "cancelled", "total")
        )
    )
    return Group(summary, tasks_table(shown, title="stask", width=width))


@click.command()
@concurrency_option
@poll_option
@click.option("--until-idle", is_flag=True, help="Exit once nothing is due or running.")
@pass_app
def run(app: Stask, concurrency: int, poll: float, until_idle: bool) -> None:
    """Run the task runner here with a live progress table. Ctrl-C stops it gracefully."""
    _warn_without_workers(app)
    runner = Runner(app, RunnerOptions(concurrency=concurrency, poll_seconds=poll))
    failure: list[BaseException] = []

    def work() -> None:
        try:
            runner.run()
        except BaseException as err:  # reported by the main thread
            failure.append(err)

    thread = threading.Thread(target=work, name="stask-run", daemon=True)
    thread.start()
    console = Console()
    try:
        with Live(_board(app, console.width), console=console, refresh_per_second=4) as live:
            while thread.is_alive():
                thread.join(REFRESH_SECONDS)
                live.update(_board(app, console.width))
                if until_idle and runner.idle and app.stats()["running"] == 0:
                    runner.request_stop()
    except KeyboardInterrupt:
        console.print("Stopping: letting running tasks finish (Ctrl-C again to abort)...")
        runner.request_stop()
        try:
            thread.join()
        except KeyboardInterrupt:
            os._exit(1)
    thread.join()
    if failure:
        raise failure[0]
