"""The REST API: every route under every role, and the behaviour of the main routes."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import update

from stask.core import listing
from stask.db.tables import workers
from stask.models import Status, TaskQuery
from tests.web_helpers import (
    PASSWORD,
    PREFIX,
    QUEUES,
    ROLES,
    SAMPLES,
    T,
    W,
    Web,
    app_routes,
    expected_status,
    make_due,
    make_running,
    matrix,
    new_task,
    run_task,
    send,
    set_task,
    snapshot,
    wait_for_job,
)

# -- every route under every role ----------------------------------------------------------------


def test_the_sample_table_covers_every_route_of_the_app(web: Web) -> None:
    routes = {r.key for r in app_routes(web.api)}
    assert len(routes) > 50
    missing = sorted(routes - set(SAMPLES))
    assert not missing, f"routes without a sample request in SAMPLES: {missing}"
    stale = sorted(set(SAMPLES) - routes)
    assert not stale, f"samples of routes the app no longer has: {stale}"


def test_every_route_under_every_role(web: Web) -> None:
    """Allowed roles succeed (2xx); lower roles get 403 and change nothing; nobody gets 401."""
    m = matrix(web)
    problems = []
    checked = 0
    for route in app_routes(web.api):
        assert route.permission, f"{route.key} declares no permission"
        sample = SAMPLES[route.key]
        for role in ROLES:
            call = sample(m, role)
            client = call.client or web.as_role(role)
            refusal = expected_status(route.permission, role)
            before = snapshot(web.app) if refusal else None
            answer = send(client, route.method, call)
            checked += 1
            where = f"{route.method} {call.path} as {role} ({route.permission})"
            if refusal is None and not 200 <= answer.status_code < 300:
                problems.append(f"{where}: {answer.status_code} {answer.text[:300]}")
            elif refusal is not None:
                if answer.status_code != refusal:
                    problems.append(f"{where}: {answer.status_code}, wanted {refusal}")
                elif answer.json()["error"] not in ("unauthorized", "forbidden"):
                    problems.append(f"{where}: body {answer.text[:200]}")
                if snapshot(web.app) != before:
                    problems.append(f"{where}: refused, yet it changed the database")
            if call.after is not None:
                call.after()
    assert not problems, "\n".join(problems)
    assert checked == len(ROLES) * len(SAMPLES)


# -- starting tasks and watching them ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/workers/inventory/tasks/sync_stock", "/worker/inventory/run/sync_stock"]
)
def test_the_seed_create_routes_answer_id_and_record_who_started_it(web: Web, path: str) -> None:
    answer = web.operator.post(PREFIX + path, json={"rows": 2, "echo": "hi"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert body["message"] == "Task created successfully"
    task = web.app.get(body["id"])
    assert (task.identifier, task.action, task.options) == (
        "inventory",
        "sync_stock",
        {"rows": 2, "echo": "hi"},
    )
    assert task.started_by == "operator"
    high = web.operator.post(PREFIX + path, params={"priority": "high"})
    assert high.status_code == 200, high.text
    assert web.app.get(high.json()["id"]).priority.value == "high"
    assert web.app.get(high.json()["id"]).options == {}


def test_creating_a_task_of_an_unknown_worker_or_action_is_refused(web: Web) -> None:
    unknown = web.operator.post(f"{PREFIX}/workers/nope/tasks/x", json={})
    assert unknown.status_code == 404
    bad_action = web.operator.post(f"{PREFIX}/workers/inventory/tasks/no_such_action", json={})
    assert 400 <= bad_action.status_code < 500
    assert bad_action.json()["success"] is False
    made = web.operator.post(
        T, json={"identifier": "inventory", "action": "sync_stock", "queue": "imports"}
    )
    assert made.status_code == 200, made.text
    assert web.app.get(made.json()["id"]).queue == "imports"
    assert web.app.count() == 1


@pytest.mark.parametrize("path", ["/tasks/{}/progress", "/task/{}/progress"])
def test_progress_shows_eta_text_and_logs_after_a_cursor(web: Web, path: str) -> None:
    task_id = new_task(web.app)
    web.app.log(task_id, "info", "first")
    web.app.log(task_id, "info", "second", step=2)
    set_values = {"status": Status.RUNNING, "progress": 45, "processed": 450, "total": 1000}
    set_task(web.app, task_id, eta_seconds=150, message="Processing items...", **set_values)
    body = web.viewer.get(PREFIX + path.format(task_id)).json()
    assert body["success"] is True
    assert body["id"] == task_id
    assert body["status"] == "running"
    assert (body["progress"], body["processed"], body["total"]) == (45, 450, 1000)
    assert body["eta"] == "2m 30s"
    assert body["eta_seconds"] == 150
    assert body["message"] == "Processing items..."
    assert body["finished"] is False
    assert [entry["message"] for entry in body["logs"]] == ["first", "second"]
    first_id = body["logs"][0]["id"]
    later = web.viewer.get(PREFIX + path.format(task_id), params={"after": first_id}).json()
    assert [entry["message"] for entry in later["logs"]] == ["second"]
    assert later["logs"][0]["context"] == {"step": 2}
    assert later["cursor"] == later["logs"][-1]["id"]
    empty = web.viewer.get(PREFIX + path.format(task_id), params={"after": later["cursor"]})
    assert empty.json()["logs"] == []
    assert empty.json()["cursor"] == later["cursor"]
    set_task(web.app, task_id, eta_seconds=3900)
    assert web.viewer.get(PREFIX + path.format(task_id)).json()["eta"] == "1h 5m"
    assert web.viewer.get(PREFIX + path.format(999999)).status_code == 404


# -- the task list -------------------------------------------------------------------------------


def _ids(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [row["id"] for row in answer.json()["tasks"]]


def test_the_list_filters_by_status_worker_queue_and_dates(web: Web) -> None:
    app = web.app
    pending = new_task(app)
    mail = new_task(app, "send", "mailer", options={"to": "a@example.com"}, queue="mail")
    failed = run_task(app, "give_up").id
    completed = run_task(app).id  # runs `pending` as well
    assert app.get(pending).status is Status.COMPLETED
    get = web.viewer.get
    assert _ids(get(T)) == sorted([pending, mail, failed, completed], reverse=True)
    assert _ids(get(T, params={"status": "failed"})) == [failed]
    assert _ids(get(T, params={"status": "failed,completed", "worker": "inventory"})) == [
        completed,
        failed,
        pending,
    ]
    assert set(_ids(get(T, params={"worker": "mailer"}))) == {mail}
    assert _ids(get(T, params={"queue": "mail"})) == [mail]
    assert _ids(get(T, params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}))
    assert _ids(get(T, params={"from": "2100-01-01T00:00:00Z"})) == []
    assert _ids(get(T, params={"to": "2000-01-01T00:00:00+02:00"})) == []
    row = get(T, params={"status": "failed"}).json()["tasks"][0]
    assert row["error"] is None or isinstance(row["error"], str)
    assert row["options"] == '{"rows": 1}'  # a preview, as text
    unknown = get(T, params={"status": "nonsense"})
    assert unknown.status_code in (400, 422)
    assert unknown.json()["success"] is False


def test_search_understands_worker_status_meta_and_ids(web: Web) -> None:
    app = web.app
    first = new_task(app, options={"customer": {"id": "c7"}, "rows": 1})
    second = new_task(app, options={"customer": {"id": "c8"}})
    mail = new_task(app, "send", "mailer", options={"to": "x"})
    app.cancel(second)

    def search(text: str) -> list[int]:
        return _ids(web.viewer.get(T, params={"q": text}))

    assert search("worker:mailer") == [mail]
    assert search("status:cancelled") == [second]
    assert search("worker:inventory status:pending") == [first]
    assert search("meta.customer.id:c7") == [first]
    assert search(f"#{second}") == [second]
    assert search(str(mail)) == [mail]
    assert search(f"id:{first}") == [first]
    assert search("after:2000-01-01 before:2100-01-01") == [mail, second, first]
    refused = web.viewer.get(T, params={"q": "colour:blue"})
    assert refused.status_code in (400, 422)
    assert "worker:" in refused.json()["message"]
    assert web.viewer.get(T, params={"q": '"unclosed'}).status_code in (400, 422)


def test_a_search_no_index_orders_reads_a_window_and_goes_on_below_it(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stask.core.listing.SCAN_WINDOW", 10)
    ids = web.app.create_many([("inventory", "sync_stock")] * 30)
    newest = new_task(web.app)
    set_task(web.app, ids[2], meta={"order": "ord-1"})  # one old task has the rare value
    found: list[int] = []
    windows: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": "meta.order:ord-1", "limit": 5}
        if cursor is not None:
            params["cursor"] = cursor
        body = web.viewer.get(T, params=params).json()
        found += [row["id"] for row in body["tasks"]]
        if body["searched_to"] is not None:
            windows.append(body["searched_to"])
            assert body["next_cursor"] == body["searched_to"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert found == [ids[2]]
    # Each request read at most 10 ids below where it started, down to the oldest task.
    assert windows == [newest + 1 - 10, newest + 1 - 20, newest + 1 - 30]
    count = web.viewer.get(f"{T}/count", params={"q": "meta.order:ord-1"}).json()
    assert (count["count"], count["searched_to"], count["text"]) == (0, newest + 1 - 10, "0+")
    # A filter an index orders (status, worker) is never windowed: it finds the old task.
    web.app.cancel(ids[1])
    body = web.viewer.get(T, params={"status": "cancelled"}).json()
    assert ([row["id"] for row in body["tasks"]], body["searched_to"]) == ([ids[1]], None)
    exact = web.viewer.get(f"{T}/count", params={"status": "cancelled"}).json()
    assert (exact["count"], exact["searched_to"], exact["text"]) == (1, None, "1")


def test_keyset_pages_neither_repeat_nor_miss_a_task(web: Web) -> None:
    ids = web.app.create_many([("inventory", "sync_stock")] * 23)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 5}
        if cursor is not None:
            params["cursor"] = cursor
        body = web.viewer.get(T, params=params).json()
        seen += [row["id"] for row in body["tasks"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # A task created between pages lands on the first page, not in the middle.
        if pages == 2:
            new_task(web.app)
    assert seen == sorted(ids, reverse=True)
    assert pages == 5
    assert len(web.viewer.get(T, params={"limit": 100000}).json()["tasks"]) == 24  # clamped
    assert len(web.viewer.get(T, params={"limit": -3}).json()["tasks"]) == 1


def test_the_count_is_capped_by_its_parameter(web: Web) -> None:
    web.app.create_many([("inventory", "sync_stock")] * 12)
    body = web.viewer.get(f"{T}/count").json()
    assert (body["count"], body["capped"], body["text"]) == (12, False, "12")
    assert web.app.listing.count(TaskQuery(), cap=10) == (10, True)
    assert web.app.listing.count(TaskQuery(), cap=12) == (12, False)
    assert web.app.listing.count(TaskQuery(identifier="mailer"), cap=10) == (0, False)
    few = web.viewer.get(f"{T}/count", params={"q": "status:failed"}).json()
    assert (few["count"], few["capped"]) == (0, False)


def test_the_count_route_stops_at_ten_thousand(web: Web, dialect: str) -> None:
    if dialect != "sqlite":
        pytest.skip("10,001 inserts: quick on SQLite; the cap's SQL is checked above on all")
    assert listing.COUNT_CAP == 10_000
    web.app.create_many([("inventory", "sync_stock")] * 10_001)
    body = web.viewer.get(f"{T}/count").json()
    assert (body["count"], body["capped"], body["text"]) == (10_000, True, "10,000+")
    # A bulk action by filter refuses a capped count: narrow it first.
    bulk = web.operator.post(f"{T}/bulk/cancel", json={"worker": "inventory", "confirm": 10_000})
    assert bulk.json()["confirm_required"] is True
    assert "narrow" in bulk.json()["message"]


def test_the_detail_shows_attempt_errors_and_allowed_actions(web: Web) -> None:
    app = web.app
    failed = new_task(app, "fail")  # inventory: max_attempts 2
    app.process_pending()
    assert app.get(failed).status is Status.PENDING  # waiting to retry
    make_due(app, failed)
    app.process_pending()
    assert app.get(failed).status is Status.FAILED
    task = web.viewer.get(f"{T}/{failed}").json()["task"]
    assert task["status"] == "failed"
    assert task["allowed_actions"] == ["retry", "delete"]
    attempts = task["attempt_errors"]
    assert [a["attempt"] for a in attempts] == [1, 2]
    assert "broken on attempt 1" in attempts[0]["message"] + (attempts[0]["error"] or "")
    assert "RuntimeError" in (attempts[1]["error"] or "")
    assert "RuntimeError" in task["error"]
    pending = new_task(app)
    assert web.viewer.get(f"{T}/{pending}").json()["task"]["allowed_actions"] == [
        "cancel",
        "delete",
    ]
    done = run_task(app).id
    assert web.viewer.get(f"{T}/{done}").json()["task"]["allowed_actions"] == ["delete"]
    assert web.viewer.get(f"{T}/{2**62}").status_code == 404


def test_cancel_retry_delete_and_conflicts_in_the_wrong_state(web: Web) -> None:
    app = web.app
    ops = web.operator
    task_id = new_task(app)
    assert ops.post(f"{T}/{task_id}/retry").status_code == 409  # pending: nothing to retry
    cancelled = ops.post(f"{T}/{task_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["task"]["status"] == "cancelled"
    again = ops.post(f"{T}/{task_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    retried = ops.post(f"{T}/{task_id}/retry")
    assert retried.status_code == 200
    assert app.get(task_id).status is Status.PENDING
    make_running(app, task_id)
    assert ops.delete(f"{T}/{task_id}").status_code == 409  # running: cancel it first
    running = ops.post(f"{T}/{task_id}/cancel").json()["task"]
    assert running["cancel_requested"] is True
    assert web.viewer.get(f"{T}/{task_id}").json()["task"]["allowed_actions"] == []
    set_task(app, task_id, status=Status.CANCELLED)
    deleted = ops.delete(f"{T}/{task_id}")
    assert deleted.status_code == 200
    assert deleted.json()["task"] is None
    assert ops.delete(f"{T}/{task_id}").status_code == 404
    assert app.count() == 0
    actions = [e.action for e in app.accounts.audit_entries(actor="operator")]
    assert {"task.cancel", "task.retry", "task.delete"} <= set(actions)


def test_run_again_makes_a_linked_task_with_the_stored_options(web: Web) -> None:
    app = web.app
    original = run_task(app, options={"rows": 2, "api_token": "s3cret"}, priority="high").id
    answer = web.operator.post(f"{T}/{original}/rerun")
    assert answer.status_code == 200, answer.text
    copy = answer.json()["id"]
    assert copy != original
    again = app.get(copy)
    # The stored options, secrets included: never the redacted ones a caller was shown.
    assert again.options == {"rows": 2, "api_token": "s3cret"}
    assert (again.identifier, again.action, again.priority.value) == (
        "inventory",
        "sync_stock",
        "high",
    )
    assert (again.status, again.started_by) == (Status.PENDING, web.role_user("operator"))
    first = web.viewer.get(f"{T}/{original}").json()["task"]
    second = web.viewer.get(f"{T}/{copy}").json()["task"]
    assert (first["rerun_of"], first["reruns"]) == (None, [copy])
    assert (second["rerun_of"], second["reruns"]) == (original, [])
    assert web.viewer.post(f"{T}/{original}/rerun").status_code == 403
    assert web.operator.post(f"{T}/{2**62}/rerun").status_code == 404
    # Deleting the copy removes its link; the original no longer lists it.
    app.delete(copy)
    assert web.viewer.get(f"{T}/{original}").json()["task"]["reruns"] == []


def test_bulk_by_ids_reports_each_task(web: Web) -> None:
    app = web.app
    first, second = new_task(app), new_task(app)
    done = run_task(app).id  # runs all three
    third = new_task(app)
    answer = web.operator.post(f"{T}/bulk/cancel", json={"ids": [third, done, 999999]})
    body = answer.json()
    assert body["done"] == [third]
    assert set(body["refused"]) == {str(done), "999999"}
    assert app.get(third).status is Status.CANCELLED
    deleted = web.operator.post(f"{T}/bulk/delete", json={"ids": [first, second]}).json()
    assert deleted["done"] == [first, second]
    assert app.count() == 2
    assert web.operator.post(f"{T}/bulk/explode", json={"ids": [1]}).status_code == 422
    too_many = web.operator.post(f"{T}/bulk/cancel", json={"ids": list(range(1, 1002))})
    assert too_many.status_code == 422


def test_bulk_by_filter_takes_every_filter_of_the_list(web: Web) -> None:
    app = web.app
    old, recent = new_task(app), new_task(app)
    mail = new_task(app, "send", "mailer")
    set_task(app, old, created_at=dt.datetime(2000, 1, 1))
    by_date = {"to": "2001-01-01T00:00:00", "from": "1999-12-31T00:00:00"}
    for body, expected in (
        (by_date, [old]),
        ({"action": "send"}, [mail]),
        ({"worker": "inventory", "from": "2001-01-01T00:00:00Z"}, [recent]),
    ):
        listed = [row["id"] for row in web.viewer.get(T, params=body).json()["tasks"]]
        answer = web.operator.post(f"{T}/bulk/cancel", json=body).json()
        assert (listed, answer["count"]) == (expected, len(expected)), body
    assert web.operator.post(f"{T}/bulk/cancel", json={"to": "soon"}).status_code == 422


def test_bulk_by_filter_asks_for_the_count_then_runs_a_job(web: Web) -> None:
    app = web.app
    ids = app.create_many([("inventory", "sync_stock")] * 7)
    other = new_task(app, "send", "mailer")
    body = {"worker": "inventory", "status": "pending"}
    first = web.operator.post(f"{T}/bulk/cancel", json=body).json()
    assert first["confirm_required"] is True
    assert first["count"] == 7
    assert "confirm=7" in first["message"]
    assert all(app.get(i).status is Status.PENDING for i in ids)  # nothing done yet
    wrong = web.operator.post(f"{T}/bulk/cancel", json={**body, "confirm": 6})
    assert wrong.status_code == 409
    started = web.operator.post(f"{T}/bulk/cancel", json={**body, "confirm": 7}).json()
    job_id = started["job"]
    deadline = time.monotonic() + 30
    while True:
        job = web.operator.get(f"{PREFIX}/api/bulk/{job_id}").json()["job"]
        if job["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert job["status"] == "completed"
    assert (job["done"], job["refused"], job["started_by"]) == (7, 0, "operator")
    assert all(app.get(i).status is Status.CANCELLED for i in ids)
    assert app.get(other).status is Status.PENDING
    # Another operator does not see the job; an admin does; an unknown id is 404.
    other_ops = web.login(web.user("ops2", "operator"))
    assert other_ops.get(f"{PREFIX}/api/bulk/{job_id}").status_code == 404
    assert web.admin.get(f"{PREFIX}/api/bulk/{job_id}").status_code == 200
    assert web.admin.get(f"{PREFIX}/api/bulk/nope").status_code == 404


def test_export_streams_csv_and_jsonl_redacted(web: Web) -> None:
    app = web.app
    new_task(app, options={"rows": 1, "api_key": "SECRET-1"})
    new_task(app, options={"rows": 2, "note": "=HYPERLINK(1)"}, started_by="=cmd")
    answer = web.viewer.get(f"{T}/export", params={"format": "csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    assert "SECRET-1" not in answer.text
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 2
    assert json.loads(rows[1]["options"]) == {"rows": 1, "api_key": "[redacted]"}
    assert rows[0]["started_by"] == "'=cmd"  # no formula for a spreadsheet
    lines = web.viewer.get(f"{T}/export", params={"format": "jsonl", "worker": "inventory"})
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    parsed = [json.loads(line) for line in lines.text.splitlines()]
    assert [p["options"].get("api_key") for p in parsed] == [None, "[redacted]"]
    assert web.viewer.get(f"{T}/export", params={"format": "xml"}).status_code == 422


def test_logs_and_their_download(web: Web) -> None:
    task = run_task(web.app, options={"rows": 2})
    body = web.viewer.get(f"{T}/{task.id}/logs").json()
    messages = [entry["message"] for entry in body["logs"]]
    assert "synced" in messages
    assert body["cursor"] == body["logs"][-1]["id"]
    limited = web.viewer.get(f"{T}/{task.id}/logs", params={"limit": 1}).json()
    assert len(limited["logs"]) == 1
    after = web.viewer.get(f"{T}/{task.id}/logs", params={"after": limited["cursor"]}).json()
    assert [e["id"] for e in after["logs"]] == [e["id"] for e in body["logs"][1:]]
    text = web.viewer.get(f"{T}/{task.id}/logs/download")
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain")
    assert f'filename="task-{task.id}.log"' in text.headers["content-disposition"]
    assert "INFO" in text.text
    assert '{"rows": 2}' in text.text


def _events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        if "event" not in lines:
            assert set(lines) == {"retry"}  # how long EventSource waits to reconnect
            continue
        found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_events_of_a_finished_task_end_the_stream(web: Web) -> None:
    task = run_task(web.app)
    answer = web.viewer.get(f"{T}/{task.id}/events")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = _events(answer.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end"
    assert events[-1][1] == {"id": task.id, "status": "completed"}
    assert "log" in kinds
    assert "progress" in kinds
    progress = next(data for kind, data in events if kind == "progress")
    assert progress["progress"] == 100
    assert web.viewer.get(f"{T}/999999/events").status_code == 404


def test_list_events_once_sends_one_snapshot(web: Web) -> None:
    first = new_task(web.app)
    mail = new_task(web.app, "send", "mailer")
    answer = web.viewer.get(f"{PREFIX}/api/events", params={"once": "true", "worker": "mailer"})
    assert answer.status_code == 200
    events = _events(answer.text)
    assert len(events) == 1
    kind, rows = events[0]
    assert kind == "tasks"
    assert [row["id"] for row in rows] == [mail]
    assert first != mail


def test_download_answers_the_result_file_as_an_attachment(web: Web) -> None:
    task = run_task(web.app, "export")
    assert task.status is Status.COMPLETED
    for path in (f"{PREFIX}/tasks/{task.id}/download", f"{PREFIX}/task/{task.id}/download"):
        answer = web.viewer.get(path)
        assert answer.status_code == 200
        assert answer.content == b"id,name\n1,a\n"
        assert answer.headers["content-disposition"].startswith("attachment")
        assert "out.csv" in answer.headers["content-disposition"]
        assert "sandbox" in answer.headers["content-security-policy"].split("; ")
        assert answer.headers["content-type"] == "application/octet-stream"
    plain = run_task(web.app)
    assert web.viewer.get(f"{PREFIX}/tasks/{plain.id}/download").status_code == 404


def test_upload_stores_the_file_and_starts_a_task(web: Web, storage: Any) -> None:
    app = web.app
    url = f"{W}/inventory/tasks/sync_stock/upload"
    files = {"file": ("My Rows.CSV", b"id\n1\n2\n", "text/csv")}
    refused = web.operator.post(url, files=files)
    assert refused.status_code == 422  # accepts nothing until upload_extensions says so
    app.set_config("inventory", "upload_extensions", [".csv"])
    answer = web.operator.post(url, files=files, data={"options": '{"rows": 2}'})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    upload = body["upload"]
    assert upload["name"] == "My Rows.CSV"
    assert upload["size"] == 7
    assert (storage / upload["path"]).read_bytes() == b"id\n1\n2\n"
    task = app.get(body["id"])
    assert task.options["rows"] == 2
    assert task.options["upload"] == upload
    assert task.started_by == "operator"
    assert web.operator.post(url, data={"x": "1"}).status_code in (415, 422)
    assert web.operator.post(url, files=files, data={"options": "[1]"}).status_code == 400
    assert web.operator.post(url, content=b"{}").status_code == 415


# -- workers -------------------------------------------------------------------------------------


def test_workers_list_detail_and_settings(web: Web) -> None:
    workers = web.viewer.get(W).json()["workers"]
    assert {w["identifier"] for w in workers} == {"inventory", "mailer"}
    detail = web.viewer.get(f"{W}/inventory").json()["worker"]
    assert detail["scope"] == "shop"
    assert "sync_stock" in detail["actions"]
    assert web.viewer.get(f"{W}/nope").status_code == 404
    settings = web.viewer.get(f"{W}/inventory/settings").json()["settings"]
    assert settings["api"]["timeout"] == 30
    changed = web.admin.put(
        f"{W}/inventory/settings", json={"values": {"api.timeout": 5, "api.token": "T0P"}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"]["api"]["timeout"] == 5
    assert changed.json()["settings"]["api"]["token"] == "[redacted]"
    assert web.app.get_config("inventory", "api.token") == "T0P"
    assert "T0P" not in web.viewer.get(f"{W}/inventory").text
    assert "T0P" not in web.viewer.get(W).text
    assert web.admin.put(f"{W}/inventory/settings", json={"batch": 1}).status_code == 422


def test_worker_schedule_read_and_set(web: Web) -> None:
    body = web.viewer.get(f"{W}/inventory/schedule").json()
    assert body["schedule"]["type"] == "manual"
    assert body["next_runs"] == []
    schedule = {"type": "periodic", "frequency": "daily", "time": "02:00", "action": "sync_stock"}
    answer = web.admin.put(f"{W}/inventory/schedule", json=schedule)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["next_runs"]) == 5
    assert answer.json()["next_runs"][0].endswith("02:00:00Z")
    shown = web.viewer.get(f"{W}/inventory/schedule", params={"runs": 2}).json()
    assert shown["schedule"]["frequency"] == "daily"
    assert len(shown["next_runs"]) == 2
    bad = web.admin.put(f"{W}/inventory/schedule", json={"type": "sometimes"})
    assert bad.status_code == 422
    assert "type" in bad.json()["message"]


def test_activate_deactivate_discover_rescan_clean_orphaned(web: Web) -> None:
    app = web.app
    off = web.admin.post(f"{W}/mailer/deactivate")
    assert off.status_code == 200
    assert off.json()["worker"]["active"] is False
    assert app.worker("mailer").active is False
    on = web.admin.post(f"{W}/mailer/activate").json()
    assert on["worker"]["active"] is True
    assert web.admin.post(f"{W}/discover").json()["registered"] == []  # nothing new
    with app.store.writing() as conn:
        conn.execute(update(workers).where(workers.c.identifier == "inventory").values(title="Old"))
    assert web.admin.post(f"{PREFIX}/cache/clear").status_code == 200
    assert web.admin.post(f"{W}/rescan").json()["workers"] == ["inventory"]
    assert app.worker("inventory").title == "Inventory"
    with app.store.writing() as conn:
        conn.execute(
            update(workers)
            .where(workers.c.identifier == "mailer")
            .values(identifier="gone", class_path="nowhere.Gone")
        )
    assert web.admin.post(f"{PREFIX}/cache/clear").status_code == 200
    removed = web.admin.post(f"{W}/clean-orphaned").json()["removed"]
    assert removed == ["gone"]
    assert {w["identifier"] for w in web.viewer.get(W).json()["workers"]} == {"inventory"}


# -- queues, clean, health, metrics, performance -------------------------------------------------


def test_queues_pause_resume_and_limits(web: Web) -> None:
    paused = web.admin.post(f"{QUEUES}/imports/pause", json={}).json()["queue"]
    assert (paused["name"], paused["paused"]) == ("imports", True)
    timed = web.admin.post(f"{QUEUES}/imports/pause", json={"until": "2999-01-01T00:00:00Z"})
    assert timed.json()["queue"]["paused_until"].startswith("2999-01-01")
    names = {q["name"]: q for q in web.viewer.get(QUEUES).json()["queues"]}
    assert names["imports"]["paused"] is True
    resumed = web.admin.post(f"{QUEUES}/imports/resume").json()["queue"]
    assert resumed["paused"] is False
    limited = web.admin.put(
        f"{QUEUES}/imports/limits", json={"concurrency": 3, "rate_limit": 10, "rate_period": 60}
    )
    assert limited.status_code == 200, limited.text
    assert limited.json()["queue"]["concurrency_limit"] == 3
    assert web.app.queue("imports").rate_limit == 10
    assert web.admin.put(f"{QUEUES}/imports/limits", json={"concurrency": 0}).status_code == 422
    assert web.admin.post(f"{QUEUES}/{'x' * 101}/pause", json={}).status_code in (404, 422)


def test_clean_removes_old_finished_tasks(web: Web) -> None:
    app = web.app
    old = run_task(app).id
    recent = run_task(app).id
    done = app.get(old).finished_at
    assert done is not None
    set_task(app, old, finished_at=done.replace(year=2000), created_at=done.replace(year=2000))
    answer = web.admin.post(f"{PREFIX}/clean", json={"days": 30})
    assert answer.status_code == 200, answer.text
    assert answer.json()["tasks"] == 1
    assert [t.id for t in app.list()] == [recent]
    assert web.admin.post(f"{PREFIX}/clean").status_code == 200  # the body is optional
    assert web.admin.post(f"{PREFIX}/clean", json={"days": -1}).status_code == 422


def test_process_pending_runs_due_tasks_in_the_background_one_job_at_a_time(web: Web) -> None:
    app = web.app
    first, second, third = (new_task(app) for _ in range(3))
    answer = web.admin.post(f"{PREFIX}/api/process-pending", json={"batch_size": 2})
    assert answer.status_code == 200, answer.text
    job = wait_for_job(app, answer.json()["job"])
    assert (job["action"], job["status"], job["done"]) == ("process_pending", "completed", 2)
    statuses = [app.get(i).status for i in (first, second, third)]
    assert statuses == [Status.COMPLETED, Status.COMPLETED, Status.PENDING]
    assert web.admin.get(f"{PREFIX}/api/bulk/{job['id']}").json()["job"]["done"] == 2
    assert web.operator.post(f"{PREFIX}/api/process-pending").status_code == 403
    assert (
        web.admin.post(f"{PREFIX}/api/process-pending", json={"batch_size": 0}).status_code == 422
    )
    # A second press while one runs answers 409 instead of starting another batch.
    release = threading.Event()
    busy = app.bulk_jobs.start_batch("process_pending", "admin", lambda: int(release.wait(10)))
    try:
        assert web.admin.post(f"{PREFIX}/api/process-pending").status_code == 409
    finally:
        release.set()
    assert wait_for_job(app, busy)["status"] == "completed"


def test_health_needs_no_login(web: Web) -> None:
    answer = web.anon.get(f"{PREFIX}/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    assert body["database"] is True
    assert body["runners"] == 0


def test_metrics_are_prometheus_text(web: Web) -> None:
    run_task(web.app)
    run_task(web.app, "give_up")
    answer = web.viewer.get(f"{PREFIX}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    names = {
        line.split("{")[0].split(" ")[0]
        for line in answer.text.splitlines()
        if line and not line.startswith("#")
    }
    assert names
    assert all(name.startswith("stask_") for name in names), names
    assert any(
        'identifier="inventory"' in line or "inventory" in line for line in answer.text.splitlines()
    )


def test_performance_summary_workers_and_alerts(web: Web) -> None:
    app = web.app
    for _ in range(3):
        new_task(app)
    new_task(app, "give_up")
    new_task(app, "send", "mailer")
    assert app.process_pending() == 5
    summary = web.viewer.get(f"{PREFIX}/performance/summary", params={"hours": 24}).json()
    assert summary["tasks"]["total"] == 5
    assert summary["tasks"]["completed"] == 4
    assert summary["tasks"]["failed"] == 1
    assert summary["performance"]["success_rate"] == pytest.approx(80.0)
    workers = web.viewer.get(f"{PREFIX}/performance/workers").json()["workers"]
    assert set(workers) == {"inventory", "mailer"}
    alerts = web.viewer.get(f"{PREFIX}/performance/alerts").json()["alerts"]
    assert isinstance(alerts, list)
    assert any("inventory" in json.dumps(alert) for alert in alerts)  # 75% < 95% success
    huge = web.viewer.get(f"{PREFIX}/performance/summary", params={"hours": 10**6})
    assert huge.json()["period"]["hours"] == 8760  # clamped


def test_cache_stats_and_clear(web: Web) -> None:
    stats = web.viewer.get(f"{PREFIX}/cache/stats")
    assert stats.status_code == 200, stats.text
    cleared = web.admin.post(f"{PREFIX}/cache/clear")
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["message"] == "Cache cleared successfully"


# -- people --------------------------------------------------------------------------------------


def test_login_session_and_logout(web: Web) -> None:
    web.user("ann", "operator", ["shop"])
    client = web.client()
    answer = client.post(f"{PREFIX}/api/login", json={"username": "ann", "password": PASSWORD})
    assert answer.status_code == 200
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-stask_session=")
    for flag in ("HttpOnly", "Secure", "Path=/", "SameSite=lax"):
        assert flag.lower() in cookie.lower()
    csrf = answer.json()["csrf_token"]
    session = client.get(f"{PREFIX}/api/session").json()
    assert session["user"] == {"username": "ann", "role": "operator", "scopes": ["shop"]}
    assert session["via"] == "session"
    assert session["csrf_token"] == csrf
    out = client.post(f"{PREFIX}/api/logout", headers={"X-CSRF-TOKEN": csrf})
    assert out.status_code == 200
    assert client.get(f"{PREFIX}/api/session").status_code == 401
    wrong = web.client().post(f"{PREFIX}/api/login", json={"username": "ann", "password": "x"})
    assert wrong.status_code == 401


def test_users_routes(web: Web) -> None:
    admin = web.admin
    made = admin.post(f"{PREFIX}/api/users", json={"username": "bob", "role": "viewer"}).json()
    assert made["user"]["role"] == "viewer"
    generated = made["password"]
    assert isinstance(generated, str)
    assert len(generated) >= 12
    bob = web.login("bob", generated)
    assert {u["username"] for u in admin.get(f"{PREFIX}/api/users").json()["users"]} >= {
        "admin",
        "bob",
    }
    assert "password" not in json.dumps(admin.get(f"{PREFIX}/api/users").json()["users"])
    taken = admin.post(f"{PREFIX}/api/users", json={"username": "bob", "role": "viewer"})
    assert taken.status_code == 422
    short = admin.post(
        f"{PREFIX}/api/users", json={"username": "c", "role": "viewer", "password": "short"}
    )
    assert short.status_code == 422
    reset = admin.post(
        f"{PREFIX}/api/users/bob/password", json={"password": "a brand new password"}
    )
    assert reset.status_code == 200
    assert bob.get(f"{PREFIX}/api/session").status_code == 401  # sessions end
    bob = web.login("bob", "a brand new password")
    disabled = admin.post(f"{PREFIX}/api/users/bob/disable").json()
    assert disabled["user"]["disabled"] is True
    assert bob.get(f"{PREFIX}/api/session").status_code == 401
    assert admin.post(f"{PREFIX}/api/users/nobody/disable").status_code == 404


def test_own_password_change_needs_the_current_one(web: Web) -> None:
    web.user("carl", "viewer")
    carl = web.login("carl")
    url = f"{PREFIX}/api/session/password"
    wrong = carl.post(url, json={"password": "a brand new password", "current_password": "nope"})
    assert wrong.status_code == 403
    assert carl.post(url, json={"password": "a brand new password"}).status_code == 403
    done = carl.post(url, json={"password": "a brand new password", "current_password": PASSWORD})
    assert done.status_code == 200
    assert carl.get(f"{PREFIX}/api/session").status_code == 401
    web.login("carl", "a brand new password")


def test_tokens_routes(web: Web) -> None:
    admin = web.admin
    web.role_user("viewer")
    made = admin.post(f"{PREFIX}/api/tokens", json={"name": "ci", "user": "viewer"}).json()
    token = made["token"]
    assert token.startswith("stask_")
    script = web.bearer(token)
    session = script.get(f"{PREFIX}/api/session").json()
    assert session["user"]["username"] == "viewer"
    assert session["via"] == "token"
    assert script.post(f"{PREFIX}/workers/inventory/tasks/sync_stock").status_code == 403
    listed = admin.get(f"{PREFIX}/api/tokens").json()["tokens"]
    assert [(t["id"], t["name"], t["user"]) for t in listed] == [(made["id"], "ci", "viewer")]
    assert token not in admin.get(f"{PREFIX}/api/tokens").text
    assert listed[0]["last_used_at"] is not None
    assert admin.delete(f"{PREFIX}/api/tokens/{made['id']}").status_code == 200
    assert script.get(f"{PREFIX}/api/session").status_code == 401
    assert admin.delete(f"{PREFIX}/api/tokens/{made['id']}").status_code == 200  # idempotent
    assert admin.get(f"{PREFIX}/api/tokens").json()["tokens"][0]["revoked_at"] is not None
    assert admin.delete(f"{PREFIX}/api/tokens/{made['id'] + 1}").status_code == 404
    assert (
        admin.post(f"{PREFIX}/api/tokens", json={"name": "x", "user": "ghost"}).status_code == 404
    )


def test_the_audit_log_pages_and_filters_by_actor(web: Web) -> None:
    web.operator.post(f"{PREFIX}/workers/inventory/tasks/sync_stock", json={})
    entries = web.admin.get(f"{PREFIX}/api/audit", params={"actor": "operator"}).json()["entries"]
    assert [e["action"] for e in entries][:2] == ["task.create", "login"]
    first = web.admin.get(f"{PREFIX}/api/audit", params={"limit": 1}).json()
    assert len(first["entries"]) == 1
    rest = web.admin.get(f"{PREFIX}/api/audit", params={"cursor": first["next_cursor"]}).json()
    assert all(e["id"] < first["next_cursor"] for e in rest["entries"])
    assert rest["entries"]
