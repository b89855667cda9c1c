"""SQLite wake-ups: a touched file beside the database, watched with inotify by idle runners.

The file plays the part PostgreSQL's NOTIFY plays there. After a transaction that inserted
tasks due now commits, the enqueuing process touches ``<database>-stask-wake`` (one
``utime`` per batch, never per row); a runner in any process on this machine wakes the moment
the kernel reports it and claims at once, instead of at its next adaptive poll. Where inotify
is not available (not Linux, or the user's watch limit is spent), runners only poll, as before:
a lost wake-up costs latency, never a task.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import URL

log = logging.getLogger("stask.notify")
SUFFIX = "-stask-wake"

# <sys/inotify.h>
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_IGNORED = 0x8000
WATCH_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)


def wake_path(url: URL) -> Path | None:
    """The wake file of a SQLite database, or None for an in-memory one."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or "mode" in url.query:
        return None
    return Path(database + SUFFIX)


def touch(path: Path) -> None:
    """Tell watching runners that tasks are due (best effort: they still poll)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            path.touch()
        except OSError as err:
            log.debug("could not create the wake file %s: %s", path, err)
    except OSError as err:
        log.debug("could not touch the wake file %s: %s", path, err)


def _events(data: bytes) -> list[int]:
    masks, offset = [], 0
    while offset + _EVENT.size <= len(data):
        _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
        masks.append(mask)
        offset += _EVENT.size + length
    return masks


class _Inotify:
    """The three inotify calls, through libc (the standard library has no binding)."""

    def __init__(self) -> None:
        import ctypes  # here: a PostgreSQL or MariaDB process never needs it

        self._errno = ctypes.get_errno
        libc = ctypes.CDLL(None, use_errno=True)  # the C library Python itself runs on
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self.fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if self.fd < 0:
            errno = self._errno()
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")

    def watch(self, path: Path) -> None:
        if self._add(self.fd, os.fsencode(path), WATCH_MASK) < 0:
            errno = self._errno()
            raise OSError(errno, f"inotify_add_watch: {os.strerror(errno)}")

    def close(self) -> None:
        os.close(self.fd)


class FileWatcher:
    """Calls ``on_wake`` each time the wake file is touched, until ``stop`` (same face as the
    PostgreSQL ``Listener``: ``start``, ``stop``, ``listening``, ``received``)."""

    def __init__(self, path: Path, on_wake: Callable[[], None]) -> None:
        self.path = path
        self.on_wake = on_wake
        self.received = 0
        self.watches = 0  # watches set up so far: one more each time the file was replaced
        self.listening = threading.Event()
        self._pipe: tuple[int, int] | None = None  # wakes the thread out of select() to stop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._pipe = os.pipe()
        self._thread = threading.Thread(
            target=self._run, args=(self._pipe[0],), name="stask-wake-file", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._pipe is None or self._thread is None:
            return
        stop_r, stop_w = self._pipe
        os.write(stop_w, b"x")
        self._thread.join(timeout=5)
        self._pipe = None
        os.close(stop_r)
        os.close(stop_w)

    def _run(self, stop_fd: int) -> None:
        try:
            inotify = _Inotify()
        except (OSError, AttributeError) as err:  # AttributeError: no inotify in this libc
            log.info("no inotify (%s): runners find tasks from other processes by polling", err)
            return
        try:
            while self._watch(inotify) and self._wait(inotify, stop_fd):
                self.listening.clear()  # the file was removed or replaced: watch the new one
        finally:
            self.listening.clear()
            inotify.close()

    def _watch(self, inotify: _Inotify) -> bool:
        try:
            # Created if missing without touching it: other runners need not wake for this.
            os.close(os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
            inotify.watch(self.path)
        except OSError as err:
            log.info("cannot watch %s (%s): polling only", self.path, err)
            return False
        self.watches += 1
        self.listening.set()
        return True

    def _wait(self, inotify: _Inotify, stop_fd: int) -> bool:
        """Wake the runner per batch of events; False once stopped, True if the file went."""
        while True:
            ready, _, _ = select.select([inotify.fd, stop_fd], [], [])
            if stop_fd in ready:
                return False
            try:
                data = os.read(inotify.fd, 4096)
            except BlockingIOError:
                continue
            masks = _events(data)
            self.received += 1
            self.on_wake()
            if any(mask & GONE for mask in masks):
                return True
