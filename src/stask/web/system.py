"""Operations routes: performance statistics, the cache, queues, cleanup, health, metrics,
and people (login, sessions, users, API tokens, the audit log)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stask.core.accounts import LoginFailed, LoginThrottled
from stask.identity import Permission
from stask.models import to_utc_naive
from stask.web.common import clamp, ok, visible_identifiers
from stask.web.errors import ERROR_RESPONSES, ApiError
from stask.web.security import context, principal_of, route
from stask.web.tasks import Envelope

router = APIRouter(responses=ERROR_RESPONSES)


# -- performance (the seed's routes) -----------------------------------------------------------


@route(
    router, "GET", "/performance/summary", Permission.READ, everywhere=True, response_model=Envelope
)
def performance_summary(request: Request, hours: int = 24) -> dict[str, Any]:
    """Counts, success rate, durations and memory over the last ``hours`` (clamped 1-8760)."""
    ctx = context(request)
    return ok(**ctx.app.statistics.summary(clamp(hours, 1, 8760)))


@route(router, "GET", "/performance/workers", Permission.READ, response_model=Envelope)
def performance_workers(request: Request, hours: int = 24) -> dict[str, Any]:
    ctx = context(request)
    allowed = visible_identifiers(ctx, principal_of(request))
    found = ctx.app.statistics.workers(clamp(hours, 1, 8760))
    return ok(workers={k: v for k, v in found.items() if allowed is None or k in allowed})


@route(
    router, "GET", "/performance/alerts", Permission.READ, everywhere=True, response_model=Envelope
)
def performance_alerts(request: Request, hours: int = 24) -> dict[str, Any]:
    ctx = context(request)
    return ok(alerts=ctx.app.statistics.alerts(clamp(hours, 1, 8760)))


# -- the cache (the seed's routes) ---------------------------------------------------------------


class CacheClearBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"identifier": "product_sync"}}
    )
    identifier: str | None = Field(default=None, max_length=100)


@route(router, "GET", "/cache/stats", Permission.READ, everywhere=True, response_model=Envelope)
def cache_stats(request: Request) -> dict[str, Any]:
    return ok(cache_stats=context(request).app.cache_stats())


@route(router, "POST", "/cache/clear", Permission.ADMIN, everywhere=True, response_model=Envelope)
def cache_clear(request: Request, body: CacheClearBody | None = None) -> dict[str, Any]:
    ctx = context(request)
    identifier = body.identifier if body else None
    dropped = ctx.app.clear_cache(identifier)
    ctx.audit(request, principal_of(request), "cache.clear", identifier)
    return ok(message="Cache cleared successfully", cleared=dropped)


# -- queues ------------------------------------------------------------------------------------


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    until: dt.datetime | None = None


class LimitsBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"concurrency": 4, "rate_limit": 100, "rate_period": 60}},
    )
    concurrency: int | None = Field(default=None, ge=1, le=1_000_000)
    rate_limit: int | None = Field(default=None, ge=1, le=1_000_000_000)
    rate_period: int | None = Field(default=None, ge=1, le=31_536_000)


@route(router, "GET", "/api/queues", Permission.READ, everywhere=True, response_model=Envelope)
def list_queues(request: Request) -> dict[str, Any]:
    return ok(queues=[q.to_dict() for q in context(request).app.queues()])


@route(
    router,
    "POST",
    "/api/queues/{name}/pause",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def pause_queue(request: Request, name: str, body: PauseBody | None = None) -> dict[str, Any]:
    ctx = context(request)
    until = to_utc_naive(body.until) if body and body.until else None
    info = ctx.app.pause_queue(name, until)
    ctx.audit(request, principal_of(request), "queue.pause", f"queue:{name}")
    return ok(queue=info.to_dict())


@route(
    router,
    "POST",
    "/api/queues/{name}/resume",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def resume_queue(request: Request, name: str) -> dict[str, Any]:
    ctx = context(request)
    info = ctx.app.resume_queue(name)
    ctx.audit(request, principal_of(request), "queue.resume", f"queue:{name}")
    return ok(queue=info.to_dict())


@route(
    router,
    "PUT",
    "/api/queues/{name}/limits",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def queue_limits(request: Request, name: str, body: LimitsBody) -> dict[str, Any]:
    ctx = context(request)
    info = ctx.app.set_queue_limits(
        name,
        concurrency=body.concurrency,
        rate=body.rate_limit,
        period_seconds=body.rate_period,
    )
    ctx.audit(
        request, principal_of(request), "queue.limits", f"queue:{name}", detail=body.model_dump()
    )
    return ok(queue=info.to_dict())


# -- cleanup, health, metrics ------------------------------------------------------------------


class CleanBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"days": 30}})
    days: int = Field(default=30, ge=0, le=36500)
    logs_days: int | None = Field(default=None, ge=0, le=36500)


@route(router, "POST", "/clean", Permission.ADMIN, everywhere=True, response_model=Envelope)
def clean(request: Request, body: CleanBody | None = None) -> dict[str, Any]:
    """Delete finished tasks, log lines and result files older than ``days``."""
    ctx = context(request)
    values = body or CleanBody()
    tasks = ctx.app.clean_old_tasks(values.days)
    logs = ctx.app.clean_old_logs(values.logs_days if values.logs_days is not None else values.days)
    files = ctx.app.clean_old_files(values.days)
    ctx.audit(
        request,
        principal_of(request),
        "clean",
        None,
        detail={"tasks": tasks, "logs": logs, "files": files},
    )
    return ok(tasks=tasks, logs=logs, files=files, message=f"{tasks} tasks cleaned")


class ProcessBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"batch_size": 100}})
    batch_size: int = Field(default=100, ge=1, le=1000)


@route(
    router,
    "POST",
    "/api/process-pending",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def process_pending(request: Request, body: ProcessBody | None = None) -> dict[str, Any]:
    """Fire due schedules and run up to ``batch_size`` due tasks in the web app's process, in
    the background (for hosts without a runner daemon); follow it at ``GET /api/bulk/{job}``.
    One at a time: 409 while one runs."""
    ctx = context(request)
    size = (body or ProcessBody()).batch_size
    principal = principal_of(request)
    job = ctx.app.process_pending_in_background(size, started_by=principal.username)  # 409 busy
    ctx.audit(request, principal, "process_pending", f"bulk:{job}", detail={"batch_size": size})
    return ok(job=job, message=f"processing up to {size} pending tasks as job {job}")


@route(router, "GET", "/health", Permission.PUBLIC, response_model=Envelope)
def health(request: Request) -> JSONResponse:
    """Whether the database answers, and how many runners heartbeat. No authentication."""
    found = context(request).app.health()
    return JSONResponse(
        {"success": found["database"], **found}, status_code=200 if found["database"] else 503
    )


@route(
    router,
    "GET",
    "/metrics",
    Permission.READ,
    everywhere=True,
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus text format, every name prefixed ``stask_``."""
    body, content_type = context(request).app.metrics()
    return Response(body, media_type=content_type)


# -- people ------------------------------------------------------------------------------------


class LoginBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"username": "admin", "password": "correct horse battery"}},
    )
    username: str = Field(max_length=100)
    password: str = Field(max_length=1024)


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=1024)
    current_password: str | None = Field(default=None, max_length=1024)


class UserBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"example": {"username": "ops", "role": "operator", "scopes": ["shop"]}},
    )
    username: str = Field(min_length=1, max_length=100)
    role: Literal["viewer", "operator", "admin"]
    password: str | None = Field(default=None, max_length=1024)
    scopes: list[str] = Field(default_factory=list, max_length=100)


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"name": "deploy"}})
    name: str = Field(min_length=1, max_length=100)
    user: str | None = Field(default=None, max_length=100)


@route(router, "POST", "/api/login", Permission.PUBLIC, response_model=Envelope)
def login(request: Request, body: LoginBody) -> JSONResponse:
    """A new session in a ``__Host-`` cookie (Secure, HttpOnly, SameSite=Lax), and the CSRF
    token every state-changing request of the session must send as ``X-CSRF-TOKEN``."""
    ctx = context(request)
    if ctx.auth is not None:
        raise ApiError(404, "logins are handled by the host application")
    try:
        session = ctx.login(request, body.username, body.password)
    except LoginThrottled as err:
        raise ApiError(429, err.message) from None
    except LoginFailed as err:
        raise ApiError(401, err.message) from None
    response = JSONResponse(
        ok(
            user=session.user.to_dict(),
            csrf_token=session.csrf_token,
            expires_at=session.expires_at.isoformat() + "Z",
        )
    )
    ctx.set_session_cookie(response, session)
    return response


@route(router, "POST", "/api/logout", Permission.READ, response_model=Envelope)
def logout(request: Request) -> JSONResponse:
    ctx = context(request)
    ctx.app.accounts.logout(principal_of(request), address=ctx.address(request))
    response = JSONResponse(ok(message="logged out"))
    ctx.clear_session_cookie(response)
    return response


@route(router, "GET", "/api/session", Permission.READ, response_model=Envelope)
def session(request: Request) -> dict[str, Any]:
    """Who is logged in, their role and scopes, and the session's CSRF token."""
    who = principal_of(request)
    return ok(
        user={"username": who.username, "role": who.role.value, "scopes": list(who.scopes)},
        via=who.via,
        csrf_token=who.csrf_token,
    )


@route(router, "POST", "/api/session/password", Permission.READ, response_model=Envelope)
def change_own_password(request: Request, body: PasswordBody) -> dict[str, Any]:
    """Change your own password; every session of yours ends (log in again)."""
    ctx = context(request)
    who = principal_of(request)
    if who.via == "host":
        raise ApiError(409, "passwords are managed by the host application")
    try:
        ctx.app.accounts.check_password_of(who.username, body.current_password or "")
    except LoginFailed:
        raise ApiError(403, "the current password is wrong") from None
    ctx.app.accounts.set_password(who.username, body.password, actor=who.username)
    return ok(message="password changed - log in again")


@route(router, "GET", "/api/users", Permission.ADMIN, everywhere=True, response_model=Envelope)
def list_users(request: Request) -> dict[str, Any]:
    return ok(users=[u.to_dict() for u in context(request).app.accounts.users()])


@route(router, "POST", "/api/users", Permission.ADMIN, everywhere=True, response_model=Envelope)
def add_user(request: Request, body: UserBody) -> dict[str, Any]:
    ctx = context(request)
    user, generated = ctx.app.accounts.add_user(
        body.username,
        body.role,
        body.password,
        body.scopes,
        actor=principal_of(request).username,
    )
    return ok(user=user.to_dict(), password=generated)


@route(
    router,
    "POST",
    "/api/users/{username}/disable",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def disable_user(request: Request, username: str) -> dict[str, Any]:
    ctx = context(request)
    user = ctx.app.accounts.disable(username, actor=principal_of(request).username)
    return ok(user=user.to_dict())


@route(
    router,
    "POST",
    "/api/users/{username}/password",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def set_user_password(request: Request, username: str, body: PasswordBody) -> dict[str, Any]:
    ctx = context(request)
    user = ctx.app.accounts.set_password(
        username, body.password, actor=principal_of(request).username
    )
    return ok(user=user.to_dict())


@route(router, "GET", "/api/tokens", Permission.ADMIN, everywhere=True, response_model=Envelope)
def list_tokens(request: Request) -> dict[str, Any]:
    return ok(tokens=[t.to_dict() for t in context(request).app.accounts.tokens()])


@route(router, "POST", "/api/tokens", Permission.ADMIN, everywhere=True, response_model=Envelope)
def create_token(request: Request, body: TokenBody) -> dict[str, Any]:
    """A new API token, shown in this answer only."""
    ctx = context(request)
    who = principal_of(request)
    token_id, token = ctx.app.accounts.create_token(
        body.name, body.user or who.username, actor=who.username
    )
    return ok(id=token_id, token=token, message="store the token now: it is never shown again")


@route(
    router,
    "DELETE",
    "/api/tokens/{token_id}",
    Permission.ADMIN,
    everywhere=True,
    response_model=Envelope,
)
def revoke_token(request: Request, token_id: int) -> dict[str, Any]:
    ctx = context(request)
    if not 0 < token_id < 2**31:
        raise ApiError(404, f"no API token has id {token_id}")
    ctx.app.accounts.revoke_token(token_id, actor=principal_of(request).username)
    return ok(message=f"token {token_id} revoked")


@route(router, "GET", "/api/audit", Permission.ADMIN, everywhere=True, response_model=Envelope)
def audit_log(
    request: Request,
    cursor: int | None = Query(default=None, ge=1, lt=2**63),
    limit: int = 100,
    actor: str | None = Query(default=None, max_length=100),
) -> dict[str, Any]:
    entries = context(request).app.accounts.audit_entries(
        limit=clamp(limit, 1, 1000), before_id=cursor, actor=actor
    )
    return ok(
        entries=[e.to_dict() for e in entries],
        next_cursor=entries[-1].id if entries else None,
    )
