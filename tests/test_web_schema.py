"""schemathesis against ``{prefix}/openapi.json``: under every role, generated requests find no
5xx and no answer outside the documented schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from stask import Stask
from tests.web_helpers import PREFIX, ROLE_OF, SCOPES_OF, Web, make_web, new_task, run_task

EXAMPLES = 8  # per operation and role: bounded, so the whole schema runs in about a minute
ROLES = ("anonymous", "viewer", "operator", "admin")
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.fixture
def web(app: Stask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Web]:
    # An event stream sends one snapshot and ends, so a generated request never hangs.
    monkeypatch.setattr("stask.web.tasks.STREAM_SECONDS", 0.0)
    yield from make_web(app)


def _own(case: Any, tokens: set[int], users: set[str]) -> bool:
    """Whether ``case`` would revoke the test's own credentials (then it proves nothing)."""
    params = case.path_parameters or {}
    path = case.path
    if "/api/tokens/" in path and params.get("token_id") in tokens:
        return True
    if "/api/users/" in path and params.get("username") in users:
        return True
    return path.endswith(("/api/logout", "/api/session/password"))


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_generated_requests_find_no_5xx_and_no_answer_outside_the_schema(
    web: Web, role: str
) -> None:
    run_task(web.app)
    new_task(web.app)
    username, token_id, headers = "", 0, {}
    if role != "anonymous":
        username = web.user(f"fuzz-{role}", ROLE_OF[role], SCOPES_OF.get(role, ()))
        token_id, token = web.token(username)
        headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_asgi(f"{PREFIX}/openapi.json", web.api)
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40, "the schema lost its routes"
    for operation in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            if _own(case, {token_id}, {username}):
                return
            response = case.call(headers=headers)
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except Exception as failure:  # a FailureGroup of what each check found
                problems.append(f"{case.method} {case.formatted_path}: {failure}"[:600])

        run()
    assert not problems, "\n".join(problems[:20])
