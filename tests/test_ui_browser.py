"""The admin UI in Debian's Chromium: what a person clicks and reads (issue 13's "Done means").

SQLite only: the pages run the same facade calls on every database, which the API's suite
already proves on all three; three browsers' worth of time would prove nothing more.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, Request, expect, sync_playwright

from stask import Stask, Status
from stask.models import TaskQuery
from tests.browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PASSWORD,
    Browsing,
    running,
    served,
    set_hidden,
    shoot,
)
from tests.conftest import TEST_WORKERS, fresh_app
from tests.helpers import wait_until
from tests.ui_workers import HOSTILE

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
def admin(web: Browsing) -> Page:
    return web.as_role("admin")


def accept_dialogs(page: Page) -> None:
    page.on("dialog", lambda dialog: dialog.accept())


def progress_of(page: Page) -> int:
    return int(page.locator('[data-live="task-state"] progress').get_attribute("value") or 0)


def test_the_health_route_loads_in_chromium(web: Browsing) -> None:
    page = web.page()
    answer = page.goto(f"{web.base}/health")
    assert answer is not None
    assert answer.status == 200
    assert json.loads(page.locator("pre").inner_text())["success"] is True


def test_logging_in_leads_to_the_page_asked_for(web: Browsing) -> None:
    web.user("ana", "operator")
    page = web.page()
    page.goto(f"{web.base}/workers")
    expect(page).to_have_url(f"{web.base}/login?next=%2Fstask%2Fworkers")
    page.get_by_label("User name").fill("ana")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    web.console.forgive("status of 401")  # the refused login's page, as it should be
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{web.base}/workers")
    expect(page.locator("header.top")).to_contain_text("ana")


def test_a_task_run_from_its_worker_card_rises_live_to_completed_and_downloads(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    admin.goto(f"{web.base}/workers")
    card = admin.locator("article.worker", has_text="Reports")
    card.locator("summary", has_text="Run").click()  # opens the form
    card.get_by_label("Action").select_option("build")
    card.get_by_label("Options (JSON)").fill('{"rows": 12, "delay": 0.25}')
    with running(ui_app):
        card.get_by_role("button", name="Run").click()
        admin.wait_for_url(f"{web.base}/tasks/*")
        task_id = int(admin.url.rsplit("/", 1)[1])
        seen = []
        state = admin.locator('[data-live="task-state"]')
        deadline = time.monotonic() + 30
        while state.get_attribute("data-finished") != "true":
            assert time.monotonic() < deadline, f"the page never showed the end, only {seen}"
            value = progress_of(admin)
            if not seen or value != seen[-1]:
                seen.append(value)
            admin.wait_for_timeout(100)
        expect(state.locator(".badge").first).to_have_text("completed")
    assert seen == sorted(seen), f"the progress went back: {seen}"
    between = [value for value in seen if 0 < value < 100]
    assert len(between) >= 2, f"the bar did not rise live, it showed {seen}"
    assert progress_of(admin) == 100
    expect(state).to_contain_text("12 / 12")
    expect(admin.locator("ol.log")).to_contain_text("built")  # the log line arrived live
    assert ui_app.get(task_id).status is Status.COMPLETED

    with admin.expect_download() as download:
        admin.get_by_role("link", name="Download result").click()
    saved = Path(download.value.path())
    assert saved.read_text(encoding="utf-8").splitlines() == ["row", *map(str, range(1, 13))]


def test_a_long_task_is_cancelled_from_its_page(web: Browsing, admin: Page, ui_app: Stask) -> None:
    task = ui_app.create("reports", "build", {"rows": 2000, "delay": 0.05})
    accept_dialogs(admin)
    with running(ui_app):
        wait_until(lambda: ui_app.get(task.id).status is Status.RUNNING, 30, "the task to run")
        admin.goto(f"{web.base}/tasks/{task.id}")
        state = admin.locator('[data-live="task-state"]')
        expect(state.locator(".badge").first).to_have_text("running")
        expect(state.locator("progress")).not_to_have_attribute("value", "0")
        admin.get_by_role("button", name="Cancel").click()
        expect(state.locator(".badge").first).to_have_text("cancelled")
    assert ui_app.get(task.id).status is Status.CANCELLED
    assert 0 < progress_of(admin) < 100
    actions = admin.locator('[data-live="task-actions"]')
    expect(actions.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(actions.get_by_role("button", name="Retry")).to_be_visible()


def test_a_failed_task_is_retried_from_its_page(
    web: Browsing, admin: Page, ui_app: Stask, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    task = ui_app.create("reports", "flaky", {"fixed": str(fixed)})
    ui_app.process_pending()
    assert ui_app.get(task.id).status is Status.FAILED
    admin.goto(f"{web.base}/tasks/{task.id}")
    state = admin.locator('[data-live="task-state"]')
    expect(state.locator(".badge").first).to_have_text("failed")
    expect(state.locator(".error-text")).to_contain_text("the report server is down")
    expect(admin.get_by_role("button", name="Cancel")).to_have_count(0)
    fixed.touch()
    admin.get_by_role("button", name="Retry").click()
    expect(state.locator(".badge").first).to_have_text("pending")
    expect(admin.get_by_role("button", name="Retry")).to_have_count(0)
    ui_app.process_pending()
    assert ui_app.get(task.id).status is Status.COMPLETED
    # No reload: the page follows the task again once it is queued again.
    expect(state.locator(".badge").first).to_have_text("completed")


def test_a_new_schedule_is_shown_in_words_with_its_next_runs(web: Browsing, admin: Page) -> None:
    admin.goto(f"{web.base}/workers/reports")
    expect(admin.locator("ol.next-runs li")).to_have_text(["None"])
    form = admin.locator("form.schedule")
    form.get_by_label("Type").select_option("periodic")
    form.get_by_label("Frequency").select_option("daily")
    form.get_by_label("Time (daily, weekly)").fill("03:30")
    form.locator("select[name=action]").select_option("build")
    form.get_by_role("button", name="Save schedule").click()
    expect(admin.locator("ol.next-runs li")).to_have_count(5)
    expect(admin.locator(".schedule-words")).to_contain_text("03:30")
    times = admin.locator("ol.next-runs time").evaluate_all("els => els.map(e => e.dateTime)")
    assert len(set(times)) == 5, times
    assert times == sorted(times)
    assert web.app.schedule("reports").to_dict()["time"] == "03:30"


def test_the_ukrainian_switch_translates_the_pages(web: Browsing) -> None:
    web.user("olena", "viewer")
    page = web.page()
    page.goto(f"{web.base}/login")
    page.get_by_role("button", name="Українська").click()
    expect(page.get_by_role("button", name="Увійти")).to_be_visible()
    page.get_by_label("Ім’я користувача").fill("olena")  # noqa: RUF001 - the catalogue's apostrophe
    page.get_by_label("Пароль").fill(PASSWORD)
    page.get_by_role("button", name="Увійти").click()
    expect(page.locator("html")).to_have_attribute("lang", "uk")
    nav = page.get_by_role("navigation")
    expect(nav.get_by_role("link", name="Панель")).to_be_visible()
    expect(nav.get_by_role("link", name="Воркери")).to_be_visible()
    expect(page.get_by_role("heading", name="Панель")).to_be_visible()


def test_keyboard_shortcuts_navigate_and_open_the_help(web: Browsing, admin: Page) -> None:
    for key, path in (("w", "/workers"), ("t", "/tasks"), ("s", "/stats"), ("d", "/")):
        admin.keyboard.press(key)
        expect(admin).to_have_url(f"{web.base}{path}")
        admin.wait_for_load_state()  # the shortcuts listen once the page's script ran
    help_box = admin.locator("dialog#help")
    expect(help_box).to_be_hidden()
    admin.keyboard.press("?")
    expect(help_box).to_be_visible()
    expect(help_box).to_contain_text("Keyboard shortcuts")
    admin.keyboard.press("Escape")
    expect(help_box).to_be_hidden()
    admin.get_by_label("Refresh").focus()  # a key typed into a field is not a shortcut
    admin.keyboard.press("w")
    expect(admin).to_have_url(f"{web.base}/")


OPERATING = (
    "[data-post], [data-bulk-action], form[data-run], form[data-settings], form[data-schedule], "
    "form[data-create], details.run"
)


def test_a_viewer_sees_nothing_to_run_and_the_api_refuses_them(
    web: Browsing, ui_app: Stask, tmp_path: Path
) -> None:
    failed = ui_app.create("reports", "flaky", {"fixed": str(tmp_path / "never")})
    ui_app.process_pending()
    pending = ui_app.create("inventory", "sync_stock", {"rows": 1})
    page = web.as_role("viewer")
    for path in (
        "/",
        "/workers",
        "/workers/reports",
        "/workers/archive",  # its settings, read-only
        "/tasks",
        f"/tasks/{failed.id}",
        f"/tasks/{pending.id}",
        "/stats",
        "/queues",
    ):
        page.goto(f"{web.base}{path}")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(page.locator(OPERATING), f"a control a viewer cannot use on {path}").to_have_count(0)
    token = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    answer = page.request.post(
        f"{web.base}/api/tasks",
        data={"identifier": "inventory", "action": "sync_stock"},
        headers={"X-CSRF-TOKEN": token},
    )
    assert answer.status == 403
    assert ui_app.listing.count(TaskQuery())[0] == 2, "the refused request created a task"


def fetches_of(page: Page, url: str) -> list[str]:
    """Requests the page's script makes for ``url`` (the live regions' refreshes), as they go."""
    seen: list[str] = []
    page.on("request", lambda r: r.url == url and r.resource_type == "fetch" and seen.append(url))
    return seen


def test_a_hidden_tab_stops_refreshing_and_a_shown_one_resumes(web: Browsing, admin: Page) -> None:
    refreshes = fetches_of(admin, f"{web.base}/")
    admin.get_by_label("Refresh").select_option("2")
    admin.wait_for_timeout(4500)
    assert len(refreshes) >= 2, "the dashboard did not refresh every 2 s"
    set_hidden(admin, True)
    admin.wait_for_timeout(300)  # a refresh already on its way may land
    while_hidden = len(refreshes)
    admin.wait_for_timeout(5000)
    assert len(refreshes) == while_hidden, "the hidden tab kept refreshing"
    set_hidden(admin, False)
    admin.wait_for_timeout(2500)
    assert len(refreshes) > while_hidden, "the tab shown again did not refresh"
    admin.get_by_label("Refresh").select_option("0")  # paused: nothing at all
    admin.wait_for_timeout(300)
    paused = len(refreshes)
    admin.wait_for_timeout(3000)
    assert len(refreshes) == paused
    expect(admin.locator("[data-live-state]")).to_have_text("Paused")


@dataclass
class Refreshes:
    """The page's own fetches of ``url`` (its live refreshes): when each began and ended, and
    the most that were ever in flight at once."""

    url: str
    began: list[float] = field(default_factory=list)
    ended: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    def watch(self, page: Page) -> None:
        page.on("request", self._begin)
        page.on("requestfinished", self._end)
        page.on("requestfailed", self._end)

    def _ours(self, request: Request) -> bool:
        return request.url == self.url and request.resource_type == "fetch"

    def _begin(self, request: Request) -> None:
        if self._ours(request):
            self.began.append(time.monotonic())
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def _end(self, request: Request) -> None:
        if self._ours(request):
            self.ended.append(time.monotonic())
            self.in_flight -= 1

    def wait(self, page: Page, began: int = 0, ended: int = 0, seconds: float = 15) -> None:
        """Until ``began`` refreshes have begun and ``ended`` have ended (the page's events
        arrive while it waits)."""
        deadline = time.monotonic() + seconds
        while len(self.began) < began or len(self.ended) < ended:
            assert time.monotonic() < deadline, f"{len(self.began)} refreshes began, not more"
            page.wait_for_timeout(50)

    def idle_gaps(self) -> list[float]:
        """Seconds from the end of each refresh to the start of the next."""
        return [start - end for end, start in zip(self.ended, self.began[1:], strict=False)]


def slow_task_list(app: Stask, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The Tasks page's answers made slow by as many seconds as the list returned holds
    (none at first): its count waits that long on the server."""
    answer_seconds = [0.0]
    estimate = app.listing.estimate

    def slow_estimate(query: TaskQuery) -> Any:
        time.sleep(answer_seconds[0])  # the server being slow is what the test is about
        return estimate(query)

    monkeypatch.setattr(app.listing, "estimate", slow_estimate)
    return answer_seconds


def test_live_refreshes_never_overlap_and_slow_down_when_answers_are_slow(
    web: Browsing, admin: Page, ui_app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    ui_app.create("mailer", "send", {"to": "ops"})
    answer_seconds = slow_task_list(ui_app, monkeypatch)
    refreshes = Refreshes(f"{web.base}/tasks")
    refreshes.watch(admin)
    admin.goto(f"{web.base}/tasks")
    admin.get_by_label("Refresh").select_option("2")
    admin.get_by_role("heading", level=1).click()  # R is a shortcut outside the select only
    refreshes.wait(admin, ended=2)  # quick answers: a refresh every 2 s
    answer_seconds[0] = 1.2  # for the refreshes that begin from now on
    first_slow = len(refreshes.began)
    refreshes.wait(admin, began=first_slow + 3, seconds=40)
    admin.keyboard.press("r")  # asked for while a refresh is on its way: it waits for that one
    refreshes.wait(admin, began=first_slow + 4)
    expect(admin.locator("[data-live-state]")).to_have_text("Slow answers: refreshing less often")
    assert refreshes.most_in_flight == 1, "two refreshes of the page were in flight at once"
    gaps = refreshes.idle_gaps()
    quick, slow, slower, asked = gaps[first_slow - 1 : first_slow + 3]
    timeline = f"seconds between refreshes: {[round(g, 1) for g in gaps]}"
    assert quick < 3, f"the refresh after a quick answer was late; {timeline}"
    assert slow > 1.5 * quick, f"no back-off after a slow answer; {timeline}"
    assert slower > 1.5 * slow, f"no further back-off; {timeline}"
    assert asked < 0.5, f"the refresh asked for did not follow the one on its way; {timeline}"


def test_an_action_taken_while_a_refresh_is_on_its_way_is_shown_after_it(
    web: Browsing, admin: Page, ui_app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = ui_app.create("mailer", "send", {"to": "ops"})
    answer_seconds = slow_task_list(ui_app, monkeypatch)
    refreshes = Refreshes(f"{web.base}/tasks")
    refreshes.watch(admin)
    confirmations(admin)
    admin.goto(f"{web.base}/tasks")
    admin.get_by_label("Refresh").select_option("0")  # only R and the action refresh
    admin.get_by_label(f"Select task {task.id}").check()
    answer_seconds[0] = 1.0
    admin.get_by_role("heading", level=1).click()
    admin.keyboard.press("r")
    refreshes.wait(admin, began=1)  # a refresh that began before the cancel, on its way
    admin.locator("[data-bulk-action=cancel]:not([data-bulk-all])").click()
    deadline = time.monotonic() + 5
    while ui_app.get(task.id).status is not Status.CANCELLED:
        assert time.monotonic() < deadline, "the cancel never reached the server"
        admin.wait_for_timeout(50)
    assert len(refreshes.ended) == 0, "the refresh landed before the cancel: no race to see"
    expect(task_row(admin, task.id).locator(".badge")).to_have_text("cancelled")
    assert refreshes.most_in_flight == 1


def test_html_in_a_task_is_shown_as_text_and_never_runs(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    task = ui_app.create("reports", "hostile", {"note": HOSTILE})
    admin.goto(f"{web.base}/tasks/{task.id}")
    ui_app.process_pending()  # the message and the log line arrive while the page is open
    state = admin.locator('[data-live="task-state"]')
    expect(state.locator(".badge").first).to_have_text("completed")
    expect(state.locator(".message strong")).to_have_text("Done")  # Markdown, rendered
    expect(state.locator(".message")).to_contain_text(HOSTILE)  # raw HTML, shown as text
    expect(admin.locator("ol.log")).to_contain_text(f"log line {HOSTILE}")  # arrived live
    expect(admin.locator("pre", has_text='"note"')).to_contain_text("onerror")
    admin.reload()  # and the same, rendered by the server
    expect(admin.locator("ol.log")).to_contain_text(f"log line {HOSTILE}")
    for path in ("/", "/tasks", f"/tasks/{task.id}"):
        admin.goto(f"{web.base}{path}")
        assert admin.locator('img[src="x"]').count() == 0
        assert admin.evaluate("window.__staskPwned") is None


def test_every_page_fits_a_phone_and_is_photographed(
    web: Browsing, ui_app: Stask, tmp_path: Path
) -> None:
    """Screenshots for docs/ (desktop and phone width) of each page, with tasks of every
    ending in them; at phone width no page is wider than the screen."""
    for rows in (3, 5, 8):
        ui_app.create("reports", "build", {"rows": rows, "delay": 0})
    ui_app.create("reports", "flaky", {"fixed": str(tmp_path / "never")})
    ui_app.create("inventory", "sync_stock", {"rows": 4})
    ui_app.process_pending()
    cancelled = ui_app.create("reports", "build", {"rows": 3})
    ui_app.cancel(cancelled.id)
    done = ui_app.create("reports", "build", {"rows": 6, "delay": 0})
    ui_app.process_pending()
    ui_app.create("mailer", "send", {"to": "ops@example.com"})  # left pending

    page = web.page()
    page.goto(f"{web.base}/login")
    shoot(page, "login")
    web.login(web.user("admin", "admin"), page)
    for name, path in (
        ("dashboard", "/"),
        ("workers", "/workers"),
        ("worker", "/workers/reports"),
        ("tasks", "/tasks"),
        ("task", f"/tasks/{done.id}"),
        ("stats", "/stats"),
        ("queues", "/queues"),
        ("users", "/users"),
        ("tokens", "/tokens"),
        ("audit", "/audit"),
    ):
        page.goto(f"{web.base}{path}")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        shoot(page, name)


def test_worker_settings_show_inline_errors_and_keep_a_good_value(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    admin.goto(f"{web.base}/workers/archive")
    form = admin.locator("form.settings")
    days, formats = form.get_by_label("keep_days"), form.get_by_label("formats")
    expect(days).to_have_value("30")
    expect(form.get_by_label("api_key")).to_have_value("[redacted]")
    days.fill("thirty")
    formats.fill('["csv", "pdf"')
    form.get_by_role("button", name="Save settings").click()
    for name, error in (("keep_days", "Not a number"), ("formats", "Not valid JSON")):
        beside = form.locator(".field", has=admin.get_by_label(name)).locator(".field-error")
        expect(beside).to_have_text(error)
        expect(beside).to_be_visible()
        expect(form.get_by_label(name)).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".field-error:visible")).to_have_count(2)  # none beside the good ones
    assert ui_app.get_config("archive", "keep_days") == 30, "an invalid form was saved"

    days.fill("45")
    formats.fill('["csv", "xlsx"]')
    form.get_by_role("button", name="Save settings").click()
    expect(admin.locator(".toast")).to_have_text("Done")
    expect(form.locator(".field-error:visible")).to_have_count(0)
    expect(days).to_have_attribute("aria-invalid", "false")
    admin.reload()
    expect(days).to_have_value("45")
    assert json.loads(formats.input_value()) == ["csv", "xlsx"]
    assert ui_app.get_config("archive", "keep_days") == 45
    assert ui_app.get_config("archive", "label") == "Monthly"
    assert ui_app.get_config("archive", "api_key") == "k-123", "the redaction was saved"


@dataclass
class Confirmations:
    """The texts of the confirmations a page asked, each answered as ``accept`` says then."""

    accept: bool = True
    asked: list[str] = field(default_factory=list)

    def answer(self, dialog: Dialog) -> None:
        self.asked.append(dialog.message)
        if self.accept:
            dialog.accept()
        else:
            dialog.dismiss()


def confirmations(page: Page) -> Confirmations:
    found = Confirmations()
    page.on("dialog", found.answer)
    return found


def task_row(page: Page, task_id: int) -> Locator:
    return page.locator("table.tasks tbody tr").filter(
        has=page.get_by_role("link", name=f"#{task_id}", exact=True)
    )


def test_two_selected_tasks_are_cancelled_together(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    first, second, third = (ui_app.create("mailer", "send", {"to": n}) for n in "abc")
    confirm = confirmations(admin)
    admin.goto(f"{web.base}/tasks")
    refreshes = fetches_of(admin, f"{web.base}/tasks")
    admin.get_by_label("Refresh").select_option("2")
    for task in (first, third):
        admin.get_by_label(f"Select task {task.id}").check()
    while not refreshes:  # the list is replaced under the ticks, which stay
        admin.wait_for_timeout(100)
    admin.get_by_label("Refresh").select_option("0")  # what refreshes the list is the action
    admin.wait_for_timeout(300)  # a refresh on its way lands
    for task, ticked in ((first, True), (second, False), (third, True)):
        expect(admin.get_by_label(f"Select task {task.id}")).to_be_checked(checked=ticked)
    admin.locator("[data-bulk-action=cancel]:not([data-bulk-all])").click()
    for task in (first, third):
        expect(task_row(admin, task.id).locator(".badge")).to_have_text("cancelled")
    expect(task_row(admin, second.id).locator(".badge")).to_have_text("pending")
    assert confirm.asked == ["Cancel: 2 selected tasks?"]
    statuses = [ui_app.get(t.id).status for t in (first, second, third)]
    assert statuses == [Status.CANCELLED, Status.PENDING, Status.CANCELLED]


def test_everything_matching_a_filter_is_cancelled_after_its_count_is_confirmed(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    mail = [ui_app.create("mailer", "send", {"to": n}) for n in "abc"]
    stock = [ui_app.create("inventory", "sync_stock", {"rows": n}) for n in (1, 2)]
    everything = admin.locator("[data-bulk-action=cancel][data-bulk-all]")
    confirm = confirmations(admin)
    confirm.accept = False
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    admin.goto(f"{web.base}/tasks?worker=mailer&to={yesterday}")  # the dates count too
    expect(admin.locator(".count")).to_have_text("0 tasks match")
    with admin.expect_event("dialog"):
        everything.click()
    admin.goto(f"{web.base}/tasks?worker=mailer")
    expect(admin.locator(".count")).to_have_text("3 tasks match")
    admin.get_by_label("Refresh").select_option("0")  # what refreshes the list is the job's end
    with admin.expect_event("dialog"):
        everything.click()
    assert confirm.asked == ["Cancel: all 0 matching tasks?", "Cancel: all 3 matching tasks?"]
    admin.wait_for_timeout(500)  # a declined count must start nothing
    expect(admin.locator("[data-job-state]")).to_be_hidden()
    assert all(ui_app.get(t.id).status is Status.PENDING for t in mail + stock)

    confirm.accept = True
    with admin.expect_event("dialog"):
        everything.click()
    assert confirm.asked[-1] == "Cancel: all 3 matching tasks?"
    expect(admin.locator("[data-job-state]")).to_have_text("Finished: 3 done, 0 refused")
    for task in mail:  # the list refreshed itself after the job
        expect(task_row(admin, task.id).locator(".badge")).to_have_text("cancelled")
    assert [ui_app.get(t.id).status for t in mail] == [Status.CANCELLED] * 3
    assert [ui_app.get(t.id).status for t in stock] == [Status.PENDING] * 2


def test_a_queue_is_paused_and_resumed_by_an_admin_and_a_viewer_has_no_switch(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    ui_app.create("mailer", "send", {"to": "ops"}, queue="mail")
    ui_app.create("reports", "build", {"rows": 1})  # the default queue, left as it is
    confirmations(admin)
    admin.goto(f"{web.base}/queues")
    admin.get_by_label("Refresh").select_option("0")  # what refreshes the table is the button
    row = admin.locator('[data-live="queues"] tr', has=admin.get_by_role("link", name="mail"))
    expect(row.locator(".badge")).to_have_text("active")
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".badge")).to_have_text("paused")
    assert ui_app.queue("mail").paused
    assert not ui_app.queue("default").paused

    viewer = web.as_role("viewer")
    viewer.goto(f"{web.base}/queues")
    seen = viewer.locator("tr", has=viewer.get_by_role("link", name="mail"))
    expect(seen.locator(".badge")).to_have_text("paused")
    expect(viewer.get_by_role("button", name="Resume")).to_have_count(0)
    expect(viewer.get_by_role("button", name="Pause")).to_have_count(0)

    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".badge")).to_have_text("active")
    expect(admin.locator('[data-live="queues"] .badge', has_text="paused")).to_have_count(0)
    assert not ui_app.queue("mail").paused
    viewer.reload()
    expect(seen.locator(".badge")).to_have_text("active")
    expect(viewer.get_by_role("button", name="Pause")).to_have_count(0)


def test_a_queues_limits_are_set_refused_when_half_given_and_cleared(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    ui_app.create("mailer", "send", {"to": "ops"}, queue="mail")
    ui_app.create("reports", "build", {"rows": 1})  # the default queue, first in the choice
    admin.goto(f"{web.base}/queues")
    admin.get_by_label("Refresh").select_option("0")  # what refreshes the table is the form
    form = admin.locator("form[data-limits]")
    form.get_by_label("Queue").select_option("mail")
    form.get_by_label("Concurrency limit").fill("3")
    form.get_by_label("Rate limit: tasks").fill("10")
    form.get_by_role("button", name="Save limits").click()
    expect(form.locator(".field-error")).to_have_text(
        "Give both the number of tasks and the seconds, or neither."
    )
    assert ui_app.queue("mail").concurrency_limit is None, "half a rate was saved"
    form.get_by_label("per seconds").fill("60")
    form.get_by_role("button", name="Save limits").click()
    row = admin.locator('[data-live="queues"] tr', has=admin.get_by_role("link", name="mail"))
    expect(row).to_contain_text("10 per 60 s")
    expect(form.locator(".field-error")).to_be_hidden()
    saved = ui_app.queue("mail")
    assert (saved.concurrency_limit, saved.rate_limit, saved.rate_period_seconds) == (3, 10, 60)
    form.get_by_label("Queue").select_option("default")  # each queue's own limits in the form
    expect(form.get_by_label("Concurrency limit")).to_have_value("")
    form.get_by_label("Queue").select_option("mail")
    expect(form.get_by_label("Concurrency limit")).to_have_value("3")
    for label in ("Concurrency limit", "Rate limit: tasks", "per seconds"):
        form.get_by_label(label).fill("")
    form.get_by_role("button", name="Save limits").click()
    expect(row).not_to_contain_text("per 60 s")
    cleared = ui_app.queue("mail")
    assert (cleared.concurrency_limit, cleared.rate_limit) == (None, None)


def test_a_queue_is_paused_until_a_time_given_in_the_readers_zone(
    web: Browsing, ui_app: Stask
) -> None:
    ui_app.create("mailer", "send", {"to": "ops"}, queue="mail")
    page = web.login(web.user("admin", "admin"), web.page(timezone_id="Asia/Tokyo"))
    page.goto(f"{web.base}/queues")
    page.get_by_label("Time zone").select_option("Asia/Tokyo")  # the browser's, offered
    expect(page.locator("footer")).to_contain_text("Times in Asia/Tokyo")
    page.get_by_label("Refresh").select_option("0")  # what refreshes the table is the form
    tokyo = dt.timezone(dt.timedelta(hours=9))  # no summer time there
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    wall = until.astimezone(tokyo).strftime("%Y-%m-%dT%H:%M")
    form = page.locator("form[data-pause-until]")
    form.get_by_label("Queue").select_option("mail")
    form.get_by_label("Until (Asia/Tokyo)").fill(wall)
    form.get_by_role("button", name="Pause").click()
    row = page.locator('[data-live="queues"] tr', has=page.get_by_role("link", name="mail"))
    expect(row.locator(".badge")).to_have_text("paused")
    expect(row).to_contain_text(f"until {wall.replace('T', ' ')}:00")
    assert ui_app.queue("mail").paused_until == until.replace(tzinfo=None)


def test_the_exports_of_a_filtered_list_hold_the_filtered_tasks(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    mail = [ui_app.create("mailer", "send", {"to": n}) for n in "abc"]
    ui_app.create("inventory", "sync_stock", {"rows": 1})
    ui_app.cancel(mail[1].id)
    today = dt.datetime.now(dt.UTC).date()
    days = f"from={today - dt.timedelta(days=1)}&to={today}"  # the list's "to" takes that day
    admin.goto(f"{web.base}/tasks?worker=mailer&status=pending&{days}")
    expect(admin.locator(".count")).to_have_text("2 tasks match")
    with admin.expect_download() as download:
        admin.get_by_role("link", name="CSV").click()
    assert download.value.suggested_filename == "stask-tasks.csv"
    with Path(download.value.path()).open(encoding="utf-8", newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert sorted(int(r["id"]) for r in rows) == [mail[0].id, mail[2].id]
    assert {(r["identifier"], r["status"]) for r in rows} == {("mailer", "pending")}
    with admin.expect_download() as download:
        admin.get_by_role("link", name="JSON lines").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [mail[0].id, mail[2].id]


def test_run_again_opens_a_new_task_of_the_same_work_linked_both_ways(
    web: Browsing, admin: Page, ui_app: Stask
) -> None:
    # A secret in the options is redacted on the page; the new task still gets the real one.
    done = ui_app.create("reports", "build", {"rows": 2, "delay": 0, "api_token": "s3cret"})
    ui_app.process_pending()
    admin.goto(f"{web.base}/tasks/{done.id}")
    expect(admin.locator('[data-live="task-state"] .badge').first).to_have_text("completed")
    expect(admin.locator("pre", has_text='"api_token"')).not_to_contain_text("s3cret")
    admin.get_by_role("button", name="Run again").click()
    expect(admin).not_to_have_url(f"{web.base}/tasks/{done.id}")
    again = ui_app.get(int(admin.url.rsplit("/", 1)[1]))
    assert again.id != done.id
    expect(admin.get_by_role("heading", level=1)).to_have_text(f"Task #{again.id}")
    assert (again.identifier, again.action, again.options) == ("reports", "build", done.options)
    assert again.status is Status.PENDING
    assert ui_app.get(done.id).status is Status.COMPLETED  # the original stays as it ended
    admin.get_by_role("link", name=f"#{done.id}", exact=True).click()  # "Run again from"
    expect(admin).to_have_url(f"{web.base}/tasks/{done.id}")
    expect(admin.get_by_role("link", name=f"#{again.id}", exact=True)).to_be_visible()
