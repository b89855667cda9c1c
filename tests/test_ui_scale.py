"""The admin UI's pages over a large history: what they read stays bounded (the timing is
bench.web_routes' job; here, that the bounded reads are the ones the pages use)."""

from __future__ import annotations

import pytest

from tests.web_helpers import PREFIX, Web, new_task, set_task


def test_the_tasks_page_counts_a_meta_search_over_the_scan_window_only(
    web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stask.core.listing.SCAN_WINDOW", 10)
    ids = web.app.create_many([("inventory", "sync_stock")] * 30)
    new_task(web.app)
    for task_id in (ids[2], ids[29]):  # one old task, one inside the newest ten ids
        set_task(web.app, task_id, meta={"order": "ord-1"})
    page = web.viewer.get(f"{PREFIX}/tasks", params={"q": "meta.order:ord-1"})
    assert page.status_code == 200
    # The newest ten ids hold one match; older ones were not read, so the count says 1+.
    assert "1+ tasks match" in page.text
    assert f"/stask/tasks/{ids[29]}" in page.text
    assert f'/stask/tasks/{ids[2]}"' not in page.text
    # An indexed filter is counted exactly.
    web.app.cancel(ids[1])
    exact = web.viewer.get(f"{PREFIX}/tasks", params={"status": "cancelled"})
    assert "1 tasks match" in exact.text or "1 task matches" in exact.text


def test_bulk_on_everything_matching_gets_the_lists_dates(web: Web) -> None:
    import html
    import json
    import re

    page = web.operator.get(
        f"{PREFIX}/tasks", params={"from": "2026-01-02", "to": "2026-01-03", "worker": "inventory"}
    )
    found = re.search(r"data-filters='([^']*)'", page.text)
    assert found is not None
    filters = json.loads(html.unescape(found.group(1)))
    assert filters == {
        "worker": "inventory",
        "from": "2026-01-02T00:00:00",
        "to": "2026-01-03T23:59:59.999999",
    }
    # Those are the bounds the bulk route counts with: the same tasks as the list.
    answer = web.operator.post(f"{PREFIX}/api/tasks/bulk/cancel", json=filters)
    assert answer.status_code == 200, answer.text
