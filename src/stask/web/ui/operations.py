"""Pages for operators of the whole system: statistics, queues and runners, and for admins the
users, API tokens and audit log."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from stask.identity import Permission, Principal
from stask.web.security import context
from stask.web.ui.render import Pages, render

pages = Pages()
PERIODS = (1, 6, 24, 168, 720)
AUDIT_PAGE = 100


def _hours(request: Request) -> int:
    value = request.query_params.get("hours", "24")
    return int(value) if value.isdigit() and int(value) in PERIODS else 24


@pages.page("/stats", Permission.READ, everywhere=True)
def stats(request: Request, who: Principal) -> Response:
    app = context(request).app
    hours = _hours(request)
    report = app.statistics.report(hours)
    return render(
        request,
        who,
        "stats.html",
        hours=hours,
        periods=PERIODS,
        summary=report["summary"],
        workers=list(report["workers"].values()),
        alerts=report["alerts"],
        series=app.throughput(min(hours, 24 * 31)),
    )


@pages.page("/queues", Permission.READ, everywhere=True)
def queues(request: Request, who: Principal) -> Response:
    app = context(request).app
    return render(request, who, "queues.html", queues=app.queues(), runners=app.runners())


@pages.page("/users", Permission.ADMIN, everywhere=True)
def users(request: Request, who: Principal) -> Response:
    return render(request, who, "users.html", users=context(request).app.accounts.users())


@pages.page("/tokens", Permission.ADMIN, everywhere=True)
def tokens(request: Request, who: Principal) -> Response:
    accounts = context(request).app.accounts
    return render(
        request,
        who,
        "tokens.html",
        tokens=accounts.tokens(),
        usernames=[u.username for u in accounts.users() if not u.disabled],
    )


@pages.page("/audit", Permission.ADMIN, everywhere=True)
def audit(request: Request, who: Principal) -> Response:
    accounts = context(request).app.accounts
    cursor = request.query_params.get("cursor", "")
    actor = request.query_params.get("actor", "").strip()[:100] or None
    before = int(cursor) if cursor.isdigit() and 0 < int(cursor) < 2**63 else None
    entries = accounts.audit_entries(limit=AUDIT_PAGE, before_id=before, actor=actor)
    return render(
        request,
        who,
        "audit.html",
        entries=entries,
        actor=actor or "",
        next_cursor=entries[-1].id if len(entries) == AUDIT_PAGE else None,
    )
