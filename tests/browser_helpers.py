"""Helpers of the UI's browser tests: the web app served on a free loopback port, a runner on a
thread, and Chromium pages that fail their test on any console error or CSP violation.

Debian's Chromium (``/usr/bin/chromium``) is driven by Playwright's sync API; Playwright's own
browser download is never used. Each pytest(-xdist) worker starts one Chromium, and each test
its own server on port 0, so parallel workers never share a port or a database.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Error, Page

from stask import Stask
from stask.cli.web import serve_in_thread
from stask.runner import Runner, RunnerOptions

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PREFIX = "/stask"
PASSWORD = "correct horse battery staple"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Where the screenshots go: docs/screenshots/ (the README's) with `make screenshots`, else a
# temporary folder, so a test run leaves the work tree as it was.
SCREENSHOTS = Path(
    os.environ.get("STASK_SCREENSHOTS") or tempfile.mkdtemp(prefix="stask-screenshots-")
)
# Playwright's default is 30 s; a page of ours that takes 10 s is broken, and the test should
# say so soon.
TIMEOUT_MS = 10_000


@contextlib.contextmanager
def served(app: Stask) -> Iterator[str]:
    """The web app of ``app`` on a free 127.0.0.1 port; yields its base URL (with the prefix).

    Chromium counts 127.0.0.1 as a secure origin, so the login's Secure ``__Host-`` cookie is
    kept and sent back over plain HTTP, as with ``stask web`` on a laptop.
    """
    server = serve_in_thread(app, "127.0.0.1", 0, PREFIX)
    try:
        yield server.url.rstrip("/")
    finally:
        server.stop()


@contextlib.contextmanager
def running(app: Stask, concurrency: int = 2) -> Iterator[Runner]:
    """A runner processing ``app``'s tasks on a thread until the block ends."""
    runner = Runner(app, RunnerOptions(concurrency=concurrency, poll_seconds=0.05, grace_seconds=5))
    thread = threading.Thread(target=runner.run, name="ui-test-runner")
    thread.start()
    try:
        yield runner
    finally:
        runner.request_stop()
        thread.join(timeout=30)


@dataclass
class Console:
    """What a page said that a person should never cause: console errors (Chromium logs CSP
    violations and failed loads there), uncaught exceptions, and answers of 500 and over."""

    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught: {err}"))
        page.on(
            "response",
            lambda r: r.status >= 500 and self.problems.append(f"{r.status} from {r.url}"),
        )

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in ("error", "assert"):
            return
        where = message.location.get("url", "")
        self.problems.append(f"console {message.type}: {message.text} ({where})")

    def forgive(self, fragment: str) -> None:
        """Drop the problems a test caused on purpose (those mentioning ``fragment``); at
        least one must have happened."""
        kept = [problem for problem in self.problems if fragment not in problem]
        assert len(kept) < len(self.problems), f"no problem mentions {fragment!r}"
        self.problems[:] = kept


@dataclass
class Browsing:
    """Pages of one test: each in its own browser context (its own cookies), all watched."""

    browser: Browser
    base: str  # http://127.0.0.1:<port>/stask
    app: Stask
    console: Console = field(default_factory=Console)
    contexts: list[Any] = field(default_factory=list)

    def page(self, viewport: dict[str, int] | None = None, **options: Any) -> Page:
        context = self.browser.new_context(viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = context.new_page()
        self.console.watch(page)
        return page

    def user(self, name: str, role: str, scopes: tuple[str, ...] = ()) -> str:
        self.app.accounts.add_user(name, role, PASSWORD, list(scopes))
        return name

    def api_login(self, page: Page, name: str) -> None:
        """Log ``page``'s context in through the JSON API (its cookie jar is the context's)."""
        answer = page.request.post(
            f"{self.base}/api/login", data={"username": name, "password": PASSWORD}
        )
        assert answer.ok, answer.text()

    def login(self, name: str, page: Page | None = None) -> Page:
        """A page logged in as ``name`` through the login form, on the dashboard."""
        page = page or self.page()
        page.goto(f"{self.base}/login")
        page.get_by_label("User name").fill(name)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{self.base}/")
        return page

    def as_role(self, role: str) -> Page:
        """A page of a new user of ``role``, logged in."""
        return self.login(self.user(role, role))

    def close(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Error):  # a context the test closed itself
                context.close()


def shoot(page: Page, name: str) -> None:
    """Screenshots of the page at desktop and phone width under docs/screenshots/, each width
    loaded afresh as that screen would (charts size themselves once); at phone width nothing
    may be wider than the screen (no sideways scrolling)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        if page.viewport_size != size:
            page.set_viewport_size(size)
            page.reload()
        if size == PHONE:
            assert_fits_phone(page)
        page.screenshot(path=SCREENSHOTS / f"{name}-{label}.png", full_page=True)
    if before is not None and before != PHONE:
        page.set_viewport_size(before)
        page.reload()


def assert_fits_phone(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} is {width} px wide at phone width"


# Headless Chromium keeps every tab "visible" (another tab in front, a minimised window: no
# change), so a test hides a page the way the page itself would learn of it: document.hidden
# and visibilityState report hidden, then the visibilitychange event fires.
_VISIBILITY = """hidden => {
    for (const name of ["hidden", "visibilityState"]) delete document[name];
    if (hidden) {
        const hide = (name, value) =>
            Object.defineProperty(document, name, {configurable: true, get: () => value});
        hide("hidden", true);
        hide("visibilityState", "hidden");
    }
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def set_hidden(page: Page, hidden: bool) -> None:
    """Make ``page`` believe its tab was hidden (or shown again)."""
    page.evaluate(_VISIBILITY, hidden)
