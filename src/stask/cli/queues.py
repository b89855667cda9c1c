"""`stask queues ...`: list named queues, pause and resume them, set cluster-wide limits."""

from __future__ import annotations

import datetime as dt

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stask.cli.base import IsoDateTime, echo_json, pass_app
from stask.core.facade import Stask
from stask.core.queues import LIMIT_MAX
from stask.models import QueueInfo

POSITIVE = click.IntRange(min=1, max=LIMIT_MAX)


@click.group()
def queues() -> None:
    """Pause, resume and limit named queues; every runner obeys within about a second."""


def _local(moment: dt.datetime) -> str:
    return f"{moment.replace(tzinfo=dt.UTC).astimezone():%Y-%m-%d %H:%M:%S %Z}"


def _state(info: QueueInfo) -> Text:
    if info.paused_until is not None:
        return Text(f"paused until {_local(info.paused_until)}", style="yellow")
    if info.paused:
        return Text("paused", style="red")
    return Text("active", style="green")


def _limits(info: QueueInfo) -> str:
    parts = []
    if info.concurrency_limit is not None:
        parts.append(f"at most {info.concurrency_limit} running")
    if info.rate_limit is not None:
        parts.append(f"at most {info.rate_limit} started per {info.rate_period_seconds} s")
    return ", ".join(parts) or "no limits"


def _table(found: list[QueueInfo]) -> Table:
    table = Table()
    for column in ("Queue", "State", "Running", "Pending", "Concurrency", "Rate"):
        table.add_column(column, justify="right" if column in ("Running", "Pending") else "left")
    for info in found:
        concurrency = "—" if info.concurrency_limit is None else str(info.concurrency_limit)
        rate = "—"
        if info.rate_limit is not None:
            rate = (
                f"{info.rate_limit} per {info.rate_period_seconds} s "
                f"({info.started_in_period or 0} in period)"
            )
        table.add_row(
            info.name, _state(info), str(info.running), str(info.pending), concurrency, rate
        )
    return table


@queues.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def list_(app: Stask, as_json: bool) -> None:
    """List queues that have controls, pending or running tasks."""
    found = app.queues()
    if as_json:
        echo_json([info.to_dict() for info in found])
    elif not found:
        click.echo("No queues yet - creating tasks makes them; pause or limit one by name.")
    else:
        Console().print(_table(found))


@queues.command()
@click.argument("name")
@click.option(
    "--until",
    type=IsoDateTime(),
    help="Resume by itself at this ISO-8601 time (without an offset: local time).",
)
@pass_app
def pause(app: Stask, name: str, until: dt.datetime | None) -> None:
    """Stop claiming from queue NAME (running tasks finish) until resumed or --until."""
    info = app.pause_queue(name, until)
    when = f"until {_local(info.paused_until)}" if info.paused_until else "until resumed"
    click.echo(f"Queue {name} is paused {when}.")


@queues.command()
@click.argument("name")
@pass_app
def resume(app: Stask, name: str) -> None:
    """Let runners claim from queue NAME again."""
    app.resume_queue(name)
    click.echo(f"Queue {name} is active.")


@queues.command()
@click.argument("name")
@click.option("--concurrency", type=POSITIVE, help="At most N tasks of NAME running at once.")
@click.option("--rate", type=POSITIVE, help="At most N tasks of NAME started per --per seconds.")
@click.option("--per", "per_seconds", type=POSITIVE, metavar="SECONDS", help="Rate period.")
@click.option("--clear", is_flag=True, help="Remove every limit of NAME.")
@pass_app
def limit(
    app: Stask,
    name: str,
    concurrency: int | None,
    rate: int | None,
    per_seconds: int | None,
    clear: bool,
) -> None:
    """Set the cluster-wide limits of queue NAME; limits not given are removed."""
    given = concurrency is not None or rate is not None or per_seconds is not None
    if clear and given:
        raise click.UsageError("--clear removes every limit; give it without other options")
    if not clear and not given:
        raise click.UsageError("give --concurrency N, --rate N --per SECONDS, or --clear")
    if (rate is None) != (per_seconds is None):
        raise click.UsageError("--rate and --per go together, e.g. --rate 10 --per 60")
    info = app.set_queue_limits(name, concurrency, rate, per_seconds)
    click.echo(f"Queue {name}: {_limits(info)}.")
