"""The `stask` command line: thin click commands over the Stask facade.

Each command's module is imported only when that command runs (or its help is shown), so
`stask worker` never loads the terminal rendering, migration or schedule display libraries.
"""

from __future__ import annotations

from pathlib import Path

import click

from stask import __version__
from stask.cli.base import AppFactory, LazyCommand, StaskGroup

# name -> where the command lives, and the help `stask --help` shows without importing it
# (its docstring's first paragraph; tests/test_cli.py checks both against the real command).
COMMANDS = {
    "migrate": LazyCommand("stask.cli.tasks:migrate", "Create or upgrade the database tables."),
    "create": LazyCommand("stask.cli.tasks:create", "Queue a task for worker IDENTIFIER's ACTION."),
    "tasks": LazyCommand("stask.cli.tasks:tasks_", "List tasks, newest first."),
    "show": LazyCommand(
        "stask.cli.tasks:show", "Show one task: status, progress, ETA, result, error."
    ),
    "logs": LazyCommand("stask.cli.tasks:logs", "Print a task's log."),
    "cancel": LazyCommand(
        "stask.cli.tasks:cancel", "Cancel a pending task, or ask a running one to stop."
    ),
    "retry": LazyCommand("stask.cli.tasks:retry", "Queue a failed or cancelled task again."),
    "clean": LazyCommand(
        "stask.cli.tasks:clean",
        "Delete old finished tasks, old log lines and leftover task files.",
    ),
    "stats": LazyCommand("stask.cli.tasks:stats", "Task counts per status."),
    "run": LazyCommand(
        "stask.cli.run:run",
        "Run the web app and the task runner here, with a live progress table.",
    ),
    "run-pending": LazyCommand(
        "stask.cli.run:run_pending",
        "Run due tasks in this process and exit (for a cron entry every minute).",
    ),
    "worker": LazyCommand(
        "stask.cli.worker:worker",
        "Run tasks until stopped: the daemon for one or many hosts on one database.",
    ),
    "wait": LazyCommand(
        "stask.cli.wait:wait",
        "Follow a task with a progress bar until it ends; exit 0 only if it completed.",
    ),
    "workers": LazyCommand("stask.cli.workers:workers", "Manage registered workers."),
    "schedule": LazyCommand(
        "stask.cli.schedule:schedule",
        "Show and edit worker schedules (manual, once, periodic, regular, cron).",
    ),
    "web": LazyCommand(
        "stask.cli.web:web", "Serve the REST API (and admin UI) with uvicorn until Ctrl-C."
    ),
    "users": LazyCommand(
        "stask.cli.users:users", "Manage the people who may log in to the web app."
    ),
    "tokens": LazyCommand(
        "stask.cli.users:tokens",
        "Manage API tokens for scripts (sent as 'Authorization: Bearer <token>').",
    ),
    "queues": LazyCommand(
        "stask.cli.queues:queues",
        "Pause, resume and limit named queues; every runner obeys within about a second.",
    ),
    "runners": LazyCommand(
        "stask.cli.runners:runners",
        "List runner processes: host, slots, heartbeat, prefetch and learned task durations.",
    ),
}


@click.group(
    cls=StaskGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="stask")
@click.option("--database-url", envvar="STASK_DATABASE_URL", help="Overrides STASK_DATABASE_URL.")
@click.option("--storage", type=click.Path(path_type=Path), help="Overrides STASK_STORAGE.")
@click.option("--workers", "worker_modules", help="Comma-separated worker modules (STASK_WORKERS).")
@click.pass_context
def cli(
    ctx: click.Context, database_url: str | None, storage: Path | None, worker_modules: str | None
) -> None:
    """stask: background tasks with live progress on SQLite, PostgreSQL or MariaDB."""
    modules = None
    if worker_modules is not None:
        modules = [name.strip() for name in worker_modules.split(",") if name.strip()]
    factory = AppFactory(database_url=database_url, storage=storage, workers=modules)
    ctx.obj = factory
    ctx.call_on_close(factory.close)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="stask")
