"""The `stask` command line: thin click commands over the Stask facade."""

from __future__ import annotations

from pathlib import Path

import click

from stask import __version__
from stask.cli.base import AppFactory, StaskGroup
from stask.cli.queues import queues
from stask.cli.run import run, run_pending
from stask.cli.schedule import schedule
from stask.cli.tasks import cancel, clean, create, logs, migrate, retry, show, stats, tasks_
from stask.cli.wait import wait
from stask.cli.worker import worker
from stask.cli.workers import workers


@click.group(cls=StaskGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


for command in (
    migrate,
    create,
    tasks_,
    show,
    logs,
    cancel,
    retry,
    clean,
    stats,
    run,
    run_pending,
    worker,
    wait,
):
    cli.add_command(command)
cli.add_command(workers)
cli.add_command(schedule)
cli.add_command(queues)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="stask")
