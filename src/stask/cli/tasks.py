"""Commands about tasks: migrate, create, list, show, logs, cancel, retry, clean, stats."""

from __future__ import annotations

import datetime as dt
import time

import click
from rich.console import Console
from rich.text import Text

from stask.cli.base import IsoDateTime, echo_json, parse_pairs, pass_app
from stask.cli.render import log_line, nice_eta, task_detail, tasks_table
from stask.core.facade import Stask
from stask.models import Priority, Status

FOLLOW_POLL_SECONDS = 0.5
STATUS_NAMES = [s.value for s in Status]


@click.command()
@pass_app
def migrate(app: Stask) -> None:
    """Create or upgrade the database tables."""
    app.migrate()
    click.echo(f"Database {app.database_label()} is up to date.")


@click.command()
@click.argument("identifier")
@click.argument("action")
@click.option(
    "-o",
    "--option",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help=(
        "Task option, repeatable; a.b=1 nests. VALUE is JSON when it parses (300, true), "
        'else text; a VALUE starting with [, { or " must be valid JSON; KEY=@FILE reads '
        "the value from a JSON file."
    ),
)
@click.option(
    "--priority",
    type=click.Choice([p.value for p in Priority]),
    default="normal",
    show_default=True,
)
@click.option("--at", "run_at", type=IsoDateTime(), help="Run no earlier than this ISO-8601 time.")
@click.option("--queue", help="Queue name (default: the worker's).")
@click.option("--max-attempts", type=click.IntRange(min=1), help="Attempts before failing.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an attempt may run (overrides the worker's).",
)
@click.option(
    "--deadline", type=IsoDateTime(), help="Expire instead of starting after this ISO-8601 time."
)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@pass_app
def create(
    app: Stask,
    identifier: str,
    action: str,
    pairs: tuple[str, ...],
    priority: str,
    run_at: dt.datetime | None,
    queue: str | None,
    max_attempts: int | None,
    timeout: float | None,
    deadline: dt.datetime | None,
    as_json: bool,
) -> None:
    """Queue a task for worker IDENTIFIER's ACTION."""
    options = parse_pairs(pairs)
    task = app.create(
        identifier,
        action,
        options,
        priority=priority,
        run_at=run_at,
        queue=queue,
        max_attempts=max_attempts,
        started_by="cli",
        timeout=timeout,
        deadline=deadline,
    )
    if as_json:
        echo_json(app.listing.detail(task))
    else:
        click.echo(
            f"Created task {task.id}: {task.identifier} → {task.action} ({task.display_status})"
        )


@click.command("tasks")
@click.option("--status", type=click.Choice(STATUS_NAMES), multiple=True, help="Repeatable.")
@click.option("--worker", help="Worker identifier.")
@click.option("--action", help="Action name.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def tasks_(
    app: Stask,
    status: tuple[str, ...],
    worker: str | None,
    action: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List tasks, newest first."""
    found = app.list(
        status=list(status) or None, worker=worker, action=action, limit=limit, offset=offset
    )
    if as_json:
        echo_json([app.listing.detail(task) for task in found])
    elif not found:
        click.echo("No tasks.")
    else:
        console = Console()
        console.print(tasks_table(found, width=console.width))


@click.command()
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def show(app: Stask, task_id: int, as_json: bool) -> None:
    """Show one task: status, progress, ETA, result, error."""
    task = app.get(task_id)
    attempts = [
        {
            "attempt": entry.context.get("attempt"),
            "at": entry.to_dict()["ts"],
            "error": entry.message,
            "traceback": entry.context["traceback"],
        }
        for entry in app.get_error_logs(task_id)
        if "traceback" in entry.context
    ]
    if as_json:
        data = app.listing.detail(task)
        data["eta"] = nice_eta(task.eta_seconds)
        data["attempt_errors"] = attempts
        echo_json(data)
        return
    console = Console()
    console.print(task_detail(task, app.redactor))
    for failed in attempts:
        console.print(f"\n[bold]Attempt {failed['attempt']}[/bold] failed at {failed['at']}:")
        console.print(Text(str(failed["traceback"]).rstrip(), style="red"))


@click.command()
@click.argument("task_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until the task ends.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_app
def logs(app: Stask, task_id: int, follow: bool, as_json: bool) -> None:
    """Print a task's log."""
    app.get(task_id)  # a clear error for an unknown id
    console = Console(highlight=False)
    last_id: int | None = None
    while True:
        for entry in app.get_logs(task_id, after_id=last_id):
            if as_json:
                echo_json(app.listing.log(entry))
            else:
                console.print(log_line(entry, app.redactor))
            last_id = entry.id
        if not follow or app.get(task_id).is_finished:
            if follow:  # lines written between the last read and the end
                for entry in app.get_logs(task_id, after_id=last_id):
                    console.print(log_line(entry))
            return
        time.sleep(FOLLOW_POLL_SECONDS)


@click.command()
@click.argument("task_id", type=int)
@pass_app
def cancel(app: Stask, task_id: int) -> None:
    """Cancel a pending task, or ask a running one to stop."""
    task = app.cancel(task_id)
    if task.status is Status.CANCELLED:
        click.echo(f"Task {task_id} cancelled.")
    else:
        click.echo(f"Task {task_id} is {task.status.value}; it stops at its next progress report.")


@click.command()
@click.argument("task_id", type=int)
@pass_app
def retry(app: Stask, task_id: int) -> None:
    """Queue a failed or cancelled task again."""
    app.retry(task_id)
    click.echo(f"Task {task_id} queued again.")


@click.command()
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Delete what finished (or was logged) more than this many days ago.",
)
@click.option("--json", "as_json", is_flag=True)
@pass_app
def clean(app: Stask, days: int, as_json: bool) -> None:
    """Delete old finished tasks, old log lines and leftover task files."""
    counts = {
        "tasks": app.clean_old_tasks(days),
        "logs": app.clean_old_logs(days),
        "files": app.clean_old_files(days),
    }
    if as_json:
        echo_json(counts)
    else:
        click.echo(
            f"Deleted {counts['tasks']} task(s), {counts['logs']} log line(s) and "
            f"{counts['files']} file folder(s) older than {days} day(s)."
        )


@click.command()
@click.option("--worker", help="Only this worker's tasks.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def stats(app: Stask, worker: str | None, as_json: bool) -> None:
    """Task counts per status."""
    counts = app.stats(worker=worker)
    if as_json:
        echo_json(counts)
    else:
        click.echo("  ".join(f"{name}: {n}" for name, n in counts.items()))
