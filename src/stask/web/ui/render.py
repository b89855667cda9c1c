"""Rendering pages: the Jinja2 environment of each language, what every template gets, the
formats of times, sizes and numbers, and the ``page`` decorator that declares each page's
permission (a page without one cannot be added)."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo, available_timezones

from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from stask.core.accounts import MIN_PASSWORD
from stask.identity import Permission, Principal
from stask.web.errors import ApiError
from stask.web.security import audit_refusal, authenticate, context
from stask.web.ui.i18n import LANGUAGES, language_of, translations

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
THEMES = ("system", "light", "dark")
THEME_COOKIE = "stask_theme"
ZONE_COOKIE = "stask_tz"
# Messages are Markdown written by task code: raw HTML is shown as text, never run.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False})

PageView = Callable[[Request, Principal], Response]


@functools.cache
def environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone_of(request: Request) -> str:
    # stask.js writes its cookies URL-encoded: Asia/Tokyo arrives as Asia%2FTokyo.
    chosen = unquote(request.cookies.get(ZONE_COOKIE, ""))
    return chosen if chosen in _zones() else "UTC"


def theme_of(request: Request) -> str:
    chosen = request.cookies.get(THEME_COOKIE, "")
    return chosen if chosen in THEMES else "system"


class Formats:
    """Times in the reader's time zone, numbers in their language, sizes, durations."""

    def __init__(self, language: str, zone: str) -> None:
        self.language = language
        self.zone_name = zone
        self.zone = ZoneInfo(zone)

    def when(self, moment: dt.datetime | str | None) -> str:
        """A naive UTC time (or ISO text) in the chosen zone, to the second."""
        if not moment:  # None, "" or no such figure
            return "—"
        if isinstance(moment, str):
            text = moment
            try:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return text
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def iso(self, moment: dt.datetime | None) -> str:
        if moment is None:
            return ""
        return (
            moment.replace(tzinfo=dt.UTC).isoformat()
            if moment.tzinfo is None
            else moment.isoformat()
        )

    def number(self, value: float | int | None) -> str:
        if not isinstance(value, int | float):  # None, or no figure at all
            return "—"
        return str(format_decimal(value, locale=self.language, format="#,##0.##"))

    def percent(self, value: float | None) -> str:
        return f"{self.number(round(value, 1))} %" if isinstance(value, int | float) else "—"

    def seconds(self, value: float | None) -> str:
        return f"{self.number(round(value, 2))} s" if isinstance(value, int | float) else "—"

    def duration_ms(self, value: int | None) -> str:
        return "—" if value is None else self.seconds(value / 1000)

    def mib(self, value: int | None) -> str:
        return "—" if value is None else f"{self.number(round(value / 1024 / 1024, 1))} MiB"


def markdown(text: str | None) -> Markup:
    """Markdown to HTML with raw HTML escaped (markdown-it's ``html`` off)."""
    return Markup(_MARKDOWN.render(text or ""))  # markdown-it escapes raw HTML


def pretty_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def render(
    request: Request, who: Principal | None, template: str, *, status: int = 200, **values: Any
) -> HTMLResponse:
    ctx = context(request)
    language = language_of(request)
    zone = zone_of(request)
    values.update(
        prefix=ctx.prefix,
        who=who,
        csrf_token=(who.csrf_token or "") if who else "",
        csp_nonce=request.scope.get("state", {}).get("csp_nonce", ""),
        lang=language,
        languages=LANGUAGES,
        theme=theme_of(request),
        themes=THEMES,
        zone=zone,
        fmt=Formats(language, zone),
        markdown=markdown,
        pretty_json=pretty_json,
        own_login=ctx.auth is None,
        path=request.url.path,
        query=request.url.query,
        can_operate=bool(who and who.role.rank >= Permission.OPERATE.role.rank),  # type: ignore[union-attr]
        is_admin=bool(who and who.may(Permission.ADMIN)),
        min_password=MIN_PASSWORD,
    )
    html = environment(language).get_template(template).render(values)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, who: Principal | None, status: int, message: str) -> HTMLResponse:
    return render(request, who, "error.html", status=status, code=status, message=message)


def safe_next(prefix: str, value: str | None) -> str:
    """Where to go after logging in: a page under ``prefix`` of this site, else the dashboard."""
    home = f"{prefix}/"
    if not value or "\\" in value or any(ord(c) < 32 for c in value):
        return home
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return home
    if not (parts.path == home or parts.path.startswith(home)) or "/.." in parts.path:
        return home
    return value


def login_redirect(request: Request) -> RedirectResponse:
    prefix = context(request).prefix
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{prefix}/login?next={quote(here, safe='')}", status_code=303)


async def _principal(
    request: Request, permission: Permission, everywhere: bool
) -> Principal | Response:
    ctx = context(request)
    anonymous = (
        ctx.auth is None
        and "authorization" not in request.headers
        and not request.cookies.get(ctx.cookie_name)
    )
    if anonymous:
        return login_redirect(request)
    try:
        who = await authenticate(request)
    except ApiError as err:
        if err.http_status == 401 and ctx.auth is None:
            return login_redirect(request)
        return error_page(request, None, err.http_status, err.message)
    needed = permission.role
    assert needed is not None
    if who.role.rank < needed.rank or (everywhere and not who.is_global):
        message = f"this page needs the {needed.value} role"
        await audit_refusal(request, 403, message, who)
        return error_page(request, who, 403, message)
    request.state.principal = who
    return who


class Pages:
    """Page routes, each declaring its permission; ``routes(prefix)`` mounts them."""

    def __init__(self) -> None:
        self._pages: list[tuple[str, PageView, Permission, bool]] = []

    def page(
        self, path: str, permission: Permission, *, everywhere: bool = False
    ) -> Callable[[PageView], PageView]:
        if permission is Permission.PUBLIC:
            raise ValueError("pages need a role; the login page is added by routes()")

        def decorator(view: PageView) -> PageView:
            self._pages.append((path, view, permission, everywhere))
            return view

        return decorator

    def routes(self, prefix: str) -> list[Route]:
        found = []
        for path, view, permission, everywhere in self._pages:
            found.append(
                Route(
                    prefix + path,
                    _endpoint(view, permission, everywhere),
                    methods=["GET"],
                    name=f"page_{view.__name__}",
                )
            )
        return found


def _endpoint(view: PageView, permission: Permission, everywhere: bool) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        who = await _principal(request, permission, everywhere)
        if isinstance(who, Response):
            return who
        try:
            return await run_in_threadpool(view, request, who)
        except ApiError as err:
            return error_page(request, who, err.http_status, err.message)

    return endpoint
