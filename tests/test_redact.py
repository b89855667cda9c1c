"""Secret-looking option keys are redacted at any depth, in the CLI's output too."""

from __future__ import annotations

import json

from stask import Stask
from stask.core.redact import REDACTED, Redactor
from tests.test_cli import stask as run_stask


def test_secret_keys_are_redacted_at_any_depth_and_in_any_case() -> None:
    redact = Redactor(["pin"])
    value = {
        "rows": 3,
        "Password": "p",
        "nested": {"list": [{"api_key": "k", "keep": 1}], "X-Auth-Token": "t"},
        "db": {"credentials": {"user": "u"}},
        "card_pin": "1234",
        "apikey": "a",
    }
    assert redact(value) == {
        "rows": 3,
        "Password": REDACTED,
        "nested": {"list": [{"api_key": REDACTED, "keep": 1}], "X-Auth-Token": REDACTED},
        "db": {"credentials": REDACTED},
        "card_pin": REDACTED,
        "apikey": REDACTED,
    }
    assert Redactor()({"card_pin": "1234"}) == {"card_pin": "1234"}  # only when configured


def test_the_cli_never_prints_a_secret_option(app: Stask, cli_env: dict[str, str]) -> None:
    task = app.create("inventory", "sync_stock", {"login": {"secret": "hunter2"}, "n": 1})
    app.log(task.id, "info", "connecting", token="hunter2", host="db")
    shown = json.loads(run_stask(cli_env, "show", str(task.id), "--json").stdout)
    assert shown["options"] == {"login": {"secret": REDACTED}, "n": 1}
    for args in (("show", str(task.id)), ("tasks", "--json"), ("logs", str(task.id))):
        out = run_stask(cli_env, *args).stdout
        assert "hunter2" not in out, args
    logged = run_stask(cli_env, "logs", str(task.id), "--json").stdout
    assert json.loads(logged)["context"] == {"token": REDACTED, "host": "db"}
