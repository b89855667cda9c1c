"""Small helpers shared by the tests and the workers they run in real processes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def append_line(path: str, line: str) -> None:
    """Append one line; one write() of a short line with O_APPEND is atomic across processes."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def wait_until(
    condition: Callable[[], bool], timeout: float = 60.0, what: str | Callable[[], str] = ""
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    import pytest

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.05)
