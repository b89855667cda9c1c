"""The login page: a form over the same login as ``POST /api/login`` (throttled and audited by
``accounts``), guarded against login CSRF by a double-submitted token."""

from __future__ import annotations

import hmac
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from stask.core.accounts import LoginFailed, LoginThrottled
from stask.web.security import context
from stask.web.ui.render import error_page, render, safe_next

LOGIN_COOKIE = "stask_login"
FORM_LIMIT = 8 * 1024


def _form_page(
    request: Request, next_page: str, *, error: str = "", username: str = "", status: int = 200
) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        None,
        "login.html",
        status=status,
        error=error,
        username=username,
        next=next_page,
        login_token=token,
    )
    ctx = context(request)
    response.set_cookie(
        LOGIN_COOKIE, token, path="/", secure=ctx.secure_cookie, httponly=True, samesite="strict"
    )
    return response


async def login_form(request: Request) -> Response:
    ctx = context(request)
    if ctx.auth is not None:
        return error_page(request, None, 404, "logins are handled by the host application")
    return _form_page(request, safe_next(ctx.prefix, request.query_params.get("next")))


async def _read_form(request: Request) -> dict[str, str] | None:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > FORM_LIMIT:
        return None
    try:
        form = await request.form(max_files=0, max_fields=10)
    except Exception:
        return None
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def login_submit(request: Request) -> Response:
    ctx = context(request)
    if ctx.auth is not None:
        return error_page(request, None, 404, "logins are handled by the host application")
    form = await _read_form(request)
    if form is None:
        return error_page(request, None, 400, "the form could not be read")
    username = form.get("username", "")[:100]
    password = form.get("password", "")[:1024]
    next_page = safe_next(ctx.prefix, form.get("next"))
    sent = form.get("login_token", "")
    kept = request.cookies.get(LOGIN_COOKIE, "")
    error = ""
    if not kept or not hmac.compare_digest(sent.encode(), kept.encode()):
        error, status = "form", 400
    else:
        try:
            session = await run_in_threadpool(ctx.login, request, username, password)
        except LoginThrottled:
            error, status = "throttled", 429
        except LoginFailed:
            error, status = "failed", 401
    if error:
        return _form_page(request, next_page, error=error, username=username, status=status)
    response = RedirectResponse(next_page, status_code=303)
    ctx.set_session_cookie(response, session)
    response.delete_cookie(LOGIN_COOKIE, path="/", secure=ctx.secure_cookie, httponly=True)
    return response


def routes(prefix: str) -> list[Route]:
    return [
        Route(f"{prefix}/login", login_form, methods=["GET"], name="page_login"),
        Route(f"{prefix}/login", login_submit, methods=["POST"], name="page_login_submit"),
    ]
