"""Who is asking, and may they: sessions, bearer tokens, the host's hook, CSRF, permissions.

Every route declares the permission it needs with :func:`route`; ``create_app`` refuses (403)
any route that did not. Nothing is trusted by address: a request from 127.0.0.1 (or from a
proxy) authenticates like any other.
"""

from __future__ import annotations

import contextlib
import hmac
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from stask.core.accounts import NewSession
from stask.core.facade import Stask
from stask.identity import Permission, Principal
from stask.web.errors import ApiError

PERMISSION_KEY = "x-stask-permission"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-TOKEN"
# Query parameters that look like credentials: refused, never read (they end up in logs).
QUERY_CREDENTIALS = ("token", "access_token", "api_key", "apikey", "auth", "session")

AuthHook = Callable[[Request], "Principal | Awaitable[Principal | None] | None"]


@dataclass
class WebContext:
    """What every route needs: the facade, the mount prefix and how to authenticate."""

    app: Stask
    prefix: str
    auth: AuthHook | None
    cookie_name: str
    secure_cookie: bool

    def address(self, request: Request) -> str | None:
        return request.client.host if request.client else None

    def login(self, request: Request, username: str, password: str) -> NewSession:
        """A new session for the API's and the login page's form alike; LoginFailed or
        LoginThrottled (throttled and audited by ``accounts``) otherwise."""
        return self.app.accounts.login(
            username,
            password,
            address=self.address(request),
            user_agent=request.headers.get("user-agent"),
        )

    def set_session_cookie(self, response: Response, session: NewSession) -> None:
        response.set_cookie(
            self.cookie_name,
            session.cookie,
            max_age=int(self.app.settings.session_hours * 3600),
            path="/",
            secure=self.secure_cookie,
            httponly=True,
            samesite="lax",
        )

    def clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie_name, path="/", secure=self.secure_cookie, httponly=True)

    def audit(
        self,
        request: Request,
        principal: Principal | None,
        action: str,
        target: str | None = None,
        *,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.app.accounts.audit(
            principal.username if principal else None,
            action,
            target,
            address=self.address(request),
            outcome=outcome,
            detail=detail,
        )


def context(request: Request) -> WebContext:
    found: WebContext = request.app.state.stask_web
    return found


async def _refuse(
    request: Request, status: int, message: str, who: Principal | None = None
) -> ApiError:
    """An ApiError for a refused request, written to the audit log first."""
    await audit_refusal(request, status, message, who)
    return ApiError(status, message)


async def audit_refusal(
    request: Request, status: int, message: str, who: Principal | None = None
) -> None:
    """Append a refused request to the audit log (an API route's or a page's)."""
    ctx = context(request)
    # An audit failure (the database went away) must not turn a 401 into a 500.
    with contextlib.suppress(Exception):
        await run_in_threadpool(
            ctx.audit,
            request,
            who,
            "access_denied",
            f"{request.method} {request.url.path}"[:255],
            outcome="denied",
            detail={"status": status, "reason": message[:200]},
        )


async def authenticate(request: Request) -> Principal:
    """The caller, or 401. Session requests that change state must carry the CSRF token."""
    ctx = context(request)
    for name in QUERY_CREDENTIALS:
        if name in request.query_params:
            raise await _refuse(
                request,
                400,
                f"credentials are never accepted in the query string ({name}=) - send "
                "'Authorization: Bearer <token>' or log in",
            )
    if ctx.auth is not None:
        return await _from_host(request, ctx.auth)
    header = request.headers.get("authorization")
    if header is not None:
        return await _from_bearer(request, ctx, header)
    cookie = request.cookies.get(ctx.cookie_name)
    if cookie:
        return await _from_session(request, ctx, cookie)
    raise await _refuse(request, 401, "log in, or send 'Authorization: Bearer <token>'")


async def _from_host(request: Request, hook: AuthHook) -> Principal:
    found = hook(request)
    if inspect.isawaitable(found):
        found = await found
    if found is None:
        raise await _refuse(request, 401, "log in to the host application first")
    if not isinstance(found, Principal):
        raise TypeError("the auth hook must return a stask.identity.Principal or None")
    return found


async def _from_bearer(request: Request, ctx: WebContext, header: str) -> Principal:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise await _refuse(request, 401, "send 'Authorization: Bearer <token>'")
    principal = await run_in_threadpool(ctx.app.accounts.bearer, token.strip())
    if principal is None:
        raise await _refuse(request, 401, "this API token is unknown or revoked - create a new one")
    return principal


async def _from_session(request: Request, ctx: WebContext, cookie: str) -> Principal:
    principal = await run_in_threadpool(ctx.app.accounts.session, cookie)
    if principal is None:
        raise await _refuse(request, 401, "the session has ended - log in again")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not principal.csrf_token or not hmac.compare_digest(
            sent.encode(), principal.csrf_token.encode()
        ):
            raise await _refuse(
                request,
                403,
                f"missing or wrong {CSRF_HEADER} header - send the csrf_token of the session",
                principal,
            )
    return principal


def require(permission: Permission, *, everywhere: bool = False) -> Callable[..., Any]:
    """A dependency: the caller, if their role holds ``permission``.

    ``everywhere`` routes act on all workers (users, settings, queues, statistics of every
    worker): they also need a role that applies to every scope. Other routes check the
    object's scope themselves (a task outside the caller's scopes answers 404).
    """

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        needed = permission.role
        assert needed is not None
        if principal.role.rank < needed.rank or (everywhere and not principal.is_global):
            raise await _refuse(
                request,
                403,
                f"this needs the {needed.value} role" + (" for every scope" if everywhere else ""),
                principal,
            )
        request.state.principal = principal
        return principal

    return dependency


def route(
    router: APIRouter,
    method: str,
    path: str,
    permission: Permission,
    *,
    everywhere: bool = False,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a route with the permission it needs (documented as ``x-stask-permission``)."""
    extra = dict(options.pop("openapi_extra", None) or {})
    extra[PERMISSION_KEY] = permission.value + (":everywhere" if everywhere else "")
    dependencies = list(options.pop("dependencies", None) or [])
    if permission is not Permission.PUBLIC:
        dependencies.insert(0, Depends(require(permission, everywhere=everywhere)))
    return router.api_route(
        path, methods=[method], openapi_extra=extra, dependencies=dependencies, **options
    )


def principal_of(request: Request) -> Principal:
    found: Principal = request.state.principal
    return found


async def declared(request: Request) -> None:
    """An app-wide dependency: a route that declared no permission answers nothing but 403."""
    found = request.scope.get("route")
    extra = getattr(found, "openapi_extra", None) or {}
    if PERMISSION_KEY not in extra:
        raise ApiError(403, "this route declares no permission, so it is refused")
