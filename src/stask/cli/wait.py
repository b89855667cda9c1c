"""`stask wait ID`: a progress bar until the task ends; exit 0 only if it completed."""

from __future__ import annotations

import time

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn

from stask.cli.base import pass_app
from stask.cli.render import markdown_text, nice_eta
from stask.core.facade import Stask
from stask.errors import StaskError
from stask.models import Status, Task

EXIT_NOT_COMPLETED = 1


class WaitTimedOut(StaskError):
    """The task did not end in time."""


def _fields(task: Task) -> dict[str, object]:
    total = task.total or 100
    done = task.processed if task.total else task.progress
    counts = f"{task.processed}/{task.total}" if task.total else ""
    return {
        "total": total,
        "completed": done,
        "status": task.display_status,
        "counts": counts,
        "eta": nice_eta(task.eta_seconds) if task.status is Status.RUNNING else "",
        "message": markdown_text(task.message).plain,
    }


@click.command()
@click.argument("task_id", type=int)
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=0.25,
    show_default=True,
    help="Seconds between looks at the task.",
)
@pass_app
@click.pass_context
def wait(
    ctx: click.Context, app: Stask, task_id: int, timeout: float | None, interval: float
) -> None:
    """Follow a task with a progress bar until it ends; exit 0 only if it completed."""
    task = app.get(task_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    console = Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn(f"#{task.id} {task.identifier} → {task.action}"),
        TextColumn("[bold]{task.fields[status]}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TextColumn("{task.fields[message]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("task", **_fields(task))  # type: ignore[arg-type]
        while not task.is_finished:
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimedOut(
                    f"task {task_id} is still {task.display_status} after {timeout:g} s"
                )
            time.sleep(interval)
            task = app.get(task_id)
            progress.update(bar, **_fields(task))  # type: ignore[arg-type]
    duration = f" in {task.duration_ms / 1000:.1f} s" if task.duration_ms is not None else ""
    summary = f"Task {task.id} {task.status.value}{duration}"
    if task.message:
        summary += f": {markdown_text(task.message).plain}"
    click.echo(summary)
    if task.status is not Status.COMPLETED:
        ctx.exit(EXIT_NOT_COMPLETED)
