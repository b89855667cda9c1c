"""Terminal rendering helpers that need no database."""

from __future__ import annotations

import pytest

from stask.cli.render import markdown_text, nice_eta


def test_markdown_spans_become_styles() -> None:
    text = markdown_text("Imported **12** of 40 from `a.csv`")
    assert text.plain == "Imported 12 of 40 from a.csv"
    styles = {text.plain[span.start : span.end]: str(span.style) for span in text.spans}
    assert styles == {"12": "bold", "a.csv": "cyan"}
    assert markdown_text(None).plain == ""
    assert markdown_text("2 * 3 = 6").plain == "2 * 3 = 6"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "—"), (0, "0s"), (59, "59s"), (150, "2m 30s"), (3600, "1h 00m"), (7322, "2h 02m")],
)
def test_nice_eta(seconds: int | None, shown: str) -> None:
    assert nice_eta(seconds) == shown
