"""Running tasks from the terminal: `run-pending` (cron) and `run` (live view)."""

from __future__ import annotations

import threading

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from stask.cli.base import echo_json, pass_app
from stask.cli.render import tasks_table
from stask.cli.web import announce, host_option, port_option, prefix_option, serve_in_thread
from stask.cli.worker import (
    concurrency_option,
    grace_option,
    install_stop_handlers,
    poll_option,
)
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


def _board(app: Stask, width: int, note: str = "") -> RenderableType:
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
    table = tasks_table(shown, title="stask", width=width)
    return Group(summary, table, Text(note, style="bold yellow")) if note else Group(summary, table)


@click.command()
@concurrency_option
@grace_option
@poll_option
@click.option("--until-idle", is_flag=True, help="Exit once nothing is due or running.")
@host_option
@port_option
@prefix_option
@click.option("--no-web", is_flag=True, help="Run only the task runner.")
@pass_app
def run(
    app: Stask,
    concurrency: int,
    grace: float,
    poll: float,
    until_idle: bool,
    host: str,
    port: int,
    prefix: str,
    no_web: bool,
) -> None:
    """Run the web app and the task runner here, with a live progress table.

    Prints the web app's URL (and, on the very first start, the admin's one-time password).
    Ctrl-C stops gracefully: running tasks finish within the grace period.
    """
    _warn_without_workers(app)
    served = None
    if not no_web:
        app.store.ping()
        served = serve_in_thread(app, host, port, prefix)
        announce(app, served, host)
    try:
        _run_runner(app, concurrency, grace, poll, until_idle)
    finally:
        if served is not None:
            served.stop()


def _run_runner(app: Stask, concurrency: int, grace: float, poll: float, until_idle: bool) -> None:
    options = RunnerOptions(concurrency=concurrency, poll_seconds=poll, grace_seconds=grace)
    options.validate()
    runner = Runner(app, options)
    console = Console()

    def show_cursor() -> None:  # Live hides it; a second Ctrl-C exits without Live's cleanup
        if console.is_terminal:
            console.file.write("\x1b[?25h")
            console.file.flush()

    # As `stask worker`: the first SIGINT/SIGTERM stops claiming and lets running tasks
    # finish within the grace period, a second one exits at once.
    install_stop_handlers(runner, before_exit=show_cursor)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            runner.run()
        except BaseException as err:  # reported by the main thread
            failure.append(err)

    thread = threading.Thread(target=work, name="stask-run", daemon=True)
    thread.start()
    idle_stop = False
    with Live(_board(app, console.width), console=console, refresh_per_second=4) as live:
        while thread.is_alive():
            thread.join(REFRESH_SECONDS)
            note = ""
            if runner.stopping and not idle_stop:
                note = (
                    f"Stopping: letting running tasks finish (up to {grace:g} s; "
                    "Ctrl-C again to exit at once)..."
                )
            live.update(_board(app, console.width, note))
            if until_idle and runner.idle and app.stats()["running"] == 0:
                idle_stop = True
                runner.request_stop()
    if failure:
        raise failure[0]
