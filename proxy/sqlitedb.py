"""Opening the SQLite files several processes share (the held list, the changelog, the
prefetcher's state): WAL, so readers never wait for the writer."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# How long an open waits for other processes opening the same new file at once.
OPEN_PATIENCE = 60.0


def open_shared(path: Path) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, autocommit (callers BEGIN themselves), usable
    from any thread (callers hold their own lock).

    Switching a new file to WAL takes an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy timeout, to a process switching it at the same moment
    (a server's workers all starting on a new cache): the switch is tried again, not failed.
    """
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
    deadline = time.monotonic() + OPEN_PATIENCE
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)
    db.execute("PRAGMA synchronous=NORMAL")
    return db


class SharedDatabase:
    """One connection to a shared file, its schema made, guarded by one lock: what the held
    list, the changelog and the prefetcher's state are built on."""

    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = open_shared(path)
        self._db.executescript(schema)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers of every process take turns)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
