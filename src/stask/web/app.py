"""``create_app``: stask's REST API and admin UI as an ASGI app a host application can mount."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from stask import __version__
from stask.core.facade import Stask
from stask.web import errors, system, tasks, workers
from stask.web.errors import BodyTooLarge, error_response
from stask.web.headers import SecurityHeaders
from stask.web.security import AuthHook, WebContext, declared
from stask.web.ui.routes import routes as ui_routes

LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_BODY = 2 * 1024 * 1024
UPLOAD_SUFFIX = "/upload"


class BodyLimit:
    """413 for a body over 2 MiB, except uploads (bounded by max_upload_bytes); 400 for a NUL
    in the address."""

    def __init__(self, app: ASGIApp, upload_limit: int) -> None:
        self.app = app
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            # No name stask keeps can hold a NUL (PostgreSQL's text cannot at all).
            await error_response(400, "the address contains a NUL character (%00)")(
                scope, receive, send
            )
            return
        limit = self.upload_limit + 64 * 1024 if path.endswith(UPLOAD_SUFFIX) else MAX_BODY
        length = dict(scope.get("headers", ())).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await error_response(413, f"the body is over {limit:,} bytes")(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await error_response(413, f"the body is over {limit:,} bytes")(scope, receive, send)


def create_app(
    app: Stask,
    *,
    prefix: str = "/stask",
    auth: AuthHook | None = None,
    secure_cookie: bool | None = None,
) -> FastAPI:
    """The REST API of ``app`` under ``prefix``.

    ``auth`` hands stask the host application's current user: a callable taking the request
    and returning a ``stask.identity.Principal`` (or None for nobody; it may be async). With
    it, stask's own login is off. ``secure_cookie`` defaults to on unless the
    ``insecure_cookies`` setting says otherwise; browsers accept Secure cookies over plain
    HTTP on loopback addresses only.
    """
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    secure = not app.settings.insecure_cookies if secure_cookie is None else secure_cookie
    api = FastAPI(
        title="stask",
        version=__version__,
        description="Background tasks with live progress: the seed's routes and a full API.",
        openapi_url=f"{prefix}/openapi.json",
        docs_url=None,
        redoc_url=None,
        # On the app, so it guards every route, however it was added (and FastAPI versions
        # that include routers lazily leave no APIRoute in api.routes to patch).
        dependencies=[Depends(declared)],
    )
    api.state.stask_web = WebContext(
        app=app,
        prefix=prefix,
        auth=auth,
        cookie_name="__Host-stask_session" if secure else "stask_session",
        secure_cookie=secure,
    )
    errors.install(api)
    for router in (tasks.router, workers.router, system.router):
        api.include_router(router, prefix=prefix)
    # The admin UI's pages declare their roles in ui.render.Pages (HTML, not in openapi.json).
    api.router.routes.extend(ui_routes(prefix))
    api.add_middleware(BodyLimit, upload_limit=app.settings.max_upload_bytes)
    api.add_middleware(SecurityHeaders)
    return api
