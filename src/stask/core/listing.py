"""Finding tasks: filters, the structured search box, keyset pages, capped counts, exports.

Search terms (space separated, quotes for spaces): ``123`` / ``#123`` / ``id:123`` (one task,
by its primary key), ``worker:NAME``, ``status:failed,cancelled``, ``queue:NAME``,
``action:NAME``, ``meta.KEY:VALUE`` (``meta.a.b:VALUE`` for nested keys), ``after:DATE`` and
``before:DATE`` (ISO 8601, on created_at). Anything else is refused with the syntax.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import shlex
from collections.abc import Iterator
from typing import Any

from stask.core.redact import Redactor
from stask.core.worker import normalize_action
from stask.db.listing import TaskLists
from stask.db.store import Store
from stask.errors import ValidationError
from stask.models import LogEntry, Status, Task, TaskQuery, to_utc_naive

COUNT_CAP = 10_000
# A search no index orders (a meta value, an action, a queue, dates) reads rows one by one:
# one request reads at most this many ids, newest first, then answers what it found and where
# to go on (a rare value in 1,000,000 tasks would otherwise read them all, ~0.5 s).
SCAN_WINDOW = 100_000
PREVIEW_CHARS = 200
MAX_PAGE = 500
SEARCH_HELP = (
    "use 123, #123, id:123, worker:NAME, status:failed,cancelled, queue:NAME, action:NAME, "
    "meta.KEY:VALUE, after:2026-01-31, before:2026-02-01"
)
EXPORT_COLUMNS = (
    "id",
    "identifier",
    "action",
    "status",
    "priority",
    "queue",
    "progress",
    "attempts",
    "max_attempts",
    "started_by",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
    "message",
    "options",
    "result",
)


def _moment(value: str, term: str) -> dt.datetime:
    try:
        return to_utc_naive(dt.datetime.fromisoformat(value))
    except ValueError:
        raise ValidationError(f"{term!r}: {value!r} is not an ISO 8601 date or time") from None


def _task_id(value: str, term: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise ValidationError(f"{term!r}: a task id is a positive whole number")
    return int(value)


def parse_search(text: str, base: TaskQuery | None = None) -> TaskQuery:
    """The query a search box's text asks for, on top of ``base``'s filters."""
    query = base or TaskQuery()
    if len(text) > 1000:
        raise ValidationError("a search is at most 1000 characters")
    try:
        terms = shlex.split(text)
    except ValueError as err:
        raise ValidationError(f"search: {err} - close the quote") from None
    meta = list(query.meta)
    changes: dict[str, Any] = {}
    for term in terms:
        if term.startswith("#") or term.isdigit():
            changes["task_id"] = _task_id(term.lstrip("#"), term)
            continue
        name, sep, value = term.partition(":")
        key = name.lower()
        if sep and value and key.startswith("meta.") and len(key) > 5:
            meta.append((name[5:], value))
            continue
        field = _TERMS.get(key) if sep and value else None
        if field is None:
            raise ValidationError(f"unknown search term {term!r} - {SEARCH_HELP}")
        changes[field[0]] = field[1](value, term)
    return dataclasses.replace(query, meta=tuple(meta), **changes)


_TERMS: dict[str, tuple[str, Any]] = {
    "id": ("task_id", _task_id),
    "worker": ("identifier", lambda value, _term: value),
    "identifier": ("identifier", lambda value, _term: value),
    "status": (
        "statuses",
        lambda value, _term: tuple(Status.parse(s) for s in value.split(",") if s),
    ),
    "queue": ("queue", lambda value, _term: value),
    "action": ("action", lambda value, _term: normalize_action(value)),
    "after": ("created_from", _moment),
    "before": ("created_to", _moment),
}


def _preview(value: Any) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a list. ``searched_to`` is set when a scan window ended the search before
    the oldest task: ids from it up were read, and ``next_cursor`` (= ``searched_to``) goes on
    below it, even when this page has fewer rows than asked for."""

    tasks: list[Task]
    next_cursor: int | None
    searched_to: int | None = None


@dataclasses.dataclass(frozen=True)
class Count:
    count: int
    capped: bool  # more than the cap match
    searched_to: int | None = None  # only ids from here up were counted (a scan window)

    @property
    def text(self) -> str:
        """ "1,234", or "10,000+" when capped or when older tasks were not searched."""
        more = self.capped or self.searched_to is not None
        return f"{self.count:,}+" if more else f"{self.count:,}"


class Listing:
    def __init__(self, store: Store, redactor: Redactor) -> None:
        self.rows = TaskLists(store)
        self.redact = redactor

    def _window(self, query: TaskQuery, window: int | None) -> TaskQuery:
        """``query`` with a floor ``window`` ids below where it starts, if it scans and the
        table reaches further down than that."""
        if not query.scans:
            return query
        ends = self.rows.id_range()
        if ends is None:
            return query
        oldest, newest = ends
        top = min(query.before_id or newest + 1, newest + 1)
        floor = top - (SCAN_WINDOW if window is None else window)
        return dataclasses.replace(query, from_id=floor) if floor > oldest else query

    def search(self, query: TaskQuery, limit: int = 50, window: int | None = None) -> Page:
        """One page, newest first; a query no index orders reads at most ``window`` ids
        (default SCAN_WINDOW)."""
        limit = max(1, min(limit, MAX_PAGE))
        bounded = self._window(query, window)
        found = self.rows.page(bounded, limit + 1)
        more = len(found) > limit
        found = found[:limit]
        if more and found:
            return Page(found, found[-1].id)
        if bounded.from_id is not None:  # the window ended before the table did
            return Page(found, bounded.from_id, searched_to=bounded.from_id)
        return Page(found, None)

    def page(self, query: TaskQuery, limit: int = 50) -> tuple[list[Task], int | None]:
        """One page, newest first, and the cursor of the next page (None at the end)."""
        found = self.search(query, limit)
        return found.tasks, found.next_cursor

    def count(self, query: TaskQuery, cap: int = COUNT_CAP) -> tuple[int, bool]:
        """Every match, counted up to ``cap`` (reads the whole table for a rare meta value:
        for a bulk action's confirmation, not for a page)."""
        return self.rows.count(dataclasses.replace(query, before_id=None), cap)

    def estimate(self, query: TaskQuery, cap: int = COUNT_CAP, window: int | None = None) -> Count:
        """A count for a page: capped at ``cap``, and over the newest ``window`` ids (default
        SCAN_WINDOW) when no index orders the query (then marked with ``searched_to``)."""
        bounded = self._window(dataclasses.replace(query, before_id=None), window)
        count, capped = self.rows.count(bounded, cap)
        return Count(count, capped, None if capped else bounded.from_id)

    def row(self, task: Task) -> dict[str, Any]:
        """A list row: the task without its error, options and result as short previews."""
        data = self.detail(task)
        data["options"] = _preview(data["options"])
        data["result"] = _preview(data["result"])
        data["error"] = None if task.error is None else task.error.strip().splitlines()[-1][:200]
        return data

    def detail(self, task: Task) -> dict[str, Any]:
        data = task.to_dict()
        data["options"] = self.redact(data["options"])
        data["result"] = self.redact(data["result"])
        return data

    def log(self, entry: LogEntry) -> dict[str, Any]:
        data = entry.to_dict()
        data["context"] = self.redact(data["context"])
        return data

    def ids(self, query: TaskQuery, chunk: int = 500) -> Iterator[list[int]]:
        return self.rows.ids(query, chunk)

    def export(self, query: TaskQuery, fmt: str) -> Iterator[str]:
        """The matching tasks as CSV or JSON lines, produced as they are read."""
        if fmt not in ("csv", "jsonl"):
            raise ValidationError(f"unknown export format {fmt!r} - use csv or jsonl")
        if fmt == "jsonl":
            for task in self.rows.walk(query):
                yield json.dumps(self.detail(task), ensure_ascii=False, default=str) + "\n"
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_COLUMNS)
        for task in self.rows.walk(query):
            data = self.detail(task)
            writer.writerow(
                [
                    json.dumps(data[c], ensure_ascii=False)
                    if c in ("options", "result")
                    else _csv_safe(data[c])
                    for c in EXPORT_COLUMNS
                ]
            )
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()


def _csv_safe(value: Any) -> Any:
    """Cells a spreadsheet would run as formulas get a leading quote (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value
