"""What the route modules share: scopes of objects, clamping, envelopes, JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from stask.errors import NotFound, TaskNotFound, UnknownWorker
from stask.identity import Permission, Principal
from stask.models import Task, TaskQuery, WorkerInfo
from stask.web.errors import ApiError
from stask.web.security import WebContext, context

MAX_JSON_BODY = 2 * 1024 * 1024


def clamp(value: int | float, low: int | float, high: int | float) -> Any:
    return max(low, min(high, value))


def ok(**data: Any) -> dict[str, Any]:
    return {"success": True, **data}


def format_eta(seconds: int | None) -> str | None:
    """``2m 30s``, ``1h 5m``, ``45s``, as the seed's progress route shows it."""
    if seconds is None:
        return None
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def scopes_by_worker(ctx: WebContext) -> dict[str, str]:
    return {info.identifier: info.scope for info in ctx.app.workers()}


def visible_identifiers(ctx: WebContext, principal: Principal) -> tuple[str, ...] | None:
    """The workers whose tasks the caller may see; None when they see every worker."""
    if principal.is_global:
        return None
    return tuple(sorted(i for i, scope in scopes_by_worker(ctx).items() if principal.sees(scope)))


def scoped_query(ctx: WebContext, principal: Principal, query: TaskQuery) -> TaskQuery:
    import dataclasses

    return dataclasses.replace(query, identifiers=visible_identifiers(ctx, principal))


def visible_worker(request: Request, identifier: str, permission: Permission) -> WorkerInfo:
    """The worker, if the caller sees its scope (else 404) and holds ``permission`` there."""
    ctx = context(request)
    principal: Principal = request.state.principal
    try:
        info = ctx.app.worker(identifier)
    except (UnknownWorker, NotFound):
        raise ApiError(404, f"no worker is registered as {identifier!r}") from None
    if not principal.sees(info.scope):
        raise ApiError(404, f"no worker is registered as {identifier!r}")
    if not principal.may(permission, info.scope):
        raise ApiError(403, f"this needs the {permission.role} role for scope {info.scope!r}")
    return info


def visible_task(request: Request, task_id: int, permission: Permission = Permission.READ) -> Task:
    """The task, if the caller sees its worker's scope (else 404) and holds ``permission``."""
    ctx = context(request)
    principal: Principal = request.state.principal
    if not 0 < task_id < 2**63:
        raise ApiError(404, f"no task has id {task_id}")
    try:
        task = ctx.app.get(task_id)
    except TaskNotFound:
        raise ApiError(404, f"no task has id {task_id}") from None
    scope = scopes_by_worker(ctx).get(task.identifier, "")
    if not principal.sees(scope):
        raise ApiError(404, f"no task has id {task_id}")
    if not principal.may(permission, scope):
        raise ApiError(403, f"this needs the {permission.role} role for scope {scope!r}")
    return task


async def json_object(request: Request, *, required: bool = False) -> dict[str, Any]:
    """The request body as a JSON object: {} when empty (unless required), else 4xx."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BODY:
            raise ApiError(413, f"the JSON body is over {MAX_JSON_BODY // 1024 // 1024} MiB")
    if not raw.strip():
        if required:
            raise ApiError(400, "send a JSON object as the body")
        return {}
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if kind not in ("application/json", ""):
        raise ApiError(415, "send the body as application/json")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the body must be a JSON object")
    return value
