"""The pages people watch: dashboard, workers, a worker's settings and schedule, the task list
and one task. Each renders its first paint from facade calls; the live parts fetch the same page
again or the JSON API (see static/stask.js)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from stask.core.listing import parse_search
from stask.errors import StaskError
from stask.identity import Permission, Principal
from stask.models import Status, Task, TaskQuery, to_utc_naive
from stask.web.common import scoped_query, visible_task, visible_worker
from stask.web.security import context
from stask.web.tasks import allowed_actions
from stask.web.ui.i18n import language_of
from stask.web.ui.render import Pages, render
from stask.web.ui.schedule_words import schedule_parts
from stask.web.workers import upload_extensions

pages = Pages()
RECENT = 10
PAGE_SIZE = 50
STATS_HOURS = 24 * 30
STATUSES = ("pending", "running", "completed", "failed", "cancelled")


@pages.page("/", Permission.READ)
def dashboard(request: Request, who: Principal) -> Response:
    app = context(request).app
    recent, _ = app.listing.page(scoped_query(context(request), who, TaskQuery()), RECENT)
    values: dict[str, Any] = {"recent": recent, "summary": None, "series": None}
    if who.is_global:  # the overview counts every worker's tasks
        values.update(
            summary=app.statistics.summary(24),
            runners=app.health()["runners"],
            paused=sum(1 for q in app.queues() if q.paused),
            series=app.throughput(24),
        )
    return render(request, who, "dashboard.html", **values)


def _worker_rows(request: Request, who: Principal) -> list[dict[str, Any]]:
    app = context(request).app
    figures = app.statistics.workers(STATS_HOURS) if who.is_global else {}
    rows = []
    for info in app.workers():
        if not who.sees(info.scope):
            continue
        rows.append(
            {
                "info": info,
                "figures": figures.get(info.identifier, {}),
                "may_run": who.may(Permission.OPERATE, info.scope) and not info.orphaned,
                "may_admin": who.may(Permission.ADMIN, info.scope),
                "uploads": upload_extensions(context(request), info.identifier),
            }
        )
    return rows


@pages.page("/workers", Permission.READ)
def workers(request: Request, who: Principal) -> Response:
    return render(request, who, "workers.html", rows=_worker_rows(request, who))


def _flat(settings: dict[str, Any], parent: str = "") -> list[tuple[str, Any]]:
    """Settings as dot-notation keys (the form's fields), schedules apart."""
    found: list[tuple[str, Any]] = []
    for key, value in sorted(settings.items()):
        name = f"{parent}{key}"
        if not parent and key in ("schedule", "schedule_state"):
            continue
        if isinstance(value, dict) and value:
            found.extend(_flat(value, f"{name}."))
        else:
            found.append((name, value))
    return found


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return "json"


@pages.page("/workers/{identifier}", Permission.READ)
def worker(request: Request, who: Principal) -> Response:
    identifier = request.path_params["identifier"]
    app = context(request).app
    info = visible_worker(request, identifier, Permission.READ)
    settings = app.listing.redact(app.get_config(identifier))
    fields = [
        {"key": key, "value": value, "kind": _kind(value)}
        for key, value in _flat(settings if isinstance(settings, dict) else {})
    ]
    schedule = app.schedule(identifier)
    return render(
        request,
        who,
        "worker.html",
        info=info,
        fields=fields,
        schedule=schedule.to_dict(),
        schedule_words=schedule_parts(schedule, language_of(request)),
        next_runs=app.next_runs(identifier, 5),
        may_admin=who.may(Permission.ADMIN, info.scope),
        may_run=who.may(Permission.OPERATE, info.scope) and not info.orphaned,
        uploads=upload_extensions(context(request), identifier),
    )


def _day(value: str, end: bool) -> dt.datetime | None:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return None
    moment = dt.datetime.combine(day, dt.time.max if end else dt.time.min)
    return to_utc_naive(moment)


def _filters(request: Request) -> dict[str, str]:
    """The list's filters from the address, each trimmed (what the links and forms carry)."""
    keys = ("q", "status", "worker", "queue", "from", "to")
    return {k: request.query_params.get(k, "").strip()[:200] for k in keys}


def _query(request: Request, who: Principal, filters: dict[str, str]) -> TaskQuery:
    status = filters["status"]
    base = TaskQuery(
        statuses=(Status.parse(status),) if status else (),
        identifier=filters["worker"] or None,
        queue=filters["queue"] or None,
        created_from=_day(filters["from"], end=False) if filters["from"] else None,
        created_to=_day(filters["to"], end=True) if filters["to"] else None,
    )
    query = parse_search(filters["q"], base) if filters["q"] else base
    return scoped_query(context(request), who, query)


def _api_filters(active: dict[str, str]) -> dict[str, str]:
    """The list's filters as the API's bulk and export routes take them: the days as the
    moments the list used, so "everything matching" and the export are the tasks the page
    shows (a bare "to" day would end at its first moment)."""
    found = dict(active)
    for key, end in (("from", False), ("to", True)):
        moment = _day(found.pop(key, ""), end)
        if moment is not None:
            found[key] = moment.isoformat()
    return found


@pages.page("/tasks", Permission.READ)
def tasks(request: Request, who: Principal) -> Response:
    ctx = context(request)
    filters = _filters(request)
    cursor = request.query_params.get("cursor", "")
    error = None
    page: list[Task] = []
    next_cursor = None
    count: tuple[int, bool] | None = None
    try:
        query = _query(request, who, filters)
        before = int(cursor) if cursor.isdigit() and 0 < int(cursor) < 2**63 else None
        page, next_cursor = ctx.app.listing.page(
            dataclasses.replace(query, before_id=before), PAGE_SIZE
        )
        # Capped, and over a scan window for a filter no index orders: never a full scan.
        found = ctx.app.listing.estimate(query)
        count = (found.count, found.capped or found.searched_to is not None)
    except StaskError as err:
        error = err.message
    active = {k: v for k, v in filters.items() if v}
    api_filters = _api_filters(active)
    workers = sorted(i.identifier for i in ctx.app.workers() if who.sees(i.scope))
    return render(
        request,
        who,
        "tasks.html",
        tasks=page,
        filters=filters,
        error=error,
        count=count,
        statuses=STATUSES,
        workers=workers,
        filter_query=urlencode(active),
        next_query=urlencode({**active, "cursor": next_cursor}) if next_cursor else None,
        first_query=urlencode(active) if cursor else None,
        bulk_filters=api_filters,
        export_query=urlencode(api_filters),
    )


@pages.page("/tasks/{task_id:int}", Permission.READ)
def task(request: Request, who: Principal) -> Response:
    ctx = context(request)
    found = visible_task(request, int(request.path_params["task_id"]))
    scope = next((i.scope for i in ctx.app.workers() if i.identifier == found.identifier), "")
    detail = ctx.app.listing.detail(found)
    logs = [ctx.app.listing.log(e) for e in ctx.app.get_logs(found.id)[-500:]]
    errors = [
        {
            "attempt": e.context.get("attempt"),
            "at": e.ts,
            "message": e.message,
            "error": e.context.get("traceback"),
        }
        for e in ctx.app.get_error_logs(found.id)
        if "attempt" in e.context
    ]
    may_operate = who.may(Permission.OPERATE, scope)
    rerun_of, reruns = ctx.app.reruns(found.id)
    return render(
        request,
        who,
        "task.html",
        task=found,
        detail=detail,
        logs=logs,
        cursor=logs[-1]["id"] if logs else None,
        attempts=errors,
        actions=allowed_actions(found) if may_operate else [],
        may_operate=may_operate,
        has_result=found.result_file is not None,
        rerun_of=rerun_of,
        reruns=reruns,
    )
