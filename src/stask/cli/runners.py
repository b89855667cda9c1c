"""`stask runners`: the runner processes on this database and what each learned of its tasks."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stask.cli.base import echo_json, pass_app
from stask.core.facade import Stask
from stask.models import JSONDict


def _prefetch(pace: Any) -> str:
    if not isinstance(pace, dict):
        return "—"
    if not pace.get("adaptive"):
        return f"{pace.get('prefetch')} (fixed)"
    return f"{pace.get('prefetch')} (adaptive, 0-{pace.get('bound')})"


def _ms(value: Any) -> str:
    return "—" if not isinstance(value, int | float) else f"{value:,.1f} ms"


def _durations(pace: Any, shown: int) -> str:
    """The learned mean per action, the most seen first."""
    actions = pace.get("actions") if isinstance(pace, dict) else None
    if not isinstance(actions, dict) or not actions:
        return "none yet"
    items = [f"{key} {_ms(item.get('ms'))} ({item.get('seen')}x)" for key, item in actions.items()]
    more = len(items) - shown
    return "\n".join(items[:shown]) + (f"\n... {more} more" if more > 0 else "")


def _table(found: list[JSONDict], shown: int) -> Table:
    table = Table()
    for column in ("Runner", "Host", "PID", "Slots", "Queues", "Heartbeat", "Prefetch", "Turn"):
        table.add_column(column, justify="right" if column in ("PID", "Slots") else "left")
    table.add_column("Learned durations")
    for runner in found:
        pace = runner.get("pace")
        beat: dt.datetime = runner["heartbeat_at"]
        state = Text(f"{beat:%H:%M:%S} UTC", style="green" if runner["live"] else "red")
        table.add_row(
            str(runner["id"]),
            str(runner["host"]),
            str(runner["pid"]),
            str(runner["concurrency"]),
            ", ".join(runner["queues"]) or "all",
            state,
            _prefetch(pace),
            _ms(pace.get("turn_ms")) if isinstance(pace, dict) else "—",
            _durations(pace, shown),
        )
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Everything, as JSON.")
@click.option(
    "--actions",
    "shown",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Learned durations shown per runner.",
)
@pass_app
def runners(app: Stask, as_json: bool, shown: int) -> None:
    """List runner processes: host, slots, heartbeat, prefetch and learned task durations."""
    found = app.runners()
    if as_json:
        echo_json(found)
    elif not found:
        click.echo("No runners: start one with `stask worker`.")
    else:
        Console().print(_table(found, shown))
