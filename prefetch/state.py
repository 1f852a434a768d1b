"""The prefetcher's persistent state: a small SQLite database in ``<cache>/state/``.

    meta      key/value: mirror serial (the upstream serial the mirror is whole at), the serial
              up to which changes are already queued, last run, result and error
    projects  per project: the serial it was last synced at
    queue     projects still to sync, with the serial each must reach, attempts so far, and
              whether the upstream's changelog or root listing said the project is gone
    root      scratch: a streamed root index, diffed against ``projects`` in SQL

What each project holds is not here but on the core's held list (``Mirror.hold``); a state
file of the previous version, with its ``files`` table, has that table moved there when the
cache is opened (``proxy/heldmigration.py``).

Every change is a transaction, so a run killed at any point resumes from a consistent queue.
Blocking: async callers run these methods in a worker thread; a lock serialises them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proxy.sqlitedb import SharedDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS projects (name TEXT PRIMARY KEY, serial INTEGER);
CREATE TABLE IF NOT EXISTS queue (
    name TEXT PRIMARY KEY, serial INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    gone INTEGER NOT NULL DEFAULT 0
);
"""


class PrefetchState(SharedDatabase):
    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)
        self.implausible_root: tuple[int, int] | None = None  # see root_diff
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(queue)")}
        if "gone" not in columns:  # a state file from before the column
            self._db.execute("ALTER TABLE queue ADD COLUMN gone INTEGER NOT NULL DEFAULT 0")

    # -- meta --------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, **values: Any) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    # -- projects and queue ------------------------------------------------------------------

    def project_serial(self, name: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT serial FROM projects WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def enqueue(self, items: Iterable[tuple[str, int | None]], *, gone: bool = False) -> int:
        """Queue projects; an entry already queued keeps the higher serial, and takes the newest
        word on whether the upstream says it is ``gone``. Returns rows seen."""
        rows = [(name, serial, int(gone)) for name, serial in items]
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO queue (name, serial, gone) VALUES (?, ?, ?) ON CONFLICT(name) DO "
                "UPDATE SET serial = max(coalesce(excluded.serial, 0), coalesce(queue.serial, 0)),"
                " gone = excluded.gone",
                rows,
            )
        return len(rows)

    def requeue(self, names: Iterable[str], attempts: int) -> int:
        """Queue projects found wanting after a round (a page or a held file missing), for the
        round that runs ``attempts``; their serial stays what it was."""
        rows = [(name, attempts) for name in names]
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO queue (name, serial, attempts) VALUES (?, NULL, ?) "
                "ON CONFLICT(name) DO UPDATE SET attempts = excluded.attempts",
                rows,
            )
        return len(rows)

    def listed_gone(self, name: str) -> bool:
        """Whether the change detection saw the upstream drop ``name`` (changelog or root)."""
        with self._lock:
            row = self._db.execute("SELECT gone FROM queue WHERE name = ?", (name,)).fetchone()
        return bool(row and row[0])

    def project_names(self) -> list[str]:
        """The projects the mirror holds."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT name FROM projects")]

    def queue_batch(self, after: str, limit: int) -> list[tuple[str, int | None, int]]:
        with self._lock:
            return list(
                self._db.execute(
                    "SELECT name, serial, attempts FROM queue WHERE name > ? ORDER BY name LIMIT ?",
                    (after, limit),
                )
            )

    def queue_length(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM queue").fetchone()[0])

    def done(self, name: str, serial: int | None, *, gone: bool = False) -> None:
        """A project is synced (its files held, ``Mirror.hold``): drop it from the queue,
        record its serial; ``gone``: it left the upstream, and the mirror."""
        with self.transaction() as db:
            db.execute("DELETE FROM queue WHERE name = ?", (name,))
            if gone:
                db.execute("DELETE FROM projects WHERE name = ?", (name,))
                return
            db.execute(
                "INSERT OR REPLACE INTO projects (name, serial) VALUES (?, ?)", (name, serial or 0)
            )

    def failed(self, name: str) -> int:
        with self.transaction() as db:
            db.execute("UPDATE queue SET attempts = attempts + 1 WHERE name = ?", (name,))
            row = db.execute("SELECT attempts FROM queue WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def reset_attempts(self) -> None:
        with self.transaction() as db:
            db.execute("UPDATE queue SET attempts = 0")

    # -- diffing a streamed root index -------------------------------------------------------

    def root_begin(self) -> None:
        with self.transaction() as db:
            db.execute("DROP TABLE IF EXISTS root")
            db.execute("CREATE TABLE root (name TEXT PRIMARY KEY, serial INTEGER)")

    def root_add(self, rows: list[tuple[str, int | None]]) -> None:
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO root (name, serial) VALUES (?, ?)", rows)

    @staticmethod
    def _root_rows(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT count(*) FROM root").fetchone()[0])

    def root_diff(self, selection: set[str] | None) -> int:
        """Queue projects the root says changed, and those it no longer lists; returns how many.
        A root that lists too few of the mirrored projects to be believed flags none as gone,
        and leaves (listed, mirrored) in ``implausible_root``."""
        self.implausible_root = None
        with self.transaction() as db:
            before = db.execute("SELECT count(*) FROM queue").fetchone()[0]
            if selection is not None:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS selection (name TEXT PRIMARY KEY)")
                db.execute("DELETE FROM selection")
                db.executemany(
                    "INSERT OR IGNORE INTO selection VALUES (?)", [(n,) for n in selection]
                )
                db.execute("DELETE FROM root WHERE name NOT IN (SELECT name FROM selection)")
            db.execute(
                "INSERT INTO queue (name, serial) SELECT r.name, r.serial FROM root r "
                "LEFT JOIN projects p ON p.name = r.name "
                "WHERE p.serial IS NULL OR r.serial IS NULL OR r.serial > p.serial "
                "ON CONFLICT(name) DO UPDATE SET serial = "
                "max(coalesce(excluded.serial, 0), coalesce(queue.serial, 0)), gone = 0"
            )
            db.execute("UPDATE queue SET gone = 0 WHERE name IN (SELECT name FROM root)")
            # Gone from the root: queue with no serial, marked gone; the sync removes it only
            # if its page answers 404 too. Only from a root that looks like the index: an
            # empty or cut-short listing (a maintenance page, a dropped transfer) flags nothing.
            count = (
                "SELECT count(*), coalesce(sum(name IN (SELECT name FROM root)), 0) FROM projects"
            )
            if selection is not None:
                count += " WHERE name IN (SELECT name FROM selection)"
            mirrored, listed = db.execute(count).fetchone()
            if plausible_listing(int(listed), int(mirrored), total=self._root_rows(db)):
                gone = (
                    "SELECT name, NULL, 1 FROM projects WHERE name NOT IN (SELECT name FROM root)"
                )
                if selection is not None:
                    gone += " AND name IN (SELECT name FROM selection)"
                db.execute(
                    f"INSERT INTO queue (name, serial, gone) {gone} "
                    "ON CONFLICT(name) DO UPDATE SET gone = 1"
                )
            else:
                self.implausible_root = (int(listed), int(mirrored))
            after = db.execute("SELECT count(*) FROM queue").fetchone()[0]
            db.execute("DROP TABLE root")
        return int(after - before)

    # -- figures -----------------------------------------------------------------------------

    def figures(self) -> dict[str, int]:
        with self._lock:
            projects = self._db.execute("SELECT count(*) FROM projects").fetchone()[0]
            queue = self._db.execute("SELECT count(*) FROM queue").fetchone()[0]
        return {"projects": projects, "queue": queue}


def plausible_listing(listed: int, mirrored: int, *, total: int) -> bool:
    """Whether a listing that names ``listed`` of the ``mirrored`` projects (and ``total`` in
    all) looks like the index, so that what it leaves out may be taken as gone: it is not empty
    and, the one project in question aside, names at least half of what the mirror holds. A
    real index loses a project at a time; one that loses half the mirror at once is a broken or
    cut-short answer."""
    return total > 0 and listed * 2 >= mirrored - 1
