"""One test per defence of the web API (issue 12): CSRF, sessions, tokens, roles, scopes,
downloads, uploads, output encoding, redaction, headers, throttling, declared permissions, the
first admin's password, and no 500 for bad input."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from sqlalchemy import update

from stask import Stask
from stask.db.tables import workers
from stask.settings import Settings
from stask.web import system
from stask.web.security import CSRF_HEADER
from tests.conftest import TEST_WORKERS
from tests.web_helpers import (
    HOSTILE,
    PASSWORD,
    PREFIX,
    SAMPLES,
    T,
    W,
    Web,
    app_routes,
    files_under,
    make_web,
    matrix,
    new_task,
    run_task,
    send,
    set_task,
    snapshot,
)


@pytest.fixture
def tuned(db_url: str, storage: Path) -> Iterator[Web]:
    """The API of a Stask with small limits: 3 failed logins, 4 KiB uploads, ``ssn`` secret."""
    settings = Settings(
        database_url=db_url,
        storage=storage,
        workers=TEST_WORKERS,
        max_upload_bytes=4096,
        redact_keys=["ssn"],
        login_max_failures=3,
    )
    instance = Stask(settings, use_entry_points=False)
    instance.store.housekeeping.truncate_all()
    instance.discover()
    yield from make_web(instance)
    instance.close()


# -- CSRF ----------------------------------------------------------------------------------------


def test_every_mutating_route_refuses_a_session_without_the_right_csrf_token(web: Web) -> None:
    m = matrix(web)
    admin = web.login(web.role_user("admin"))
    token = admin.headers.pop(CSRF_HEADER)
    other_session = web.login(web.role_user("admin")).headers[CSRF_HEADER]
    mutating = [r for r in app_routes(web.api) if r.mutating]
    assert len(mutating) > 25
    problems = []
    for route in mutating:
        if route.permission == "public":
            continue  # login: no session yet, so no token to send
        for sent in (None, "wrong", other_session, token.upper(), token[:-1]):
            call = SAMPLES[route.key](m, "admin")
            client = call.client or admin
            client.headers.pop(CSRF_HEADER, None)
            if sent is not None:
                call.headers[CSRF_HEADER] = sent
            before = snapshot(web.app)
            answer = send(client, route.method, call)
            where = f"{route.method} {call.path} with CSRF {sent!r}"
            if answer.status_code != 403 or "X-CSRF-TOKEN" not in answer.json()["message"]:
                problems.append(f"{where}: {answer.status_code} {answer.text[:200]}")
            if snapshot(web.app) != before:
                problems.append(f"{where}: changed the database")
    assert not problems, "\n".join(problems)
    # The right token works (the matrix test covers every route with it).
    ok = admin.post(f"{T}/{m.pending()}/cancel", headers={CSRF_HEADER: token})
    assert ok.status_code == 200
    # Bearer tokens carry no cookie a browser would send on its own: no CSRF token needed.
    _, bearer = web.token(web.role_user("admin"))
    assert web.bearer(bearer).post(f"{T}/{m.pending()}/cancel").status_code == 200


# -- sessions and tokens -------------------------------------------------------------------------


def _cookie(client: Any) -> str:
    value: str = client.cookies["__Host-stask_session"]
    return value


def test_a_session_cookie_replayed_after_logout_is_refused(web: Web) -> None:
    client = web.login(web.user("ann", "viewer"))
    cookie = _cookie(client)
    assert client.post(f"{PREFIX}/api/logout").status_code == 200
    replay = web.client(cookies={"__Host-stask_session": cookie})
    answer = replay.get(f"{PREFIX}/api/session")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert replay.get(f"{T}").status_code == 401
    # A made-up or oversized cookie is refused the same way.
    for fake in ("x", "A" * 5000):
        assert web.client(cookies={"__Host-stask_session": fake}).get(T).status_code == 401


def test_a_password_change_ends_every_session(web: Web) -> None:
    web.user("ann", "operator")
    first, second = web.login("ann"), web.login("ann")
    changed = first.post(
        f"{PREFIX}/api/session/password",
        json={"password": "a whole new password", "current_password": PASSWORD},
    )
    assert changed.status_code == 200
    assert first.get(T).status_code == 401
    assert second.get(T).status_code == 401
    third = web.login("ann", "a whole new password")
    web.admin.post(f"{PREFIX}/api/users/ann/password", json={"password": "reset by the admin"})
    assert third.get(T).status_code == 401
    bad = web.client().post(
        f"{PREFIX}/api/login", json={"username": "ann", "password": "a whole new password"}
    )
    assert bad.status_code == 401


def test_a_disabled_users_sessions_and_tokens_stop_working(web: Web) -> None:
    web.user("ann", "operator")
    session = web.login("ann")
    _, token = web.token("ann")
    script = web.bearer(token)
    assert script.get(T).status_code == 200
    web.app.accounts.disable("ann")
    assert session.get(T).status_code == 401
    assert script.get(T).status_code == 401
    assert script.post(f"{PREFIX}/workers/inventory/tasks/sync_stock").status_code == 401
    login = web.client().post(f"{PREFIX}/api/login", json={"username": "ann", "password": PASSWORD})
    assert login.status_code == 401
    web.app.accounts.enable("ann")
    assert script.get(T).status_code == 200  # the token was not revoked, only refused


def test_a_revoked_token_is_refused(web: Web) -> None:
    token_id, token = web.token(web.role_user("operator"))
    script = web.bearer(token)
    assert script.get(T).status_code == 200
    web.app.accounts.revoke_token(token_id)
    answer = script.get(T)
    assert answer.status_code == 401
    assert "revoked" in answer.json()["message"]
    for header in (f"Bearer {token}x", f"Basic {token}", "Bearer ", "Bearer stask_nope"):
        assert web.client(headers={"Authorization": header}).get(T).status_code == 401


@pytest.mark.parametrize("name", ["token", "access_token", "api_key"])
def test_credentials_in_the_query_string_are_refused_even_when_valid(web: Web, name: str) -> None:
    _, token = web.token(web.role_user("admin"))
    answer = web.anon.get(T, params={name: token})
    assert answer.status_code == 400
    assert "query string" in answer.json()["message"]
    # Not even with valid credentials besides: the URL would end up in logs.
    assert web.bearer(token).get(T, params={name: token}).status_code == 400
    assert web.admin.get(T, params={name: "x"}).status_code == 400
    assert web.bearer(token).get(T).status_code == 200


# -- roles and scopes ----------------------------------------------------------------------------


def test_a_viewer_may_not_do_what_operators_do(web: Web) -> None:
    task_id = new_task(web.app)
    _, token = web.token(web.role_user("viewer"))
    for client in (web.viewer, web.bearer(token)):
        for method, path, body in (
            ("POST", f"{PREFIX}/workers/inventory/tasks/sync_stock", {}),
            ("POST", f"{T}/{task_id}/cancel", None),
            ("DELETE", f"{T}/{task_id}", None),
            ("POST", f"{T}/bulk/delete", {"ids": [task_id]}),
            ("PUT", f"{W}/inventory/settings", {"values": {"batch": 1}}),
        ):
            answer = client.request(method, path, json=body)
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["error"] == "forbidden"
    assert web.app.get(task_id).status.value == "pending"
    denied = [e for e in web.app.accounts.audit_entries(actor="viewer") if e.outcome == "denied"]
    assert len(denied) == 10


def test_a_scoped_user_sees_nothing_outside_their_scopes(web: Web) -> None:
    app = web.app
    web.user("outsider", "admin", ["other"])
    web.user("shopper", "operator", ["shop"])
    outsider, shopper = web.login("outsider"), web.login("shopper")
    stock = run_task(app).id  # inventory: scope "shop"
    mail = new_task(app, "send", "mailer")  # scope "notifications"
    for path in (
        f"{T}/{stock}",
        f"{PREFIX}/tasks/{stock}/progress",
        f"{PREFIX}/task/{stock}/progress",
        f"{T}/{stock}/logs",
        f"{T}/{stock}/logs/download",
        f"{T}/{stock}/events",
        f"{PREFIX}/tasks/{stock}/download",
        f"{W}/inventory",
        f"{W}/inventory/settings",
        f"{W}/inventory/schedule",
    ):
        answer = outsider.get(path)
        assert answer.status_code == 404, (path, answer.text)
    for method, path in (("POST", f"{T}/{stock}/retry"), ("DELETE", f"{T}/{stock}")):
        assert outsider.request(method, path).status_code == 404
    assert outsider.post(f"{PREFIX}/workers/inventory/tasks/sync_stock").status_code == 404
    assert outsider.get(T).json()["tasks"] == []
    assert outsider.get(f"{T}/count").json()["count"] == 0
    assert outsider.get(T, params={"q": f"#{stock}"}).json()["tasks"] == []
    assert outsider.get(f"{T}/export", params={"format": "jsonl"}).text == ""
    assert outsider.get(W).json()["workers"] == []
    assert outsider.get(f"{PREFIX}/performance/workers").json()["workers"] == {}
    bulk = outsider.post(f"{T}/bulk/cancel", json={"ids": [mail]}).json()
    assert bulk["done"] == []
    assert "no task" in bulk["refused"][str(mail)]
    assert outsider.post(f"{T}/bulk/cancel", json={"status": "pending"}).json()["count"] == 0
    # The shop's operator sees the shop's tasks only, and acts on them.
    assert [row["id"] for row in shopper.get(T).json()["tasks"]] == [stock]
    assert shopper.get(f"{T}/{mail}").status_code == 404
    assert shopper.post(f"{T}/{mail}/cancel").status_code == 404
    assert app.get(mail).status.value == "pending"
    assert shopper.delete(f"{T}/{stock}").status_code == 200
    # Routes over every scope need a role that applies to every scope.
    assert shopper.get(f"{PREFIX}/performance/summary").status_code == 403
    assert outsider.get(f"{PREFIX}/api/users").status_code == 403


# -- downloads -----------------------------------------------------------------------------------


def test_downloads_never_leave_the_storage_directory(
    web: Web, storage: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("TOP SECRET CONTENT")
    (storage / "tasks").mkdir(parents=True, exist_ok=True)
    link = storage / "tasks" / "link.txt"
    os.symlink(secret, link)
    inside = storage / "inside.txt"
    inside.write_text("fine")
    task_id = run_task(web.app).id
    relative_up = os.path.relpath(secret, storage)
    for file in (
        "../secret",
        relative_up,
        f"tasks/../{relative_up}",
        "%2e%2e/secret",
        "..%2fsecret",
        str(secret),
        "tasks/link.txt",
        "tasks",
        "",
        # PostgreSQL's JSON cannot hold a NUL at all; the other databases store it
        *(["\x00"] if web.app.store.dialect != "postgresql" else []),
    ):
        set_task(web.app, task_id, result={"file": file})
        for path in (f"{PREFIX}/tasks/{task_id}/download", f"{PREFIX}/task/{task_id}/download"):
            answer = web.viewer.get(path)
            assert answer.status_code == 404, (file, answer.status_code)
            assert b"TOP SECRET" not in answer.content
    for path in (f"{PREFIX}/tasks/..%2f..%2fsecret/download", f"{PREFIX}/tasks/%2e%2e/download"):
        answer = web.viewer.get(path)
        assert 400 <= answer.status_code < 500
        assert b"TOP SECRET" not in answer.content
    set_task(web.app, task_id, result={"file": "inside.txt"})
    answer = web.viewer.get(f"{PREFIX}/tasks/{task_id}/download")
    assert answer.status_code == 200
    assert answer.content == b"fine"
    assert answer.headers["content-disposition"] == 'attachment; filename="inside.txt"'
    assert "sandbox" in answer.headers["content-security-policy"].split("; ")
    assert answer.headers["x-content-type-options"] == "nosniff"


# -- uploads -------------------------------------------------------------------------------------


def test_an_oversize_upload_is_refused_and_leaves_no_file(tuned: Web, storage: Path) -> None:
    tuned.app.set_config("inventory", "upload_extensions", [".csv"])
    url = f"{W}/inventory/tasks/sync_stock/upload"
    before = files_under(storage)
    ops = tuned.operator
    just = ops.post(url, files={"file": ("a.csv", b"x" * 4096)})
    assert just.status_code == 200, just.text
    tuned.app.delete(just.json()["id"])
    before = files_under(storage)
    # Over the limit within the slack the body limit allows: refused while it is written.
    over = ops.post(url, files={"file": ("a.csv", b"x" * 4097)})
    assert over.status_code == 413
    assert "max_upload_bytes" in over.json()["message"]
    # Far over it: refused by its declared length, and when streamed without one.
    big = ops.post(url, files={"file": ("a.csv", b"x" * 200_000)})
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        boundary = b"--b\r\n"
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        for _ in range(100):
            yield b"x" * 4096
        yield b"\r\n--b--\r\n"

    streamed = ops.post(
        url, content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert streamed.status_code == 413
    assert files_under(storage) == before
    assert tuned.app.count() == 0
    # A JSON body over 2 MiB is refused the same way.
    huge = ops.post(T, content=b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert huge.status_code == 413


@pytest.mark.parametrize("name", ["run.exe", "rows.csv.exe", "rows", ".csv", "rows.CSV.php"])
def test_a_forbidden_extension_is_refused(web: Web, storage: Path, name: str) -> None:
    web.app.set_config("inventory", "upload_extensions", [".csv"])
    answer = web.operator.post(
        f"{W}/inventory/tasks/sync_stock/upload", files={"file": (name, b"MZ...")}
    )
    assert answer.status_code == 422
    assert ".csv" in answer.json()["message"]
    assert files_under(storage / "uploads") == []
    assert web.app.count() == 0


def test_an_uploaded_name_cannot_escape_the_uploads_folder(web: Web, storage: Path) -> None:
    web.app.set_config("inventory", "upload_extensions", [".csv"])
    answer = web.operator.post(
        f"{W}/inventory/tasks/sync_stock/upload",
        files={"file": ("../../../evil name.csv", b"a")},
    )
    assert answer.status_code == 200, answer.text
    stored = (storage / answer.json()["upload"]["path"]).resolve()
    assert (storage / "uploads").resolve() in stored.parents
    assert stored.name == "evil_name.csv"
    assert [p.resolve() for p in files_under(storage)] == [stored]


# -- output encoding -----------------------------------------------------------------------------


def test_markup_comes_back_as_json_string_data(web: Web) -> None:
    app = web.app
    task_id = new_task(app, options={"note": HOSTILE})
    app.log(task_id, "info", HOSTILE, where=HOSTILE)
    set_task(app, task_id, message=HOSTILE, error=f"RuntimeError: {HOSTILE}", status="failed")
    with app.store.writing() as conn:
        conn.execute(
            update(workers).where(workers.c.identifier == "inventory").values(title=HOSTILE)
        )
    web.admin.post(f"{PREFIX}/cache/clear")
    checks = {
        f"{T}/{task_id}": lambda b: (b["task"]["options"]["note"], b["task"]["message"]),
        T: lambda b: (b["tasks"][0]["message"], b["tasks"][0]["error"]),
        f"{PREFIX}/tasks/{task_id}/progress": lambda b: (b["message"], b["logs"][0]["message"]),
        f"{T}/{task_id}/logs": lambda b: (
            b["logs"][0]["message"],
            b["logs"][0]["context"]["where"],
        ),
        f"{W}/inventory": lambda b: (b["worker"]["title"],),
        W: lambda b: (b["workers"][0]["title"],),
    }
    for path, pick in checks.items():
        answer = web.viewer.get(path)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert all(HOSTILE in value for value in pick(answer.json())), path
    assert HOSTILE in web.viewer.get(f"{T}/{task_id}").json()["task"]["error"]
    # Input echoed in an error message is JSON data as well.
    echoed = web.viewer.get(f"{W}/{HOSTILE}")
    assert echoed.status_code == 404
    assert echoed.headers["content-type"] == "application/json"
    assert HOSTILE in echoed.json()["message"]
    searched = web.viewer.get(T, params={"q": HOSTILE})
    assert searched.headers["content-type"] == "application/json"
    # Nothing the API answers is HTML.
    for path in (f"{T}/{task_id}/logs/download", f"{T}/{task_id}/events", f"{T}/export"):
        assert "html" not in web.viewer.get(path).headers["content-type"]


# -- redaction -----------------------------------------------------------------------------------


SECRET_OPTIONS = {
    "a": {"b": [{"api_key": "S1"}]},
    "Password": "S2",
    "headers": {"X-Auth-Token": "S3"},
    "person": {"SSN": "S4"},
    "rows": 1,
}
SECRETS = ("S1", "S2", "S3", "S4")


def _assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert f'"{secret}"' not in text, (where, secret, text[:500])
        assert f"'{secret}'" not in text, (where, secret, text[:500])
    assert "[redacted]" in text, where


def test_secrets_are_redacted_at_any_depth_everywhere(tuned: Web) -> None:
    app = tuned.app
    task_id = new_task(app, options=SECRET_OPTIONS)
    app.log(task_id, "info", "context", **SECRET_OPTIONS)
    set_task(app, task_id, result={"nested": [{"token": "S1"}], "ssn": "S4"})
    viewer = tuned.viewer
    detail = viewer.get(f"{T}/{task_id}").json()["task"]
    assert detail["options"]["a"]["b"][0]["api_key"] == "[redacted]"
    assert detail["options"]["Password"] == "[redacted]"
    assert detail["options"]["headers"]["X-Auth-Token"] == "[redacted]"
    assert detail["options"]["person"]["SSN"] == "[redacted]"  # redact_keys = ["ssn"]
    assert detail["options"]["rows"] == 1
    assert detail["result"] == {"nested": [{"token": "[redacted]"}], "ssn": "[redacted]"}
    for path, params in (
        (f"{T}/{task_id}", None),
        (T, None),
        (f"{T}/export", {"format": "csv"}),
        (f"{T}/export", {"format": "jsonl"}),
        (f"{T}/{task_id}/logs", None),
        (f"{T}/{task_id}/logs/download", None),
        (f"{PREFIX}/tasks/{task_id}/progress", None),
        (f"{PREFIX}/api/events", {"once": "true"}),
    ):
        answer = viewer.get(path, params=params)
        assert answer.status_code == 200
        _assert_no_secret(answer.text.replace('""', '"'), f"{path} {params}")
    # Audit entries: what routes record (a schedule's options) and any detail at all.
    schedule = {"type": "manual", "options": SECRET_OPTIONS}
    assert tuned.admin.put(f"{W}/inventory/schedule", json=schedule).status_code == 200
    app.accounts.audit("someone", "test.secret", detail=SECRET_OPTIONS)
    audit = tuned.admin.get(f"{PREFIX}/api/audit").text
    _assert_no_secret(audit, "audit")
    entries = tuned.admin.get(f"{PREFIX}/api/audit").json()["entries"]
    assert any(e["action"] == "worker.schedule" for e in entries)
    # Worker settings too.
    tuned.admin.put(f"{W}/inventory/settings", json={"values": {"api.password": "S2"}})
    _assert_no_secret(viewer.get(f"{W}/inventory/settings").text, "settings")


# -- headers -------------------------------------------------------------------------------------


def _assert_security_headers(answer: Any, where: str) -> None:
    headers = answer.headers
    policy = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy, (where, policy)
    assert "default-src 'none'" in policy or "sandbox" in policy, (where, policy)
    assert headers.get("x-frame-options") == "DENY", where
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("referrer-policy") == "same-origin", where


def test_security_headers_are_on_every_response(web: Web) -> None:
    m = matrix(web)
    seen = set()
    for route in app_routes(web.api):
        for role in ("anonymous", "admin"):
            call = SAMPLES[route.key](m, role)
            answer = send(call.client or web.as_role(role), route.method, call)
            seen.add(answer.status_code)
            _assert_security_headers(answer, f"{route.method} {call.path} as {role}")
            if call.after is not None:
                call.after()
    others = [
        web.anon.get(f"{PREFIX}/openapi.json"),
        web.anon.get(f"{PREFIX}/no/such/route"),
        web.anon.get("/"),
        web.anon.put(f"{PREFIX}/health"),
        web.admin.post(T, content=b"{not json"),
        web.admin.post(T, content=b"x" * (3 * 1024 * 1024)),
    ]
    for answer in others:
        seen.add(answer.status_code)
        _assert_security_headers(answer, str(answer.request.url))
        assert answer.headers["cache-control"] == "no-store"
    assert {200, 401, 404, 405, 413} <= seen


# -- login throttling ----------------------------------------------------------------------------


def _login(web: Web, name: str, password: str, address: str = "10.0.0.1") -> Any:
    client = web.client(client=(address, 5000))
    return client.post(f"{PREFIX}/api/login", json={"username": name, "password": password})


def test_failed_logins_are_throttled_per_account_alike_for_unknown_names(tuned: Web) -> None:
    tuned.user("ann", "viewer")
    answers: dict[str, list[tuple[int, str]]] = {}
    for name in ("ann", "ghost"):
        found = []
        for attempt in range(4):
            answer = _login(tuned, name, "wrong password", address=f"10.1.{attempt}.{len(name)}")
            found.append((answer.status_code, answer.json()["message"]))
        answers[name] = found
    assert answers["ann"] == answers["ghost"]
    assert [status for status, _ in answers["ann"]] == [401, 401, 401, 429]
    # The account stays locked for its right password too, from any address.
    assert _login(tuned, "ann", PASSWORD, address="10.9.9.9").status_code == 429
    assert _login(tuned, "ghost", PASSWORD, address="10.9.9.9").status_code == 429
    # Another account is not affected.
    tuned.user("bob", "viewer")
    assert _login(tuned, "bob", PASSWORD).status_code == 200


def test_failed_logins_are_throttled_per_address(tuned: Web) -> None:
    tuned.user("ann", "viewer")
    limit = tuned.app.settings.login_max_failures * 4
    statuses = [
        _login(tuned, f"name{i}", "wrong password", address="10.2.0.1").status_code
        for i in range(limit)
    ]
    assert statuses == [401] * limit
    assert _login(tuned, "ann", PASSWORD, address="10.2.0.1").status_code == 429
    assert _login(tuned, "ann", PASSWORD, address="10.2.0.2").status_code == 200
    throttled = [e for e in tuned.app.accounts.audit_entries() if e.action == "login_throttled"]
    assert throttled


# -- declared permissions ------------------------------------------------------------------------


def test_a_route_without_a_declared_permission_is_refused(
    app: Stask, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = APIRouter()
    extra.include_router(system.router)

    @extra.get("/sneaky")
    def sneaky() -> dict[str, str]:
        return {"secret": "data"}

    monkeypatch.setattr(system, "router", extra)
    web = Web(app)
    routes = {r.key: r.permission for r in app_routes(web.api)}
    assert routes[("GET", f"{PREFIX}/sneaky")] == ""
    for client in (web.anon, web.admin):
        answer = client.get(f"{PREFIX}/sneaky")
        assert answer.status_code == 403
        assert "declares no permission" in answer.json()["message"]
    assert web.anon.get(f"{PREFIX}/health").status_code == 200  # declared ones still work
    # A route added to the app after create_app is refused too.
    later = APIRouter()

    @later.post("/later")
    def later_route() -> dict[str, str]:
        return {"done": "yes"}

    web.api.include_router(later)

    @web.api.get("/direct")
    def direct() -> int:
        return 1

    assert web.admin.post("/later").status_code == 403
    assert web.admin.get("/direct").status_code == 403


# -- the first admin -----------------------------------------------------------------------------


def test_the_first_start_admin_password_is_random(app: Stask) -> None:
    first = app.accounts.ensure_admin()
    assert first is not None
    assert len(first) >= 20
    assert app.accounts.ensure_admin() is None  # only on the very first start
    web = Web(app)
    web.login("admin", first)
    app.store.housekeeping.truncate_all()
    second = app.accounts.ensure_admin()
    assert second is not None
    assert second != first
    assert first not in json.dumps([e.to_dict() for e in app.accounts.audit_entries()])
    app.accounts.add_user("someone", "viewer", PASSWORD)
    app.store.housekeeping.truncate_all()
    app.accounts.add_user("someone", "viewer", PASSWORD)
    assert app.accounts.ensure_admin() is None  # users exist: no admin is made


# -- bad input -----------------------------------------------------------------------------------


BAD_VALUES = ("0", "-1", str(2**63), str(2**64 * 10), "1e3", "abc", "%00", "..", HOSTILE, "é" * 300)


def test_bad_input_never_answers_500(web: Web) -> None:
    m = matrix(web)
    admin = web.admin
    problems = []

    def check(answer: Any, where: str) -> None:
        json_answer = answer.headers["content-type"] == "application/json"
        if answer.status_code >= 500 or not (json_answer or 200 <= answer.status_code < 300):
            problems.append(f"{where}: {answer.status_code} {answer.text[:200]}")

    for route in app_routes(web.api):
        if "{" in route.path:
            for value in BAD_VALUES:
                path = route.path
                while "{" in path:
                    start, end = path.index("{"), path.index("}")
                    path = path[:start] + value + path[end + 1 :]
                # once: an event stream that a bad value turns into another route ends too
                answer = admin.request(route.method, path, params={"once": "true"})
                check(answer, f"{route.method} {path}")
        if route.mutating:
            call = SAMPLES[route.key](m, "admin")
            client = call.client or admin
            for body in (b"{not json", b"[1, 2]", b'"text"', b"null", b"1" * 5000, b"{}"):
                headers = {"content-type": "application/json"}
                answer = client.request(route.method, call.path, content=body, headers=headers)
                check(answer, f"{route.method} {call.path} {body[:20]!r}")
            deep = b'{"a": ' * 5000 + b"1" + b"}" * 5000
            check(client.request(route.method, call.path, content=deep), f"{call.path} deep")
            if call.after is not None:
                call.after()
    wrong_types = [
        ("POST", T, {"identifier": 1, "action": ["x"], "options": "text"}),
        ("POST", T, {"identifier": "inventory", "action": "sync_stock", "max_attempts": 10**30}),
        ("POST", T, {"identifier": "inventory", "action": "sync_stock", "run_at": "yesterday"}),
        ("POST", T, {"identifier": "inventory", "action": "sync_stock", "priority": "urgent"}),
        ("POST", f"{T}/bulk/cancel", {"ids": ["a", None]}),
        ("POST", f"{T}/bulk/cancel", {"ids": [2**70]}),
        ("POST", f"{T}/bulk/cancel", {"status": "nonsense"}),
        ("POST", f"{T}/bulk/cancel", {"q": "meta.:x"}),
        ("PUT", f"{W}/inventory/settings", {"values": []}),
        ("PUT", f"{W}/inventory/schedule", {"type": "periodic", "frequency": 3}),
        ("PUT", f"{PREFIX}/api/queues/q/limits", {"concurrency": "many"}),
        ("POST", f"{PREFIX}/api/queues/q/pause", {"until": "2000-01-01T00:00:00Z"}),
        ("POST", f"{PREFIX}/api/users", {"username": "x" * 100, "role": "viewer", "scopes": [1]}),
        ("POST", f"{PREFIX}/api/users", {"username": "-bad-", "role": "viewer"}),
        ("POST", f"{PREFIX}/api/tokens", {"name": " "}),
        ("POST", f"{PREFIX}/api/login", {"username": None, "password": 1}),
        ("POST", f"{PREFIX}/workers/inventory/tasks/sync_stock", {"x": "\ud800"}),
        ("POST", f"{PREFIX}/clean", {"days": 10**20}),
    ]
    for method, path, body in wrong_types:
        raw = json.dumps(body).encode() if "\ud800" not in str(body) else b'{"x": "\\ud800"}'
        headers = {"content-type": "application/json"}
        answer = admin.request(method, path, content=raw, headers=headers)
        check(answer, f"{method} {path} {body}")
        assert answer.status_code >= 400, (method, path, body, answer.text)
    # A number JSON allows but no 64-bit type holds is kept exactly, not refused or rounded.
    big = admin.post(f"{PREFIX}/workers/inventory/tasks/sync_stock", json={"big": 10**400})
    assert big.status_code == 200, big.text
    assert admin.get(f"{T}/{big.json()['id']}").json()["task"]["options"] == {"big": 10**400}
    for params in (
        {"status": "nonsense"},
        {"status": ",,,"},
        {"cursor": str(2**64)},
        {"cursor": "-5"},
        {"limit": "many"},
        {"from": "not a date"},
        {"to": "2026-13-45"},
        {"q": "status:nonsense"},
        {"q": "after:yesterday"},
        {"q": f"#{2**64}"},
        {"q": "meta.a.b.c:" + "x" * 900},
        {"worker": "x" * 101},
    ):
        for path in (T, f"{T}/count", f"{T}/export", f"{PREFIX}/api/events"):
            check(admin.get(path, params={**params, "once": "true"}), f"{path} {params}")
    assert not problems, "\n".join(problems)
