"""Turning tasks, workers and logs into terminal output with rich."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from stask.core.redact import Redactor
from stask.models import LogEntry, Task, WorkerInfo

STATUS_STYLES = {
    "pending": "blue",
    "scheduled": "cyan",
    "retrying": "magenta",
    "preparing": "yellow",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "grey50",
}
LEVEL_STYLES = {
    "debug": "grey50",
    "info": "",
    "warning": "yellow",
    "error": "red",
    "critical": "bold red",
}


_INLINE_MARKDOWN = re.compile(r"\*\*(.+?)\*\*|`([^`]+)`")


DEFAULT_REDACTOR = Redactor()


def markdown_text(message: str | None) -> Text:
    """A task message (Markdown, raw HTML off) as terminal text: **bold** and `code` spans."""
    text = Text()
    source = message or ""
    position = 0
    for match in _INLINE_MARKDOWN.finditer(source):
        text.append(source[position : match.start()])
        bold, code = match.groups()
        text.append(bold if bold is not None else code, style="bold" if bold else "cyan")
        position = match.end()
    text.append(source[position:])
    return text


def nice_eta(seconds: int | None) -> str:
    """``2m 30s`` as the seed's niceEta; ``—`` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def when(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    return value.replace(tzinfo=dt.UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def status_text(task: Task) -> Text:
    shown = task.display_status
    return Text(shown, style=STATUS_STYLES.get(shown, ""))


def progress_cell(task: Task, width: int = 20, *, totals: bool = True) -> RenderableType:
    bar = ProgressBar(total=100, completed=task.progress, width=width)
    counts = _counts(task, totals=totals)
    return Group(bar, Text(counts)) if width < 12 else _inline(bar, counts)


def _counts(task: Task, *, totals: bool = True) -> str:
    counts = f" {task.progress:3d}%"
    if totals and task.total:
        counts += f" {task.processed}/{task.total}"
    return counts


def _inline(bar: ProgressBar, counts: str) -> Table:
    grid = Table.grid(padding=(0, 0))
    grid.add_row(bar, Text(counts))
    return grid


WIDE_TABLE = 120  # narrower consoles get the columns that identify a task and its state


def tasks_table(
    tasks: Sequence[Task], *, title: str | None = None, width: int | None = None
) -> Table:
    """Tasks as a table for a console ``width`` columns wide (None: as wide as it takes).

    Below WIDE_TABLE columns, priority, ETA, counts and creation time are left out and the
    progress bar is shorter. The message gets what the other columns leave, so ID, worker,
    action and status are never squeezed (at 80 columns rich used to shrink them to nothing).
    """
    wide = width is None or width >= WIDE_TABLE
    bar = 20 if wide else 12
    columns: list[tuple[str, dict[str, Any], Sequence[RenderableType], int]] = []

    def column(header: str, cells: Sequence[RenderableType], size: int, **options: Any) -> None:
        columns.append((header, {"no_wrap": True, **options}, cells, max(len(header), size)))

    def longest(values: Sequence[str]) -> int:
        return max((len(value) for value in values), default=0)

    ids = [str(task.id) for task in tasks]
    column("ID", ids, longest(ids), justify="right")
    names = [task.identifier for task in tasks]
    column("Worker", names, min(24, longest(names)), overflow="ellipsis", max_width=24)
    actions = [task.action for task in tasks]
    column("Action", actions, min(20, longest(actions)), overflow="ellipsis", max_width=20)
    statuses = [status_text(task) for task in tasks]
    column("Status", statuses, max((len(s.plain) for s in statuses), default=0))
    if wide:
        column("Priority", [task.priority.value for task in tasks], 6)
    counts = [_counts(task, totals=wide) for task in tasks]
    column("Progress", [progress_cell(t, bar, totals=wide) for t in tasks], bar + longest(counts))
    if wide:
        etas = [nice_eta(t.eta_seconds) if t.status.value == "running" else "" for t in tasks]
        column("ETA", etas, longest(etas), justify="right")
    message = len(columns)
    column("Message", [markdown_text(task.message) for task in tasks], 0, overflow="ellipsis")
    if wide:
        column("Created", [when(task.created_at) for task in tasks], 19)
    # The message gets what borders, padding (3 per column, plus 1) and the others leave.
    others = sum(size for n, (*_, size) in enumerate(columns) if n != message)
    room = 60 if width is None else min(60, max(8, width - 3 * len(columns) - 1 - others))
    columns[message][1]["max_width"] = room

    table = Table(title=title, expand=False)
    for header, options, _, _ in columns:
        table.add_column(header, **options)
    for row in zip(*(cells for _, _, cells, _ in columns), strict=True):
        table.add_row(*row)
    return table


def task_detail(task: Task, redact: Redactor = DEFAULT_REDACTOR) -> Table:
    """Option and result values under secret-looking keys show as [redacted]."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    rows: list[tuple[str, RenderableType]] = [
        ("Task", f"#{task.id} {task.identifier} → {task.action}"),
        ("Status", status_text(task)),
        ("Priority", task.priority.value),
        ("Queue", task.queue),
        ("Progress", progress_cell(task, width=30)),
        ("ETA", nice_eta(task.eta_seconds)),
        ("Message", markdown_text(task.message)),
        ("Attempts", f"{task.attempts} of {task.max_attempts}"),
        ("Options", Text(str(redact(task.options)))),
        ("Result", Text("" if task.result is None else str(redact(task.result)))),
        ("Created", when(task.created_at)),
        ("Run at", when(task.run_at)),
        ("Started", when(task.started_at)),
        ("Finished", when(task.finished_at)),
    ]
    if task.duration_ms is not None:
        rows.append(("Duration", f"{task.duration_ms / 1000:.2f} s"))
    if task.error:
        rows.append(("Error", Text(task.error.rstrip(), style="red")))
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def workers_table(workers: Sequence[WorkerInfo], counts: dict[str, int]) -> Table:
    table = Table()
    columns = ("Identifier", "Title", "Scope", "Status", "Actions", "Tasks", "Rate limit", "Class")
    for column in columns:
        table.add_column(column)
    for info in workers:
        state = "orphaned" if info.orphaned else ("active" if info.active else "inactive")
        style = {"active": "green", "inactive": "grey50", "orphaned": "red"}[state]
        table.add_row(
            info.identifier,
            info.title,
            info.scope,
            Text(state, style=style),
            ", ".join(info.actions),
            str(counts.get(info.identifier, 0)),
            "—"
            if info.rate_limit is None
            else f"{info.rate_limit} per {info.rate_period_seconds} s",
            info.class_path,
        )
    return table


def log_line(entry: LogEntry, redact: Redactor = DEFAULT_REDACTOR) -> Text:
    line = Text(f"[{when(entry.ts)}] ")
    line.append(f"{entry.level.upper():8}", style=LEVEL_STYLES.get(entry.level, ""))
    line.append(f" {entry.message}")
    context = redact({k: v for k, v in entry.context.items() if k != "traceback"})
    if context:
        line.append(f" {context}", style="grey50")
    if "traceback" in entry.context:
        line.append("\n" + str(entry.context["traceback"]).rstrip(), style="red")
    return line
