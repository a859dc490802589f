"""One writer per folder: an exclusive operating-system lock on `FOLDER/.lock` for a writer's lifetime.

A training run, a resume, a staged run, a probe, a pretraining and a sweep's runs each hold the lock
of the folder they write. The lock is `flock` (POSIX; `msvcrt.locking` on Windows) on an open file,
so the operating system releases it when the process ends in any way, `kill -9` included: a folder
is never left locked by a dead process, and exact resume after a crash needs no manual step.
The holder writes its PID, host and start time into the file, so a refused second writer can say
who holds it. Readers (evaluate, report, predict, export) take no lock: they read checkpoints, which
are written atomically.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from skipseg.errors import SkipsegError

LOCK_NAME = ".lock"

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # the first byte; the holder's note starts after it
        except OSError:
            return False
        return True

    _NOTE_OFFSET = 1
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    _NOTE_OFFSET = 0


class FolderInUse(SkipsegError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """The exclusive lock of `folder` (created if missing). `acquire()` raises `FolderInUse` naming the
    folder and its holder; `release()` (or the end of the process) gives it back."""

    def __init__(self, folder: str | Path, what: str = "run folder") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        if self._fd is not None:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise SkipsegError(f"{self.folder}: exists and is not a folder; give --out a folder path")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # no O_TRUNC: the holder's note stays
        if not _try_lock(fd):
            os.close(fd)
            raise FolderInUse(f"{self.folder}: in use by another process ({describe_holder(self.path)}); "
                              f"wait for it to finish or stop it (a {self.what} has one writer)")
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, _NOTE_OFFSET)
        os.lseek(fd, _NOTE_OFFSET, os.SEEK_SET)
        os.write(fd, note)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (closing the file releases it); the lock file stays, as an empty note."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, _NOTE_OFFSET)
            os.close(fd)

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def describe_holder(lock_file: Path) -> str:
    """"PID 123 on host h since …" from a lock file's note ("holder unknown" when it has none yet)."""
    try:
        note = json.loads(lock_file.read_bytes()[_NOTE_OFFSET:] or b"{}")
        return f"PID {note['pid']} on {note['host']} since {note['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def locked_by(folder: str | Path) -> str | None:
    """Who holds `folder`'s lock ("PID 123 on host h since …"), or None when no live process does."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        if _try_lock(fd):
            return None  # nobody holds it (closing the file gives back the probe's lock)
        return describe_holder(path)
    finally:
        os.close(fd)
