"""Every route of the admin UI: the login page, the pages, and the static files."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from stask.web.ui import login, operations, pages

STATIC = Path(__file__).resolve().parent.parent / "static"


def routes(prefix: str) -> list[BaseRoute]:
    """Page routes under ``prefix`` (each declares its role), the login page and the static
    files (public, as the login page needs them)."""
    found: list[BaseRoute] = [*login.routes(prefix)]
    found += pages.pages.routes(prefix)
    found += operations.pages.routes(prefix)
    found.append(Mount(f"{prefix}/static", StaticFiles(directory=STATIC), name="static"))
    return found
