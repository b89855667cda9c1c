"""Bad input is refused with a clear error, and nothing is written (CLI and facade, every DB)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from stask import Stask
from stask.core.tasks_admin import MAX_TASK_ID
from stask.errors import StaskError, TaskNotFound, ValidationError
from tests.test_cli import assert_one_line_error, stask, stask_json

NEWSLETTER_TYPO = 'recipients=["a@example.com" "b@example.com","c@example.com"]'  # no comma


def log_count(app: Stask) -> int:
    with app.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM s_task_logs")).scalar_one())


# -- stask create -o / stask schedule set -o / stask workers config ----------------------------


@pytest.mark.parametrize(
    ("pair", "fragments"),
    [
        (NEWSLETTER_TYPO, ("option recipients", "Expecting ',' delimiter", "line 1 column 18")),
        ('filters={"active": true', ("option filters", "line 1 column")),
        ('title="unclosed', ("option title", "Unterminated string")),
        ("sizes=[1, 2,]", ("option sizes", "line 1 column")),
        ("ratio=[NaN]", ("option ratio", "NaN is not JSON")),
        ("  nested.deep = [1", ("option nested.deep", "line 1 column")),
    ],
)
def test_create_refuses_a_value_meant_as_json_that_does_not_parse(
    app: Stask, cli_env: dict[str, str], pair: str, fragments: tuple[str, ...]
) -> None:
    done = stask(cli_env, "create", "mailer", "send", "-o", "to=x", "-o", pair, code=2)
    assert_one_line_error(
        done, "is not valid JSON", "quote it as a JSON string", "stask create --help", *fragments
    )
    assert done.stdout == ""
    assert app.count() == 0


def test_plain_values_are_json_when_they_parse_else_text(
    app: Stask, cli_env: dict[str, str]
) -> None:
    created = stask_json(
        cli_env, "create", "mailer", "send",
        "-o", "rows=300", "-o", "name=hello", "-o", "flag=true", "-o", "none=null",
        "-o", "ratio=NaN", "-o", "handle=\"@alice\"", "-o", "note=see [draft] {v2}",
        "-o", 'list=["a@example.com","b@example.com"]', "-o", "empty=",
        "-o", "f.a=1", "-o", "f.b.c=2", "-o", "fa=3", "-o", "tag=x", "-o", "tags=[1]",
    )  # fmt: skip
    assert created["options"] == {
        "rows": 300,
        "name": "hello",
        "flag": True,
        "none": None,
        "ratio": "NaN",  # not JSON (no database stores it): text
        "handle": "@alice",
        "note": "see [draft] {v2}",
        "list": ["a@example.com", "b@example.com"],
        "empty": "",
        "f": {"a": 1, "b": {"c": 2}},
        "fa": 3,  # "fa" does not overlap "f", nor "tags" "tag"
        "tag": "x",
        "tags": [1],
    }


@pytest.mark.parametrize(
    ("first", "second", "fragments"),
    [
        ("a.b=1", "a=2", ("'a.b=1' and 'a=2'", "a would replace a.b")),
        ("a=1", "a.b=2", ("'a=1' and 'a.b=2'", "a would replace a.b")),
        ("a=1", "a=2", ("option a is given twice", "'a=1' and 'a=2'")),
        ("a.b.c=1", " a.b =[]", ("'a.b.c=1' and ' a.b =[]'", "a.b would replace a.b.c")),
    ],
)
def test_conflicting_option_keys_are_refused(
    app: Stask, cli_env: dict[str, str], first: str, second: str, fragments: tuple[str, ...]
) -> None:
    done = stask(cli_env, "create", "mailer", "send", "-o", first, "-o", second, code=2)
    assert_one_line_error(done, *fragments)
    assert app.count() == 0


def test_option_value_from_a_json_file(app: Stask, cli_env: dict[str, str], tmp_path: Path) -> None:
    values = tmp_path / "recipients.json"
    recipients = [f"u{i}@example.com" for i in range(500)]
    values.write_text(json.dumps(recipients), encoding="utf-8")
    created = stask_json(
        cli_env, "create", "mailer", "send", "-o", f"recipients=@{values}", "-o", "n=1"
    )
    assert created["options"] == {"recipients": recipients, "n": 1}

    missing = tmp_path / "nowhere.json"
    bad = tmp_path / "bad.json"
    bad.write_text('{"to": [1, 2}\n', encoding="utf-8")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'"caf\xe9"')
    cases = [
        (f"recipients=@{missing}", (str(missing), "No such file", "option recipients")),
        (f"recipients=@{bad}", (str(bad), "is not valid JSON", "line 1 column 13", "fix the file")),
        (f"recipients=@{latin}", (str(latin), "not UTF-8")),
        ("recipients=@", ("give a JSON file after @", '"@..."')),
    ]
    for pair, fragments in cases:
        done = stask(cli_env, "create", "mailer", "send", "-o", "n=1", "-o", pair, code=2)
        assert_one_line_error(done, *fragments)
    assert app.count() == 1  # only the first task


def test_schedule_options_are_checked_the_same_way(app: Stask, cli_env: dict[str, str]) -> None:
    before = app.get_config("mailer")
    done = stask(
        cli_env, "schedule", "set", "mailer", "daily", "--time", "05:00", "--action", "send",
        "-o", NEWSLETTER_TYPO, code=2,
    )  # fmt: skip
    assert_one_line_error(done, "option recipients", "is not valid JSON")
    assert app.get_config("mailer") == before
    assert app.stored_settings("mailer") == {}


@pytest.mark.parametrize(
    ("key", "value", "fragments"),
    [
        ("api", '{"url": "https://x.invalid", "timeout": 5', ("setting api", "line 1 column")),
        ("api.url", '"https://x.invalid', ("setting api.url", "Unterminated string")),
        ("batch", "[1 2]", ("setting batch", "Expecting ',' delimiter")),
        ("batch", "@/nonexistent/batch.json", ("setting batch", "/nonexistent/batch.json")),
    ],
)
def test_workers_config_refuses_bad_json_and_keeps_the_settings(
    app: Stask, cli_env: dict[str, str], key: str, value: str, fragments: tuple[str, ...]
) -> None:
    before = app.get_config("inventory")
    assert before["api"] == {"url": "https://example.invalid", "timeout": 30}
    done = stask(cli_env, "workers", "config", "inventory", key, value, code=2)
    assert_one_line_error(done, *fragments)
    assert app.stored_settings("inventory") == {}
    assert app.get_config("inventory") == before


def test_workers_config_values(app: Stask, cli_env: dict[str, str], tmp_path: Path) -> None:
    stask(cli_env, "workers", "config", "inventory", "api.timeout", "75")
    stask(cli_env, "workers", "config", "inventory", "api.mode", "fast")
    api = tmp_path / "api.json"
    api.write_text('{"retries": [1, 2, 4]}', encoding="utf-8")
    stask(cli_env, "workers", "config", "inventory", "api.backoff", f"@{api}")
    assert app.get_config("inventory", "api") == {
        "url": "https://example.invalid",
        "timeout": 75,
        "mode": "fast",
        "backoff": {"retries": [1, 2, 4]},
    }


def test_help_explains_values(cli_env: dict[str, str]) -> None:
    created = " ".join(stask(cli_env, "create", "--help").stdout.split())
    assert 'a VALUE starting with [, { or " must be valid JSON' in created
    assert "KEY=@FILE reads the value from a JSON file" in created
    config = " ".join(stask(cli_env, "workers", "config", "--help").stdout.split())
    assert "must be valid JSON" in config
    assert "@FILE" in config


# -- task ids -----------------------------------------------------------------------------------

OUT_OF_RANGE = ["99999999999999999999", "-1", "0", str(MAX_TASK_ID + 1)]


@pytest.mark.parametrize("command", ["show", "logs", "cancel", "retry", "wait"])
def test_cli_task_ids_out_of_range_are_one_line_errors(
    app: Stask, cli_env: dict[str, str], command: str
) -> None:
    task = app.create("mailer", "send")
    for task_id in OUT_OF_RANGE:
        done = stask(cli_env, command, "--", task_id, code=1)
        assert_one_line_error(done, f"no task has id {task_id}", f"1 to {MAX_TASK_ID}")
    # Without "--", "-1" reads as an option: still one line (a usage error).
    assert_one_line_error(stask(cli_env, command, "-1", code=2), "-1")
    assert_one_line_error(stask(cli_env, command, "abc", code=2), "abc")
    assert app.get(task.id).status.value == "pending"
    assert log_count(app) == 0


ID_METHODS: dict[str, Callable[[Stask, Any], object]] = {
    "get": lambda app, i: app.get(i),
    "cancel": lambda app, i: app.cancel(i),
    "retry": lambda app, i: app.retry(i),
    "delete": lambda app, i: app.delete(i),
    "result_file": lambda app, i: app.result_file(i),
    "log": lambda app, i: app.log(i, "info", "hello"),
    "get_logs": lambda app, i: app.get_logs(i),
    "get_last_logs": lambda app, i: app.get_last_logs(i),
    "get_error_logs": lambda app, i: app.get_error_logs(i),
    "clear_logs": lambda app, i: app.clear_logs(i),
}


@pytest.mark.parametrize("method", list(ID_METHODS))
def test_facade_checks_task_ids(app: Stask, method: str) -> None:
    call = ID_METHODS[method]
    task = app.create("mailer", "send")
    for task_id in (10**20, MAX_TASK_ID + 1, 0, -1, -(2**70)):
        with pytest.raises(TaskNotFound, match=f"no task has id {task_id} .*1 to {MAX_TASK_ID}"):
            call(app, task_id)
    for wrong in ("5", 5.0, True, None):
        with pytest.raises(ValidationError, match="a task id must be an int, got"):
            call(app, wrong)
    if method in ("get", "cancel", "retry", "delete", "result_file", "log"):
        # The largest id the column holds reaches the database: not found, no overflow.
        with pytest.raises(TaskNotFound, match=f"no task has id {MAX_TASK_ID}"):
            call(app, MAX_TASK_ID)
    else:
        assert call(app, MAX_TASK_ID) in ([], 0)
    assert app.get(task.id).status.value == "pending"
    assert log_count(app) == 0


def test_log_to_a_missing_task_writes_nothing(app: Stask) -> None:
    task = app.create("mailer", "send")
    with pytest.raises(TaskNotFound, match=r"no task has id 424242; nothing was logged"):
        app.log(424242, "info", "lost")
    assert log_count(app) == 0
    app.log(task.id, "INFO", "kept", rows=3)
    assert [(e.level, e.message, e.context) for e in app.get_logs(task.id)] == [
        ("info", "kept", {"rows": 3})
    ]
    with pytest.raises(ValidationError, match="unknown log level 'loud'"):
        app.log(task.id, "loud", "x")
    with pytest.raises(ValidationError, match="log message must be a string, got int"):
        app.log(task.id, "info", 5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="log context 'when' is not JSON"):
        app.log(task.id, "info", "x", when=dt.datetime.now())
    assert log_count(app) == 1


def test_log_reading_arguments_are_checked(app: Stask) -> None:
    task = app.create("mailer", "send")
    for bad in (-1, 2**64, "3", True):
        with pytest.raises(ValidationError, match="after_id must be a non-negative int"):
            app.get_logs(task.id, after_id=bad)
        with pytest.raises(ValidationError, match="count must be a non-negative int"):
            app.get_last_logs(task.id, bad)


# -- creating tasks -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["run_at", "deadline"])
@pytest.mark.parametrize("value", ["2030-01-01T00:00:00", 1_900_000_000, dt.date(2030, 1, 1)])
def test_moments_must_be_datetimes(app: Stask, name: str, value: object) -> None:
    expected = f"{name} must be a datetime .* got {type(value).__name__}"
    with pytest.raises(ValidationError, match=expected):
        app.create("mailer", "send", **{name: value})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=f"item 1 of create_many: {expected}"):
        app.create_many(
            [("mailer", "send"), {"identifier": "mailer", "action": "send", name: value}]
        )
    assert app.count() == 0


def test_create_many_refuses_unknown_and_missing_keys(app: Stask) -> None:
    good = {"identifier": "mailer", "action": "send"}
    with pytest.raises(ValidationError) as caught:
        app.create_many([good, {**good, "runat": None, "prio": "high"}])
    message = caught.value.message
    assert message.startswith("item 1 of create_many: unknown key(s) 'prio', 'runat' - use ")
    assert "identifier, action, options, priority, run_at, queue" in message
    assert "deadline" in message
    with pytest.raises(ValidationError, match="item 0 of create_many: missing key\\(s\\) 'action'"):
        app.create_many([{"identifier": "mailer"}])
    with pytest.raises(ValidationError, match="item 2 of create_many: each item must be"):
        app.create_many([good, ("mailer", "send"), ["mailer", "send"]])
    with pytest.raises(ValidationError, match="action must be a string, got int"):
        app.create_many([{"identifier": "mailer", "action": 7}])
    with pytest.raises(ValidationError, match="identifier must be a string, got NoneType"):
        app.create(None, "send")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="started_by must be a string of at most 100"):
        app.create_many([{**good, "started_by": "x" * 101}])
    assert app.count() == 0
    ids = app.create_many([{**good, "priority": "high", "run_at": dt.datetime(2030, 1, 1)}])
    assert app.get(ids[0]).run_at == dt.datetime(2030, 1, 1)


def test_facade_bad_input_is_always_a_stask_error(app: Stask) -> None:
    """No TypeError, KeyError or driver error escapes for these."""
    calls: list[Callable[[], object]] = [
        lambda: app.create("mailer", "send", run_at="tomorrow"),  # type: ignore[arg-type]
        lambda: app.create_many([{"identifier": "mailer", "action": "send", "when": 1}]),
        lambda: app.get(99999999999999999999),
        lambda: app.log(99999999999999999999, "info", "x"),
        lambda: app.log(1, "info", "x"),
    ]
    for call in calls:
        with pytest.raises(StaskError):
            call()
    assert app.count() == 0
    assert log_count(app) == 0
