"""Opening the SQLite file: private file modes, pragmas (WAL), busy retries, error translation."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from .model import RunStoreError

_T = TypeVar("_T")


def _create_private(path: Path) -> None:
    """Create the directory (0700) and the empty database file (0600) if missing."""
    missing = []
    directory = path.parent
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)


def _configure(connection: sqlite3.Connection, path: Path, timeout_s: float) -> None:
    with _translated(path):
        connection.execute(f"PRAGMA busy_timeout = {max(0, int(timeout_s * 1000))}")
        connection.execute("PRAGMA foreign_keys = ON")
        # Switching to WAL needs a moment alone with the file; it is persistent, so only the
        # first opener of a new file ever waits here.
        _retry_busy(lambda: connection.execute("PRAGMA journal_mode = WAL").fetchone(), timeout_s)
        connection.execute("PRAGMA synchronous = NORMAL")


def _retry_busy(action: Callable[[], _T], timeout_s: float) -> _T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            busy = "locked" in str(error) or "busy" in str(error)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """sqlite3's errors, as RunStoreError naming the file."""
    try:
        yield
    except sqlite3.Error as error:
        raise RunStoreError(f"run store {path}: {error}") from error
