"""Small helpers shared by the tests and the workers they run in real processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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


class Processes:
    """Processes a test starts (stderr to a file, never a pipe a chatty process could block
    on); on exit, those still running are killed, and each one's stderr is printed, which
    pytest shows when the test failed."""

    def __init__(self, folder: Path, label: str) -> None:
        self.folder = folder
        self.label = label
        self.started: list[tuple[subprocess.Popen[str], Path]] = []

    def start(
        self, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[str]:
        err = self.folder / f"{self.label}-{len(self.started)}.err"
        with err.open("w") as sink:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=sink, text=True
            )
        self.started.append((proc, err))
        return proc

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc, err in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            print(
                f"--- {self.label} {proc.pid} (exit {proc.returncode}) stderr:\n{err.read_text()}"
            )
