"""Task routes: the seed's create / progress / download, and the API's list, detail, actions,
bulk actions, exports, logs and live events."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from stask.core.listing import parse_search
from stask.errors import InvalidState, ResultNotFound, StaskError
from stask.identity import Permission
from stask.models import Status, Task, TaskQuery, to_utc_naive
from stask.web.common import (
    clamp,
    format_eta,
    ok,
    scoped_query,
    visible_task,
    visible_worker,
)
from stask.web.errors import ERROR_RESPONSES, ApiError
from stask.web.security import context, principal_of, route

router = APIRouter(responses=ERROR_RESPONSES)
BULK_DIRECT_MAX = 1000
SSE_SECONDS = 0.5
# An event stream ends after this long; EventSource reconnects by itself (``retry`` below), so a
# proxy or a forgotten tab never holds a connection and a thread's turn forever.
STREAM_SECONDS = 300.0
SSE_RETRY_MS = 2000
# Files a task made or logs: never run as a page, never framed (X-Frame-Options alone is legacy).
FILE_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"


class Envelope(BaseModel):
    model_config = ConfigDict(extra="allow")
    success: bool


class Created(Envelope):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {"success": True, "id": 123, "message": "Task created successfully"}
        },
    )
    id: int
    message: str


class NewTaskBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"identifier": "product_import", "action": "import", "options": {"rows": 10}}
        },
    )
    identifier: str = Field(min_length=1, max_length=100)
    action: str = Field(min_length=1, max_length=100)
    options: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["low", "normal", "high"] = "normal"
    queue: str | None = Field(default=None, min_length=1, max_length=100)
    run_at: dt.datetime | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)


class BulkBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={"example": {"ids": [1, 2, 3]}},
    )
    ids: list[Annotated[int, Field(ge=1, lt=2**63)]] | None = Field(
        default=None, max_length=BULK_DIRECT_MAX
    )
    # Everything matching these filters (every one of the list route's), once ``confirm``
    # states the count.
    status: str | None = Field(default=None, max_length=200)
    worker: str | None = Field(default=None, max_length=100)
    queue: str | None = Field(default=None, max_length=100)
    action: str | None = Field(default=None, max_length=100)
    created_from: dt.datetime | None = Field(default=None, alias="from")
    created_to: dt.datetime | None = Field(default=None, alias="to")
    q: str | None = Field(default=None, max_length=1000)
    confirm: int | None = Field(default=None, ge=0)


def _create(
    request: Request, identifier: str, action: str, options: dict[str, Any] | None, **kw: Any
) -> dict[str, Any]:
    ctx = context(request)
    principal = principal_of(request)
    visible_worker(request, identifier, Permission.OPERATE)
    task = ctx.app.create(identifier, action, options or {}, started_by=principal.username, **kw)
    ctx.audit(request, principal, "task.create", f"task:{task.id}", detail={"worker": identifier})
    return ok(id=task.id, message="Task created successfully", task=ctx.app.listing.detail(task))


OPTIONS_BODY = Body(
    default=None,
    description="The task's options (any JSON object)",
    examples=[{"force": True, "batch_size": 100}],
)


@route(
    router,
    "POST",
    "/workers/{identifier}/tasks/{action}",
    Permission.OPERATE,
    response_model=Created,
    summary="Start a task (the seed's route)",
)
def start_task(
    request: Request,
    identifier: str,
    action: str,
    options: dict[str, Any] | None = OPTIONS_BODY,
    priority: Literal["low", "normal", "high"] = "normal",
) -> dict[str, Any]:
    return _create(request, identifier, action, options, priority=priority)


@route(
    router,
    "POST",
    "/worker/{identifier}/run/{action}",
    Permission.OPERATE,
    response_model=Created,
    summary="Start a task (the seed README's route)",
)
def run_task(
    request: Request,
    identifier: str,
    action: str,
    options: dict[str, Any] | None = OPTIONS_BODY,
    priority: Literal["low", "normal", "high"] = "normal",
) -> dict[str, Any]:
    return _create(request, identifier, action, options, priority=priority)


@route(router, "POST", "/api/tasks", Permission.OPERATE, response_model=Created)
def create_task(request: Request, body: NewTaskBody) -> dict[str, Any]:
    run_at = to_utc_naive(body.run_at) if body.run_at else None
    return _create(
        request,
        body.identifier,
        body.action,
        body.options,
        priority=body.priority,
        queue=body.queue,
        run_at=run_at,
        max_attempts=body.max_attempts,
    )


def _progress(request: Request, task_id: int, after: int | None) -> dict[str, Any]:
    ctx = context(request)
    task = visible_task(request, task_id)
    logs = ctx.app.get_logs(task.id, after_id=after)[:500]
    return ok(
        code=200,
        id=task.id,
        status=task.display_status,
        progress=task.progress,
        processed=task.processed,
        total=task.total,
        eta=format_eta(task.eta_seconds),
        eta_seconds=task.eta_seconds,
        message=task.message,
        finished=task.is_finished,
        logs=[ctx.app.listing.log(entry) for entry in logs],
        cursor=logs[-1].id if logs else after,
    )


PROGRESS_EXAMPLE = {
    "success": True,
    "code": 200,
    "id": 123,
    "status": "running",
    "progress": 45,
    "processed": 450,
    "total": 1000,
    "eta": "2m 30s",
    "eta_seconds": 150,
    "message": "Processing items...",
    "finished": False,
    "logs": [],
    "cursor": None,
}


class Progress(Envelope):
    model_config = ConfigDict(
        extra="allow", json_schema_extra={"example": cast(Any, PROGRESS_EXAMPLE)}
    )


@route(router, "GET", "/tasks/{task_id}/progress", Permission.READ, response_model=Progress)
def task_progress(
    request: Request, task_id: int, after: int | None = Query(default=None, ge=0, lt=2**63)
) -> dict[str, Any]:
    """Progress, ETA and the log lines after the ``after`` cursor (a log id)."""
    return _progress(request, task_id, after)


@route(router, "GET", "/task/{task_id}/progress", Permission.READ, response_model=Progress)
def task_progress_seed(
    request: Request, task_id: int, after: int | None = Query(default=None, ge=0, lt=2**63)
) -> dict[str, Any]:
    return _progress(request, task_id, after)


def _download(request: Request, task_id: int) -> FileResponse:
    ctx = context(request)
    task = visible_task(request, task_id)
    try:
        path = ctx.app.result_file(task.id)
    except ResultNotFound as err:
        raise ApiError(404, err.message) from None
    ctx.audit(request, principal_of(request), "task.download", f"task:{task.id}")
    return FileResponse(
        path,
        filename=Path(path).name,
        content_disposition_type="attachment",
        headers={"Content-Security-Policy": FILE_CSP, "X-Content-Type-Options": "nosniff"},
        media_type="application/octet-stream",
    )


FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}, "description": "The result file"}
}


@route(
    router,
    "GET",
    "/tasks/{task_id}/download",
    Permission.READ,
    response_class=FileResponse,
    responses=FILE_RESPONSE,
)
def download(request: Request, task_id: int) -> FileResponse:
    """The result file, as an attachment (only from inside the storage directory)."""
    return _download(request, task_id)


@route(
    router,
    "GET",
    "/task/{task_id}/download",
    Permission.READ,
    response_class=FileResponse,
    responses=FILE_RESPONSE,
)
def download_seed(request: Request, task_id: int) -> FileResponse:
    return _download(request, task_id)


# -- the API's task resources ----------------------------------------------------------------


def _query(
    request: Request,
    status: str | None,
    worker: str | None,
    queue: str | None,
    action: str | None,
    created_from: dt.datetime | None,
    created_to: dt.datetime | None,
    q: str | None,
) -> TaskQuery:
    statuses = tuple(Status.parse(s) for s in status.split(",") if s) if status else ()
    base = TaskQuery(
        statuses=statuses,
        identifier=worker or None,
        queue=queue or None,
        action=action or None,
        created_from=to_utc_naive(created_from) if created_from else None,
        created_to=to_utc_naive(created_to) if created_to else None,
    )
    query = parse_search(q, base) if q else base
    return scoped_query(context(request), principal_of(request), query)


class Filters:
    """The list filters, shared by list, count, export and bulk."""

    def __init__(
        self,
        status: str | None = Query(default=None, max_length=200, examples=["failed"]),
        worker: str | None = Query(default=None, max_length=100),
        queue: str | None = Query(default=None, max_length=100),
        action: str | None = Query(default=None, max_length=100),
        created_from: dt.datetime | None = Query(default=None, alias="from"),  # noqa: B008
        created_to: dt.datetime | None = Query(default=None, alias="to"),  # noqa: B008
        q: str | None = Query(
            default=None, max_length=1000, description="search: worker:x status:failed #12"
        ),
    ) -> None:
        self.values = (status, worker, queue, action, created_from, created_to, q)

    def query(self, request: Request) -> TaskQuery:
        return _query(request, *self.values)


@route(router, "GET", "/api/tasks", Permission.READ, response_model=Envelope)
def list_tasks(
    request: Request,
    filters: Filters = Depends(),  # noqa: B008
    cursor: int | None = Query(default=None, ge=1, lt=2**63, description="next_cursor of a page"),
    limit: int = Query(default=50, description="rows per page, clamped to 1-500"),
) -> dict[str, Any]:
    """Newest first, keyset-paged: pass ``next_cursor`` back as ``cursor``.

    A filter no index orders (a meta value, action, queue or dates) reads at most the 100,000
    ids below the cursor: when that ends the search before the oldest task, ``searched_to`` is
    the last id read and ``next_cursor`` goes on below it, even on a short (or empty) page.
    """
    import dataclasses

    ctx = context(request)
    query = dataclasses.replace(filters.query(request), before_id=cursor)
    page = ctx.app.listing.search(query, clamp(limit, 1, 500))
    return ok(
        tasks=[ctx.app.listing.row(t) for t in page.tasks],
        next_cursor=page.next_cursor,
        searched_to=page.searched_to,
    )


@route(router, "GET", "/api/tasks/count", Permission.READ, response_model=Envelope)
def count_tasks(
    request: Request,
    filters: Filters = Depends(),  # noqa: B008
) -> dict[str, Any]:
    """At most 10,000 are counted: past that, ``capped`` is true and the text says 10,000+.

    A filter no index orders (a meta value, action, queue or dates) counts among the newest
    100,000 tasks; ``searched_to`` then names the oldest id counted and the text ends in +.
    """
    ctx = context(request)
    found = ctx.app.listing.estimate(filters.query(request))
    return ok(
        count=found.count, capped=found.capped, searched_to=found.searched_to, text=found.text
    )


@route(
    router,
    "GET",
    "/api/tasks/export",
    Permission.READ,
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export_tasks(
    request: Request,
    filters: Filters = Depends(),  # noqa: B008
    format: Literal["csv", "jsonl"] = "csv",
) -> StreamingResponse:
    """The filtered list as CSV or JSON lines, streamed (secrets redacted)."""
    ctx = context(request)
    query = filters.query(request)
    ctx.audit(request, principal_of(request), "task.export", None, detail={"format": format})
    rows: Iterator[str] = ctx.app.listing.export(query, format)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    name = f"stask-tasks.{format}"
    return StreamingResponse(
        iterate_in_threadpool(rows),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def allowed_actions(task: Task) -> list[str]:
    """What an operator may do to ``task`` in its state (the detail's and the page's buttons)."""
    if task.status is Status.PENDING:
        return ["cancel", "delete"]
    if task.status in (Status.RUNNING, Status.PREPARING):
        return [] if task.cancel_requested else ["cancel"]
    if task.status in (Status.FAILED, Status.CANCELLED):
        return ["retry", "delete"]
    return ["delete"]


@route(router, "GET", "/api/tasks/{task_id}", Permission.READ, response_model=Envelope)
def task_detail(request: Request, task_id: int) -> dict[str, Any]:
    """The whole task: options, result, error, every failed attempt, the actions it allows."""
    ctx = context(request)
    task = visible_task(request, task_id)
    data = ctx.app.listing.detail(task)
    errors = ctx.app.get_error_logs(task.id)
    attempts = [
        {
            "attempt": entry.context.get("attempt"),
            "at": ctx.app.listing.log(entry)["ts"],
            "message": entry.message,
            "error": entry.context.get("traceback"),
        }
        for entry in errors
        if "attempt" in entry.context
    ]
    data["attempt_errors"] = attempts
    data["allowed_actions"] = allowed_actions(task)
    data["rerun_of"], data["reruns"] = ctx.app.reruns(task.id)
    return ok(task=data)


def _act(request: Request, task_id: int, action: str) -> dict[str, Any]:
    ctx = context(request)
    task = visible_task(request, task_id, Permission.OPERATE)
    if action == "cancel":
        changed = ctx.app.cancel(task.id)
    elif action == "retry":
        changed = ctx.app.retry(task.id)
    else:
        ctx.app.delete(task.id)
        changed = None
    ctx.audit(request, principal_of(request), f"task.{action}", f"task:{task.id}")
    return ok(
        id=task.id,
        message=f"task {task.id}: {action} done",
        task=None if changed is None else ctx.app.listing.detail(changed),
    )


# Before the /api/tasks/{task_id}/... routes: /api/tasks/bulk/cancel would match those first.
@route(router, "POST", "/api/tasks/bulk/{action}", Permission.OPERATE, response_model=Envelope)
def bulk(
    request: Request, action: Literal["cancel", "retry", "delete"], body: BulkBody
) -> dict[str, Any]:
    """Cancel, retry or delete many tasks.

    With ``ids`` (at most 1,000): done now, each one reported. With filters instead: the first
    call answers ``confirm_required`` with the count; calling again with ``confirm`` set to
    that count starts a background job whose progress ``GET /api/bulk/{job}`` shows.
    """
    ctx = context(request)
    principal = principal_of(request)
    if body.ids is not None:
        done: list[int] = []
        refused: dict[str, str] = {}
        for task_id in body.ids:
            try:
                visible_task(request, task_id, Permission.OPERATE)
                getattr(ctx.app, action)(task_id)
                done.append(task_id)
            except (ApiError, StaskError) as err:
                refused[str(task_id)] = err.message
        ctx.audit(request, principal, f"task.bulk_{action}", None, detail={"ids": done[:100]})
        return ok(done=done, refused=refused, message=f"{action}: {len(done)} done")
    query = _query(
        request, body.status, body.worker, body.queue, body.action,
        body.created_from, body.created_to, body.q,
    )  # fmt: skip
    count, capped = ctx.app.listing.count(query)
    if body.confirm is None or body.confirm != count or capped:
        if capped:
            message = f"more than {count:,} tasks match - narrow the filter to at most {count:,}"
        else:
            message = f"{count:,} tasks match - send confirm={count} to {action} them"
        if body.confirm is not None and not capped:
            raise ApiError(409, f"the count changed: {message}")
        return ok(confirm_required=True, count=count, capped=capped, message=message)
    job = ctx.app.bulk(action, query, started_by=principal.username)
    ctx.audit(request, principal, f"task.bulk_{action}", f"bulk:{job}", detail={"count": count})
    return ok(job=job, count=count, message=f"{action} of {count:,} tasks started as job {job}")


@route(router, "POST", "/api/tasks/{task_id}/cancel", Permission.OPERATE, response_model=Envelope)
def cancel_task(request: Request, task_id: int) -> dict[str, Any]:
    return _act(request, task_id, "cancel")


@route(router, "POST", "/api/tasks/{task_id}/retry", Permission.OPERATE, response_model=Envelope)
def retry_task(request: Request, task_id: int) -> dict[str, Any]:
    return _act(request, task_id, "retry")


@route(router, "POST", "/api/tasks/{task_id}/rerun", Permission.OPERATE, response_model=Created)
def rerun_task(request: Request, task_id: int) -> dict[str, Any]:
    """Run again: a new task with the same worker, action and stored options (in any state),
    linked both ways (the detail's ``rerun_of`` and ``reruns``)."""
    ctx = context(request)
    task = visible_task(request, task_id, Permission.OPERATE)
    principal = principal_of(request)
    copy = ctx.app.rerun(task.id, started_by=principal.username)
    ctx.audit(request, principal, "task.rerun", f"task:{copy.id}", detail={"rerun_of": task.id})
    return ok(id=copy.id, message=f"task {task.id} runs again as task {copy.id}")


@route(router, "DELETE", "/api/tasks/{task_id}", Permission.OPERATE, response_model=Envelope)
def delete_task(request: Request, task_id: int) -> dict[str, Any]:
    return _act(request, task_id, "delete")


@route(router, "GET", "/api/bulk/{job_id}", Permission.OPERATE, response_model=Envelope)
def bulk_job(request: Request, job_id: str) -> dict[str, Any]:
    """The progress of a bulk job started in this process: done, refused, status."""
    ctx = context(request)
    found = ctx.app.bulk_job(job_id)
    if found["started_by"] != principal_of(request).username and not principal_of(request).may(
        Permission.ADMIN
    ):
        raise ApiError(404, f"no bulk job has id {job_id!r} in this process")
    return ok(job=found)


@route(router, "GET", "/api/tasks/{task_id}/logs", Permission.READ, response_model=Envelope)
def task_logs(
    request: Request,
    task_id: int,
    after: int | None = Query(default=None, ge=0, lt=2**63),
    limit: int = 500,
) -> dict[str, Any]:
    ctx = context(request)
    task = visible_task(request, task_id)
    entries = ctx.app.get_logs(task.id, after_id=after)[: clamp(limit, 1, 5000)]
    return ok(
        logs=[ctx.app.listing.log(e) for e in entries],
        cursor=entries[-1].id if entries else after,
    )


@route(
    router,
    "GET",
    "/api/tasks/{task_id}/logs/download",
    Permission.READ,
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
def download_logs(request: Request, task_id: int) -> PlainTextResponse:
    ctx = context(request)
    task = visible_task(request, task_id)
    lines = []
    for entry in ctx.app.get_logs(task.id):
        data = ctx.app.listing.log(entry)
        context_text = (
            f" {json.dumps(data['context'], ensure_ascii=False)}" if entry.context else ""
        )
        lines.append(f"{data['ts']} {entry.level.upper():8} {entry.message}{context_text}\n")
    return PlainTextResponse(
        "".join(lines),
        headers={
            "Content-Disposition": f'attachment; filename="task-{task.id}.log"',
            "Content-Security-Policy": FILE_CSP,
        },
    )


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


SSE_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


@route(
    router,
    "GET",
    "/api/tasks/{task_id}/events",
    Permission.READ,
    response_class=StreamingResponse,
    responses=SSE_RESPONSE,
)
async def task_events(
    request: Request,
    task_id: int,
    after: int | None = Query(default=None, ge=0, lt=2**63),
    once: bool = Query(default=False, description="send one snapshot, then close"),
) -> StreamingResponse:
    """Server-Sent Events: ``progress`` when the task changes, ``log`` per new line, ``end``."""
    first = await run_in_threadpool(_progress, request, task_id, after)
    deadline = time.monotonic() + STREAM_SECONDS

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        snapshot = first
        last: dict[str, Any] | None = None
        while True:
            for entry in snapshot.pop("logs"):
                yield _sse("log", entry)
            state = {k: v for k, v in snapshot.items() if k != "cursor"}
            if state != last:
                yield _sse("progress", state)
                last = state
            if snapshot["finished"]:
                yield _sse("end", {"id": task_id, "status": snapshot["status"]})
                return
            if once or time.monotonic() >= deadline or await request.is_disconnected():
                return
            await asyncio.sleep(SSE_SECONDS)
            snapshot = await run_in_threadpool(_progress, request, task_id, snapshot["cursor"])

    return StreamingResponse(stream(), media_type="text/event-stream")


@route(
    router,
    "GET",
    "/api/events",
    Permission.READ,
    response_class=StreamingResponse,
    responses=SSE_RESPONSE,
)
async def list_events(
    request: Request,
    filters: Filters = Depends(),  # noqa: B008
    limit: int = 20,
    once: bool = Query(default=False, description="send one snapshot, then close"),
) -> StreamingResponse:
    """Server-Sent Events for a task list: a ``tasks`` event with the first page when it
    changes."""
    ctx = context(request)
    query = filters.query(request)
    size = clamp(limit, 1, 100)

    def snapshot() -> list[dict[str, Any]]:
        page, _ = ctx.app.listing.page(query, size)
        return [ctx.app.listing.row(t) for t in page]

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {SSE_RETRY_MS}\n\n"
        deadline = time.monotonic() + STREAM_SECONDS
        last = None
        while True:
            rows = await run_in_threadpool(snapshot)
            if rows != last:
                yield _sse("tasks", rows)
                last = rows
            if once or time.monotonic() >= deadline or await request.is_disconnected():
                return
            await asyncio.sleep(SSE_SECONDS * 2)

    return StreamingResponse(stream(), media_type="text/event-stream")


def invalid_state(err: InvalidState) -> ApiError:
    return ApiError(409, err.message)
