"""The admin UI's pages through the ASGI app (no browser): roles, redirects to the login page,
escaping of hostile data, the Content Security Policy's nonce, translations and the login form."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import update

from stask import Stask
from stask.core.schedule_fields import DAY_WORDS
from stask.core.schedules import describe
from stask.db.tables import workers
from stask.identity import Principal, Role
from stask.web.ui.i18n import LANGUAGES, translations
from stask.web.ui.schedule_words import day_names
from tests.web_helpers import (
    HOSTILE,
    PASSWORD,
    PREFIX,
    Web,
    make_web,
    new_task,
    run_task,
    set_task,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "src" / "stask" / "web" / "templates"
READ_PAGES = ("/", "/workers", "/workers/inventory", "/tasks", "/stats", "/queues")
ADMIN_PAGES = ("/users", "/tokens", "/audit")
# What only operators and admins may press: a viewer's page holds none of these.
ACTING = (
    "data-post=",
    "data-run=",
    "data-bulk",
    "data-settings=",
    "data-schedule=",
    "data-create=",
    "data-process=",
    "data-job-state",
    "data-limits",
    "data-pause-until",
    "data-password=",
    "data-upload=",
)
STATIC = TEMPLATES.parent / "static"


def pages_of(task_id: int) -> list[str]:
    return [*READ_PAGES, f"/tasks/{task_id}", "/tasks?q=worker:inventory&status=failed"]


def login_form(web: Web) -> tuple[TestClient, str]:
    client = web.client()
    page = client.get(f"{PREFIX}/login")
    assert page.status_code == 200
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token is not None
    return client, token[1]


def post_login(web: Web, username: str, password: str, **extra: str) -> Response:
    client, token = login_form(web)
    data = {"username": username, "password": password, "login_token": token, **extra}
    return client.post(f"{PREFIX}/login", data=data, follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', html)
    assert found is not None, "the page carries no CSRF token"
    assert found[1], "the page's CSRF token is empty"
    return found[1]


def attribute(html: str, name: str) -> str:
    """The value of the first ``name="..."`` (or ``'...'``) attribute of the page, unescaped."""
    found = re.search(rf"{name}=([\"'])(.*?)\1", html)
    assert found is not None, f"no {name} in the page"
    return html_unescape(found[2])


def follow_job(client: TestClient, job: str) -> dict[str, Any]:
    """Poll the job's address, as the page does, until it ends."""
    deadline = time.monotonic() + 30
    while True:
        state: dict[str, Any] = client.get(f"{PREFIX}/api/bulk/{job}").json()["job"]
        if state["status"] != "running" or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


# -- who sees what -------------------------------------------------------------------------------


def test_every_page_answers_a_viewer_and_sends_strangers_to_the_login_page(web: Web) -> None:
    task_id = run_task(web.app).id
    for page in pages_of(task_id):
        answer = web.viewer.get(PREFIX + page)
        assert answer.status_code == 200, (page, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html")
        away = web.anon.get(PREFIX + page, follow_redirects=False)
        assert away.status_code == 303, page
        assert away.headers["location"].startswith(f"{PREFIX}/login?next=")
    for page in ADMIN_PAGES:
        assert web.viewer.get(PREFIX + page).status_code == 403, page
        assert web.as_role("scoped").get(PREFIX + page).status_code == 403, page
        assert web.admin.get(PREFIX + page).status_code == 200, page
    assert web.viewer.get(f"{PREFIX}/tasks/999999").status_code == 404
    # A scoped user sees only its scope's tasks; the task of another scope does not exist.
    other = new_task(web.app, "send", "mailer")
    assert web.as_role("scoped").get(f"{PREFIX}/tasks/{other}").status_code == 404


def test_a_viewer_sees_no_button_it_cannot_use(web: Web) -> None:
    failed = run_task(web.app).id
    set_task(web.app, failed, status="failed")
    for page in [*pages_of(failed), f"/tasks/{new_task(web.app)}"]:
        html = web.viewer.get(PREFIX + page).text
        found = [marker for marker in ACTING if marker in html]
        assert not found, f"{page} shows a viewer {found}"
    # The same pages give the admin the buttons (so the check above looks at the right thing).
    admin = {page: web.admin.get(PREFIX + page).text for page in pages_of(failed)}
    assert "data-run=" in admin["/workers"]
    assert "data-schedule=" in admin["/workers/inventory"]
    assert "data-settings=" in admin["/workers/inventory"]
    assert "data-bulk" in admin["/tasks"]
    assert f"/api/tasks/{failed}/retry" in admin[f"/tasks/{failed}"]
    assert f"/api/tasks/{failed}/cancel" not in admin[f"/tasks/{failed}"]  # not valid when failed
    operator = web.operator.get(f"{PREFIX}/workers").text
    assert "data-run=" in operator
    assert "/activate" not in operator  # admins only
    assert "/deactivate" not in operator


def test_process_pending_is_a_button_of_global_admins_that_starts_a_followed_job(
    web: Web,
) -> None:
    first, second = new_task(web.app), new_task(web.app)
    page = web.admin.get(f"{PREFIX}/").text
    url = attribute(page, "data-process")
    assert url == f"{PREFIX}/api/process-pending"
    form = page[page.index("data-process=") : page.index("</form>", page.index("data-process="))]
    assert "data-confirm=" in form
    assert 'name="batch_size"' in form
    assert "data-job-state" in page  # where the job's progress shows
    for role in ("viewer", "operator", "scoped"):
        assert "data-process=" not in web.as_role(role).get(f"{PREFIX}/").text, role
    # What the page's script does: post with the page's CSRF token, then follow the job.
    script = (STATIC / "stask.js").read_text(encoding="utf-8")
    assert "form[data-process]" in script
    assert "/api/bulk/" in script
    client = web.client()
    web.login("admin", client=client)
    client.headers.pop("X-CSRF-TOKEN")
    token = csrf_of(client.get(f"{PREFIX}/").text)
    assert client.post(url, json={"batch_size": 1}).status_code == 403  # no token: refused
    answer = client.post(url, json={"batch_size": 1}, headers={"X-CSRF-TOKEN": token})
    assert answer.status_code == 200, answer.text
    job = follow_job(client, answer.json()["job"])
    assert (job["status"], job["done"]) == ("completed", 1)
    statuses = {web.app.get(first).status.value, web.app.get(second).status.value}
    assert statuses == {"completed", "pending"}


def test_a_bulk_action_on_everything_matching_is_followed_outside_the_refreshed_list(
    web: Web,
) -> None:
    chosen = [new_task(web.app) for _ in range(3)]
    untouched = new_task(web.app, "send", "mailer")
    page = web.operator.get(f"{PREFIX}/tasks?worker=inventory&status=pending").text
    bar = attribute(page, "data-bulk")
    assert bar == f"{PREFIX}/api/tasks/bulk"
    filters = json.loads(attribute(page, "data-filters"))
    assert filters == {"worker": "inventory", "status": "pending"}
    # The progress line sits outside the live region, so a refresh of the list keeps it.
    assert page.index("data-job-state") < page.index('data-live="tasks"')
    assert "data-job-state" not in web.viewer.get(f"{PREFIX}/tasks").text
    # What the page's script does: ask for the count, confirm it, follow the job it starts.
    token = csrf_of(page)
    first = web.operator.post(f"{bar}/cancel", json=filters, headers={"X-CSRF-TOKEN": token})
    assert first.json()["confirm_required"] is True
    count = first.json()["count"]
    assert count == len(chosen)
    started = web.operator.post(
        f"{bar}/cancel", json={**filters, "confirm": count}, headers={"X-CSRF-TOKEN": token}
    )
    job = follow_job(web.operator, started.json()["job"])
    assert (job["status"], job["done"], job["refused"]) == ("completed", 3, 0)
    assert all(web.app.get(i).status.value == "cancelled" for i in chosen)
    assert web.app.get(untouched).status.value == "pending"


def test_admins_set_a_queues_limits_and_pause_it_until_a_time(web: Web) -> None:
    task_id = new_task(web.app)
    name = web.app.get(task_id).queue
    page = web.admin.get(f"{PREFIX}/queues").text
    # The editor sits after the live region: a refresh never wipes what is being typed.
    assert page.index('data-live="queues"') < page.index("data-limits")
    limits_form = page[page.index("data-limits") : page.index("data-pause-until")]
    pause_form = page[page.index("data-pause-until") :]
    limits = attribute(limits_form, "data-url")
    pause = attribute(pause_form, "data-url")
    assert limits == f"{PREFIX}/api/queues/{name}/limits"
    assert pause == f"{PREFIX}/api/queues/{name}/pause"
    assert attribute(pause_form, "data-zone") == "UTC"
    script = (STATIC / "stask.js").read_text(encoding="utf-8")
    assert "form[data-limits], form[data-pause-until]" in script
    for role in ("viewer", "operator"):
        html = web.as_role(role).get(f"{PREFIX}/queues").text
        assert "data-limits" not in html, role
        assert "data-pause-until" not in html, role
    # The routes the forms name, with the page's CSRF token, as the page's script sends them.
    sent = {"X-CSRF-TOKEN": csrf_of(page)}
    body = {"concurrency": 3, "rate_limit": 10, "rate_period": 60}
    assert web.admin.put(limits, json=body, headers=sent).status_code == 200
    again = web.admin.get(f"{PREFIX}/queues").text
    assert 'data-concurrency="3" data-rate="10" data-period="60"' in again
    until = "2999-01-02T03:04:00.000Z"
    assert web.admin.post(pause, json={"until": until}, headers=sent).status_code == 200
    (queue,) = [q for q in web.app.queues() if q.name == name]
    assert queue.paused
    assert queue.paused_until == dt.datetime(2999, 1, 2, 3, 4)
    assert '<time datetime="2999-01-02T03:04:00+00:00">' in web.admin.get(f"{PREFIX}/queues").text


def test_admins_set_passwords_and_everyone_changes_their_own(web: Web) -> None:
    name = web.user("dana", "viewer")
    page = web.admin.get(f"{PREFIX}/users").text
    url = attribute(page, "data-password")
    assert url == f"{PREFIX}/api/users/{name}/password"
    assert f"/api/users/{web.role_user('admin')}/password" not in page  # their own: the header's
    assert 'autocomplete="new-password"' in page
    sent = {"X-CSRF-TOKEN": csrf_of(page)}
    fresh = "another horse battery staple"
    assert web.admin.post(url, json={"password": fresh}, headers=sent).status_code == 200
    dana = web.login(name, fresh)
    # Every page's header offers the change of one's own password, to viewers too.
    html = dana.get(f"{PREFIX}/tasks").text
    assert 'data-open="own-password"' in html
    own = attribute(html, "data-own-password")
    assert own == f"{PREFIX}/api/session/password"
    assert 'name="current_password"' in html
    sent = {"X-CSRF-TOKEN": csrf_of(html)}
    wrong = {"current_password": "not it at all", "password": PASSWORD}
    assert dana.post(own, json=wrong, headers=sent).status_code == 403
    body = {"current_password": fresh, "password": PASSWORD}
    assert dana.post(own, json=body, headers=sent).status_code == 200
    # Her sessions ended: the next page sends her to the login page, where the new one works.
    assert dana.get(f"{PREFIX}/tasks", follow_redirects=False).status_code == 303
    web.login(name, PASSWORD)


def test_a_worker_that_takes_files_gets_a_file_field_on_its_run_form(web: Web) -> None:
    assert "data-upload=" not in web.operator.get(f"{PREFIX}/workers/inventory").text
    web.app.set_config("inventory", "upload_extensions", [".csv", "TSV"])
    cards = web.operator.get(f"{PREFIX}/workers").text
    assert cards.count("data-upload=") == 1  # only the worker that takes files
    page = web.operator.get(f"{PREFIX}/workers/inventory").text
    base = attribute(page, "data-upload")
    assert base == f"{PREFIX}/api/workers/inventory/tasks/"
    assert '<input type="file" name="file" accept=".csv,.tsv">' in page
    assert 'type="file"' not in web.viewer.get(f"{PREFIX}/workers/inventory").text
    script = (STATIC / "stask.js").read_text(encoding="utf-8")
    assert "form.dataset.upload" in script
    assert "/upload`" in script
    # What the page's script sends: multipart, the file and the options as JSON, the CSRF token.
    answer = web.operator.post(
        f"{base}sync_stock/upload",
        files={"file": ("stock.csv", b"sku,qty\nA1,3\n", "text/csv")},
        data={"options": json.dumps({"rows": 1})},
        headers={"X-CSRF-TOKEN": csrf_of(page)},
    )
    assert answer.status_code == 200, answer.text
    task = web.app.get(answer.json()["id"])
    assert (task.action, task.options["rows"]) == ("sync_stock", 1)
    assert task.options["upload"]["name"] == "stock.csv"


# -- hostile data, scripts, styles ---------------------------------------------------------------


def hostile_task(app: Stask) -> int:
    task_id = new_task(app, options={"note": HOSTILE, HOSTILE: 1})
    app.log(task_id, "info", HOSTILE, where=HOSTILE)
    app.log(task_id, "error", "boom", attempt=1, traceback=HOSTILE)
    set_task(app, task_id, message=HOSTILE, error=f"RuntimeError: {HOSTILE}", status="failed")
    with app.store.writing() as conn:
        conn.execute(
            update(workers)
            .where(workers.c.identifier == "inventory")
            .values(title=HOSTILE, description=HOSTILE)
        )
    app.clear_cache()
    app.set_config("inventory", "note", HOSTILE)
    return task_id


def test_hostile_html_comes_back_escaped_in_every_page(web: Web) -> None:
    task_id = hostile_task(web.app)
    web.app.pause_queue(HOSTILE[:100])
    pages = [*pages_of(task_id), *ADMIN_PAGES, f"/tasks?q={HOSTILE}", f"/audit?actor={HOSTILE}"]
    for page in pages:
        html = web.admin.get(PREFIX + page).text
        assert "<img" not in html, page
    detail = web.admin.get(f"{PREFIX}/tasks/{task_id}").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in detail  # shown, as text
    assert "&lt;img" in web.admin.get(f"{PREFIX}/workers").text


class Tags(HTMLParser):
    """Every start tag of a page with its attributes, and what each <script> holds."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_no_inline_script_style_or_handler_in_any_page(web: Web) -> None:
    task_id = hostile_task(web.app)
    pages = [*pages_of(task_id), *ADMIN_PAGES]
    for client, paths in ((web.admin, pages), (web.anon, ["/login"])):
        for page in paths:
            answer = client.get(PREFIX + page)
            nonce = re.search(r"'nonce-([^']+)'", answer.headers["content-security-policy"])
            assert nonce is not None, page
            parsed = Tags()
            parsed.feed(answer.text)
            scripts = [attrs for tag, attrs in parsed.tags if tag == "script"]
            assert scripts, page
            for attrs in scripts:
                assert attrs.get("nonce") == nonce[1], (page, attrs)
                # Either a file of ours, or data that never runs.
                assert "src" in attrs or attrs.get("type") == "application/json", (page, attrs)
            for tag, attrs in parsed.tags:
                assert tag != "style", page
                for name, value in attrs.items():
                    assert not name.startswith("on"), (page, tag, name)
                    assert name != "style", (page, tag, name)
                    assert not (value or "").strip().lower().startswith("javascript:"), page


def test_a_message_is_markdown_with_raw_html_shown_as_text(web: Web) -> None:
    task_id = new_task(web.app)
    set_task(web.app, task_id, message=f"Row **5** {HOSTILE} [x](javascript:alert(1))")
    html = web.viewer.get(f"{PREFIX}/tasks/{task_id}").text
    assert "<strong>5</strong>" in html
    assert "&lt;img" in html
    assert 'href="javascript' not in html


def test_static_files_answer_without_a_session(web: Web) -> None:
    for name in ("stask.css", "stask.js", "vendor/uPlot.iife.min.js"):
        answer = web.anon.get(f"{PREFIX}/static/{name}")
        assert answer.status_code == 200, name
    assert web.anon.get(f"{PREFIX}/static/../app.py").status_code == 404


# -- languages -----------------------------------------------------------------------------------


def test_pages_speak_the_chosen_language(web: Web) -> None:
    client = web.viewer
    client.cookies.set("stask_lang", "uk")
    assert "Задачі" in client.get(f"{PREFIX}/tasks").text
    client.cookies.set("stask_lang", "ru")
    assert "Задачи" in client.get(f"{PREFIX}/tasks").text
    assert "7 дней" in client.get(f"{PREFIX}/stats").text  # plural forms of the catalogue
    client.cookies.delete("stask_lang")
    russian = client.get(f"{PREFIX}/workers", headers={"Accept-Language": "de, ru;q=0.8"})
    assert '<html lang="ru"' in russian.text
    english = client.get(f"{PREFIX}/workers", headers={"Accept-Language": "de"})
    assert '<html lang="en"' in english.text
    login = web.anon.get(f"{PREFIX}/login", headers={"Accept-Language": "uk"})
    assert "Увійти" in login.text


def schedule_words(web: Web, language: str) -> str:
    web.viewer.cookies.set("stask_lang", language)
    page = web.viewer.get(f"{PREFIX}/workers/inventory").text
    found = re.search(r'<p class="schedule-words">(.*?)</p>', page, re.S)
    assert found is not None
    return html_unescape(found[1])


# Cyrillic letters and the Ukrainian apostrophe (U+2019, as in the catalogue) are meant here.
WEEKLY_WORDS = {
    "en": "Every Monday and Friday at 02:30 (Europe/Kyiv)",
    "uk": "Щотижня в понеділок і п’ятницю о 02:30 (Europe/Kyiv)",  # noqa: RUF001
    "ru": "Еженедельно в понедельник и пятницу в 02:30 (Europe/Kyiv)",
}
OVERNIGHT_WORDS = {
    "uk": "Кожні 15 хвилин з 22:00 до 02:00 наступного дня (UTC)",
    "ru": "Каждые 15 минут с 22:00 до 02:00 следующего дня (UTC)",  # noqa: RUF001
}
CRON_DAYS = {"uk": "понеділок по п’ятницю", "ru": "понедельник по пятницу"}  # noqa: RUF001


def test_the_schedule_is_told_in_the_readers_language(web: Web) -> None:
    common = {"action": "sync_stock"}
    weekly = {"type": "periodic", "frequency": "weekly", "days": "mon,fri", "time": "02:30"}
    web.app.set_schedule("inventory", {**common, **weekly, "timezone": "Europe/Kyiv"})
    for language, words in WEEKLY_WORDS.items():
        assert schedule_words(web, language) == words
    regular = {"type": "regular", "start_time": "22:00", "end_time": "02:00", "interval": 15}
    web.app.set_schedule("inventory", {**common, **regular})
    for language, words in OVERNIGHT_WORDS.items():
        assert schedule_words(web, language) == words
    # Cron expressions in cron-descriptor's words for the language, the days named in it too.
    web.app.set_schedule("inventory", {**common, "type": "cron", "expression": "*/15 5-23 * * 1-5"})
    for language, start in (("uk", "Кожні 15 хвилин"), ("ru", "Каждые 15 минут")):
        words = schedule_words(web, language)
        assert words.startswith(start), words
        assert CRON_DAYS[language] in words
        assert "Monday" not in words
    # Core's words stay English for the CLI and the API.
    assert describe(web.app.schedule("inventory")).startswith("Every 15 minutes")
    web.viewer.cookies.delete("stask_lang")


@pytest.mark.parametrize("language", [code for code in LANGUAGES if code != "en"])
def test_every_weekday_of_the_schedule_words_is_translated(language: str) -> None:
    names = day_names(language)
    assert len(set(names)) == 7
    assert not set(names) & set(DAY_WORDS), names


def template_messages() -> set[str]:
    from jinja2.ext import babel_extract

    found: set[str] = set()
    options = {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}
    for path in TEMPLATES.glob("*.html"):
        with path.open("rb") as source:
            for _, _, message, _ in babel_extract(
                source, ("_", "gettext", "ngettext"), [], options
            ):
                found.add(message if isinstance(message, str) else message[0])
    return found


@pytest.mark.parametrize("language", [code for code in LANGUAGES if code != "en"])
def test_every_string_of_the_templates_is_translated(language: str) -> None:
    catalogue = translations(language)
    messages = template_messages()
    assert len(messages) > 150
    same_everywhere = {"ID", "PID", "Cron"}
    missing = sorted(m for m in messages - same_everywhere if catalogue.gettext(m) == m)
    assert not missing, missing


# -- the login form ------------------------------------------------------------------------------


def test_the_login_form_logs_in_and_goes_where_it_was_asked(web: Web) -> None:
    name = web.user("ana", "viewer")
    answer = post_login(web, name, PASSWORD, next=f"{PREFIX}/tasks?status=failed")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{PREFIX}/tasks?status=failed"
    assert "HttpOnly" in answer.headers["set-cookie"]
    for away in (
        f"https://evil.example{PREFIX}/",
        f"//evil.example{PREFIX}/x",
        "/elsewhere",
        f"{PREFIX}/../x",
        f"{PREFIX}/\\evil.example",
    ):
        answer = post_login(web, name, PASSWORD, next=away)
        assert answer.headers["location"] == f"{PREFIX}/", away
    entries = web.app.accounts.audit_entries(limit=20, actor=name)
    assert any(e.action == "login" for e in entries)


def test_the_login_form_refuses_a_post_without_its_token(web: Web) -> None:
    name = web.user("bo", "viewer")
    client = web.client()
    data = {"username": name, "password": PASSWORD, "login_token": "forged"}
    answer = client.post(f"{PREFIX}/login", data=data, follow_redirects=False)
    assert answer.status_code == 400
    assert not any(e.action == "login" for e in web.app.accounts.audit_entries(actor=name))


def test_the_login_form_throttles_and_audits_like_the_api(web: Web) -> None:
    name = web.user("cy", "viewer")
    limit = web.app.settings.login_max_failures
    for _ in range(limit):
        assert post_login(web, name, "wrong password").status_code == 401
    throttled = post_login(web, name, PASSWORD)
    assert throttled.status_code == 429
    assert (
        "set-cookie" not in throttled.headers
        or "stask_session" not in throttled.headers["set-cookie"]
    )
    actions = [e.action for e in web.app.accounts.audit_entries(limit=50, actor=name)]
    assert actions.count("login_failed") == limit
    assert "login_throttled" in actions
    # The API shares the count: it is throttled too.
    api = web.client().post(f"{PREFIX}/api/login", json={"username": name, "password": PASSWORD})
    assert api.status_code == 429
    unknown = post_login(web, "nobody-at-all", "wrong password")
    assert unknown.status_code == 401


def test_with_the_host_hook_there_is_no_login_page(app: Stask) -> None:
    def host(_request: object) -> Principal:
        return Principal(username="host-user", role=Role.VIEWER, via="host")

    for web in make_web(app, auth=host):
        assert web.anon.get(f"{PREFIX}/login").status_code == 404
        page = web.anon.get(f"{PREFIX}/tasks")
        assert page.status_code == 200
        assert "host-user" in page.text
        assert "data-logout" not in page.text
        assert "data-own-password" not in page.text  # the host application keeps passwords


def test_run_again_posts_to_rerun_and_the_pages_link_both_ways(web: Web) -> None:
    original = run_task(web.app, options={"rows": 1, "password": "hunter2"}).id
    page = web.operator.get(f"{PREFIX}/tasks/{original}").text
    # Offered even with a secret among the options: the server copies the stored ones.
    assert f'data-post="{PREFIX}/api/tasks/{original}/rerun"' in page
    assert "/rerun" not in web.viewer.get(f"{PREFIX}/tasks/{original}").text
    copy = web.operator.post(f"{PREFIX}/api/tasks/{original}/rerun").json()["id"]
    assert (
        f'href="{PREFIX}/tasks/{copy}">#{copy}</a>'
        in web.viewer.get(f"{PREFIX}/tasks/{original}").text
    )
    copy_page = web.viewer.get(f"{PREFIX}/tasks/{copy}").text
    assert f'href="{PREFIX}/tasks/{original}">#{original}</a>' in copy_page
    assert "Run again from" in copy_page


def test_alerts_speak_the_readers_language(web: Web) -> None:
    for _ in range(3):
        run_task(web.app, "give_up")  # fails at once, no retry
    run_task(web.app)  # 1 of 4 succeeded: 25 % is below 95 %
    page = web.admin.get(f"{PREFIX}/stats")
    assert "success rate" in page.text
    client = web.admin
    client.cookies.set("stask_lang", "uk")
    try:
        ukrainian = client.get(f"{PREFIX}/stats").text
    finally:
        client.cookies.delete("stask_lang")
    assert "рівень успіху" in ukrainian
    assert "success rate is below" not in ukrainian
