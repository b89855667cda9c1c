"""Terminal rendering helpers that need no database."""

from __future__ import annotations

import datetime as dt

import pytest
from rich.console import Console

from stask.cli.render import WIDE_TABLE, markdown_text, nice_eta, tasks_table
from stask.models import Priority, Status, Task


def test_markdown_spans_become_styles() -> None:
    text = markdown_text("Imported **12** of 40 from `a.csv`")
    assert text.plain == "Imported 12 of 40 from a.csv"
    styles = {text.plain[span.start : span.end]: str(span.style) for span in text.spans}
    assert styles == {"12": "bold", "a.csv": "cyan"}
    assert markdown_text(None).plain == ""
    assert markdown_text("2 * 3 = 6").plain == "2 * 3 = 6"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "—"), (0, "0s"), (59, "59s"), (150, "2m 30s"), (3600, "1h 00m"), (7322, "2h 02m")],
)
def test_nice_eta(seconds: int | None, shown: str) -> None:
    assert nice_eta(seconds) == shown


def _task(task_id: int, identifier: str, status: Status, message: str) -> Task:
    now = dt.datetime(2026, 11, 24, 12, 0)
    return Task(
        id=task_id, identifier=identifier, action="import", status=status,
        priority=Priority.NORMAL, queue="default", options={}, result=None, progress=40,
        processed=120, total=300, eta_seconds=30, message=message, error=None, attempts=1,
        max_attempts=3, run_at=now, unique_key=None, started_by=None, locked_by=None,
        locked_at=None, cancel_requested=False, created_at=now, started_at=now,
        finished_at=None, updated_at=now, duration_ms=None, peak_memory=None,
    )  # fmt: skip


@pytest.mark.parametrize("width", [80, 100, 160])
def test_tasks_table_keeps_what_identifies_a_task_at_any_width(width: int) -> None:
    tasks = [
        _task(12345, "product_import", Status.RUNNING, "Imported **120** of 300 rows " * 4),
        _task(7, "cleanup", Status.COMPLETED, "Done"),
    ]
    console = Console(width=width, record=True, color_system=None)
    console.print(tasks_table(tasks, width=width))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    body = "\n".join(lines)
    for whole in ("12345", "product_import", "running", "completed", "40%", "Imported"):
        assert whole in body, (whole, body)
    wide = width >= WIDE_TABLE
    assert ("Created" in body, "120/300" in body) == (wide, wide)
