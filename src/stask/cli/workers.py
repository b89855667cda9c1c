"""`stask workers ...`: list, discover, rescan, clean-orphaned, activate, deactivate, config,
limit."""

from __future__ import annotations

import click
from rich.console import Console

from stask.cli.base import echo_json, parse_value, pass_app
from stask.cli.render import workers_table
from stask.core.facade import Stask
from stask.core.queues import LIMIT_MAX
from stask.errors import NotFound
from stask.models import WorkerInfo


@click.group()
def workers() -> None:
    """Manage registered workers."""


def _names(found: list[WorkerInfo] | list[str]) -> str:
    names = [item if isinstance(item, str) else item.identifier for item in found]
    return ", ".join(names) if names else "none"


@workers.command("list")
@click.option("--active", "active_only", is_flag=True, help="Only active workers.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def list_(app: Stask, active_only: bool, as_json: bool) -> None:
    """List registered workers."""
    found = app.workers(active_only=active_only)
    if as_json:
        echo_json([info.to_dict() for info in found])
    elif not found:
        click.echo("No workers registered - run `stask workers discover`.")
    else:
        Console().print(workers_table(found, app.task_counts_by_worker()))


@workers.command()
@pass_app
def discover(app: Stask) -> None:
    """Register workers found in STASK_WORKERS modules and entry points."""
    found = app.discover()
    click.echo(f"Registered {len(found)} new worker(s): {_names(found)}")


@workers.command()
@pass_app
def rescan(app: Stask) -> None:
    """Refresh the metadata of registered workers from their classes."""
    found = app.rescan()
    click.echo(f"Updated {len(found)} worker(s): {_names(found)}")


@workers.command("clean-orphaned")
@pass_app
def clean_orphaned(app: Stask) -> None:
    """Remove workers whose class can no longer be imported."""
    removed = app.clean_orphaned()
    click.echo(f"Removed {len(removed)} orphaned worker(s): {_names(removed)}")


@workers.command()
@click.argument("identifier")
@pass_app
def activate(app: Stask, identifier: str) -> None:
    """Let IDENTIFIER's tasks be created and run."""
    app.activate(identifier)
    click.echo(f"Worker {identifier} is active.")


@workers.command()
@click.argument("identifier")
@pass_app
def deactivate(app: Stask, identifier: str) -> None:
    """Stop running IDENTIFIER's tasks (they stay queued) and refuse new ones."""
    app.deactivate(identifier)
    click.echo(f"Worker {identifier} is inactive.")


@workers.command()
@click.argument("identifier")
@click.argument("key", required=False)
@click.argument("value", required=False)
@pass_app
def config(app: Stask, identifier: str, key: str | None, value: str | None) -> None:
    """Show all settings, show KEY (dot notation), or set KEY to VALUE.

    VALUE is JSON when it parses (75, true, null), else text; a VALUE starting with [, { or "
    must be valid JSON, and @FILE reads the value from a JSON file.
    """
    if value is not None and key is not None:
        app.set_config(identifier, key, parse_value(value, key, what="setting"))
        click.echo(f"Set {identifier} {key} = {app.get_config(identifier, key)!r}")
        return
    missing = object()
    found = app.get_config(identifier, key, missing)
    if found is missing:
        raise NotFound(f"worker {identifier!r} has no setting {key!r}")
    echo_json(found)


@workers.command()
@click.argument("identifier")
@click.option(
    "--rate",
    type=click.IntRange(min=1, max=LIMIT_MAX),
    help="At most N of IDENTIFIER's tasks started per --per seconds, across every runner.",
)
@click.option(
    "--per",
    "per_seconds",
    type=click.IntRange(min=1, max=LIMIT_MAX),
    metavar="SECONDS",
    help="Rate period.",
)
@click.option("--clear", is_flag=True, help="Remove IDENTIFIER's rate limit.")
@pass_app
def limit(
    app: Stask, identifier: str, rate: int | None, per_seconds: int | None, clear: bool
) -> None:
    """Set the cluster-wide rate limit of worker IDENTIFIER (retries count as starts)."""
    given = rate is not None or per_seconds is not None
    if clear and given:
        raise click.UsageError("--clear removes the limit; give it without --rate or --per")
    if not clear and (rate is None or per_seconds is None):
        raise click.UsageError("give --rate N --per SECONDS (e.g. --rate 10 --per 60), or --clear")
    info = app.set_worker_rate_limit(identifier, rate, per_seconds)
    if info.rate_limit is None:
        click.echo(f"Worker {identifier}: no rate limit.")
    else:
        click.echo(
            f"Worker {identifier}: at most {info.rate_limit} started per "
            f"{info.rate_period_seconds} s."
        )
