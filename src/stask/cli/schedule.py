"""`stask schedule ...`: each worker's schedule in words, setting one, firing the due slots."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stask.cli.base import IsoDateTime, echo_json, parse_pairs, pass_app
from stask.core import schedules
from stask.core.facade import Stask
from stask.errors import StaskError, ValidationError
from stask.models import JSONDict, WorkerInfo, utcnow

SHOWN_RUNS = 3
KINDS = ("manual", "once", "hourly", "daily", "weekly", "periodic", "regular", "cron")
# Errors name the options the user typed, not the stored field names.
FLAGS = {
    "type": "TYPE",
    "start_time": "--start",
    "end_time": "--end",
    "expression": "--cron",
    "options": "-o/--option",
}
_FIELD = re.compile(r"schedule field '(\w+)'")


@click.group()
def schedule() -> None:
    """Show and edit worker schedules (manual, once, periodic, regular, cron)."""


def _local(schedule_: schedules.Schedule, slot: dt.datetime) -> str:
    return f"{schedules.local_time(schedule_, slot):%Y-%m-%d %H:%M %Z}"


def _entry(app: Stask, info: WorkerInfo, now: dt.datetime) -> JSONDict:
    """One worker's schedule as the listing shows it; a broken schedule shows its error."""
    entry: JSONDict = {"identifier": info.identifier, "active": info.active, "error": None}
    state = info.settings.get(schedules.STATE_KEY)
    last = schedules.read_stamp(state, "last_slot") if isinstance(state, dict) else None
    entry["last_slot"] = schedules.stamp(last) if last else None
    try:
        found = app.schedule(info.identifier)
        runs = schedules.next_runs(found, now, SHOWN_RUNS) if found.fires else []
        action = None
        if found.type != "manual":
            action = schedules.resolve_action(found, info.actions, info.identifier)
    except StaskError as err:
        entry.update(schedule=info.settings.get(schedules.SCHEDULE_KEY), description=None)
        entry.update(action=None, next_runs=[], next_runs_local=[], error=err.message)
        return entry
    entry.update(
        schedule=found.to_dict(),
        description=schedules.describe(found),
        action=action,
        next_runs=[schedules.local_time(found, run).isoformat() for run in runs],
        next_runs_local=[_local(found, run) for run in runs],
    )
    return entry


def _table(entries: list[JSONDict]) -> Table:
    table = Table()
    for column in ("Worker", "Action", "Schedule", "Next runs"):
        table.add_column(column)
    for entry in entries:
        worker = Text(entry["identifier"], style="" if entry["active"] else "grey50")
        if entry["error"]:
            table.add_row(worker, "", Text(f"invalid: {entry['error']}", style="red"), "")
            continue
        runs = "\n".join(entry["next_runs_local"]) or "—"
        table.add_row(worker, entry["action"] or "", entry["description"], runs)
    return table


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def list_(app: Stask, as_json: bool) -> None:
    """Each worker's schedule in words and its next runs (in the schedule's time zone)."""
    now = utcnow()
    entries = [_entry(app, info, now) for info in app.workers() if not info.orphaned]
    if as_json:
        echo_json([{k: v for k, v in e.items() if k != "next_runs_local"} for e in entries])
    elif not entries:
        click.echo("No workers registered - run `stask workers discover`.")
    else:
        Console().print(_table(entries))


def _raw_schedule(kind: str, frequency: str | None, given: dict[str, Any]) -> JSONDict:
    raw: JSONDict = {"type": kind}
    if kind in schedules.FREQUENCIES:
        raw = {"type": "periodic", "frequency": kind}
    elif frequency is not None:
        raw["frequency"] = frequency
    raw.update({key: value for key, value in given.items() if value is not None})
    return raw


@schedule.command("set")
@click.argument("identifier")
@click.argument("kind", metavar="TYPE", type=click.Choice(KINDS))
@click.option("--at", help="once: date and time, e.g. 2026-12-01T09:30 (schedule's zone).")
@click.option("--frequency", type=click.Choice(schedules.FREQUENCIES), help="periodic only.")
@click.option("--time", "time_", help="daily/weekly: HH:MM.")
@click.option("--minute", help="hourly: the minute past each hour (0-59).")
@click.option("--days", help="weekly: comma-separated days, e.g. mon,thu.")
@click.option("--start", help="regular: window start HH:MM.")
@click.option("--end", help="regular: window end HH:MM (before the start: next day).")
@click.option("--interval", help="regular: minutes between runs (5, 15, 30 or 60).")
@click.option("--cron", "expression", help="cron: expression, e.g. '*/10 9-17 * * mon-fri'.")
@click.option("--timezone", help="IANA time zone of the times above (default UTC).")
@click.option("--action", help="Action to run (default: make, or the worker's only action).")
@click.option(
    "-o",
    "--option",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Task option, as in `stask create -o` (JSON, text or @FILE). Repeatable.",
)
@click.option("--disable", is_flag=True, help="Store the schedule but do not fire it.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def set_(
    app: Stask,
    identifier: str,
    kind: str,
    frequency: str | None,
    pairs: tuple[str, ...],
    disable: bool,
    as_json: bool,
    **given: str | None,
) -> None:
    """Set IDENTIFIER's schedule to TYPE (hourly/daily/weekly are periodic schedules).

    \b
    Examples:
      stask schedule set report daily --time 05:00 --timezone Europe/Kyiv
      stask schedule set sync regular --start 05:00 --end 23:00 --interval 15
      stask schedule set digest cron --cron '*/10 9-17 * * mon-fri'
    """
    fields = {"time": given.pop("time_"), "start_time": given.pop("start")}
    fields.update(end_time=given.pop("end"), **given)
    raw = _raw_schedule(kind, frequency, fields)
    if pairs:
        raw["options"] = parse_pairs(pairs)
    if disable:
        raw["enabled"] = False
    try:
        stored = app.set_schedule(identifier, raw)
    except ValidationError as err:
        message = _FIELD.sub(lambda m: FLAGS.get(m[1], f"--{m[1]}"), err.message)
        raise ValidationError(message) from err
    if as_json:
        echo_json(_entry(app, app.worker(identifier), utcnow()))
        return
    runs = schedules.next_runs(stored, utcnow(), 1) if stored.fires else []
    after = f"; next run {_local(stored, runs[0])}" if runs else ""
    click.echo(f"Schedule of {identifier}: {schedules.describe(stored)}{after}")


@schedule.command("run-due")
@click.option("--now", type=IsoDateTime(), help="Act as if it were this time (ISO-8601).")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def run_due(app: Stask, now: dt.datetime | None, as_json: bool) -> None:
    """Create the tasks of due schedule slots once and exit (for cron, or without a runner)."""
    created = [app.get(task_id) for task_id in app.enqueue_due_schedules(now)]
    if as_json:
        echo_json([task.to_dict() for task in created])
    elif not created:
        click.echo("No schedule is due.")
    else:
        names = ", ".join(f"#{task.id} {task.identifier} {task.action}" for task in created)
        click.echo(f"Created {len(created)} task(s): {names}")
