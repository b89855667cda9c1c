"""The admin UI in Debian's Chromium: what a person clicks and reads (issue 13's "Done means").

SQLite only: the pages run the same facade calls on every database, which the API's suite
already proves on all three; three browsers' worth of time would prove nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from stask import Stask
from tests.browser_helpers import CHROMIUM, CHROMIUM_ARGS, Browsing, served
from tests.conftest import TEST_WORKERS, fresh_app

pytestmark = pytest.mark.slow
UI_WORKERS = [*TEST_WORKERS, "tests.ui_workers"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def ui_app(db_url: str, dialect: str, storage: Path) -> Iterator[Stask]:
    if dialect != "sqlite":
        pytest.skip("browser tests run on SQLite only; the API's suite covers every database")
    yield from fresh_app(db_url, storage, *UI_WORKERS)


@pytest.fixture
def web(browser: Browser, ui_app: Stask) -> Iterator[Browsing]:
    """The UI served for this test; every page it opens must end with a quiet console."""
    with served(ui_app) as base:
        browsing = Browsing(browser, base, ui_app)
        yield browsing
        browsing.close()
    assert browsing.console.problems == []


@pytest.fixture
def page(web: Browsing) -> Page:
    return web.page()


def test_the_health_route_loads_in_chromium(web: Browsing, page: Page) -> None:
    answer = page.goto(f"{web.base}/health")
    assert answer is not None
    assert answer.status == 200
    assert json.loads(page.locator("pre").inner_text())["success"] is True
