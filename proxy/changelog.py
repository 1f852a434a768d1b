"""The changes this proxy applied to what it holds, in the upstream's serial numbers: what an
edge proxy (or bandersnatch) following this one reads through XML-RPC (issue 12).

Each stored page is compared with what the log last saw of that project (its files and their
yanked state, kept here, so the diff never needs the old page record) and the differences are
rows like the public index's: ``(name, version, timestamp, action, serial)``.

Serials come from the pages, and pages are not stored in serial order (a prefetch pass works on
many projects at once; on-demand fetches come whenever clients ask). A follower that read up
to serial S must never be handed, later, a row below S. So the log has a watermark: after a
prefetch pass that made the mirror whole at serial S, everything at or below S is final, and
only rows up to the watermark are shown. A cache that never ran a pass has no such promise to
keep; its watermark is simply the newest serial logged (documented in the README).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)

from proxy.models import ProjectPage
from proxy.sqlitedb import SharedDatabase

MAX_ROWS = 50_000  # per changelog_since_serial call, as the public index pages it
REMOVE_PROJECT = "remove project"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL, version TEXT, ts INTEGER NOT NULL, action TEXT NOT NULL,
    serial INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS changes_serial ON changes (serial, id);
CREATE TABLE IF NOT EXISTS seen (
    name TEXT NOT NULL, filename TEXT NOT NULL, yanked INTEGER NOT NULL,
    PRIMARY KEY (name, filename)
);
CREATE TABLE IF NOT EXISTS projects (name TEXT PRIMARY KEY, serial INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Change:
    name: str
    version: str | None
    timestamp: int
    action: str
    serial: int

    def row(self) -> list[object]:
        """As XML-RPC sends it (the public index sends the version as a string or None)."""
        return [self.name, self.version, self.timestamp, self.action, self.serial]


def version_of(filename: str) -> str | None:
    """The release a distribution's filename belongs to; None for names no tool can read."""
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename, ValueError):
        return None


def _kind(filename: str) -> str:
    return "py3" if filename.endswith(".whl") else "source"


def page_changes(name: str, before: dict[str, bool], page: ProjectPage, now: int) -> list[Change]:
    """What changed from ``before`` (filename -> yanked, as last logged) to ``page``. Pure."""
    serial = page.serial
    if serial is None:  # a page without a serial cannot be followed by serial
        return []
    after = {f.filename: bool(f.yanked) for f in page.files}
    changes: list[Change] = []
    known = {version_of(f) for f in before}
    for filename in sorted(after.keys() - before.keys()):
        version = version_of(filename)
        if version not in known:
            changes.append(Change(name, version, now, "new release", serial))
            known.add(version)
        changes.append(Change(name, version, now, f"add {_kind(filename)} file {filename}", serial))
    for filename in sorted(before.keys() - after.keys()):
        changes.append(Change(name, version_of(filename), now, f"remove file {filename}", serial))
    for filename in sorted(after.keys() & before.keys()):
        if after[filename] != before[filename]:
            action = "yank release" if after[filename] else "unyank release"
            changes.append(Change(name, version_of(filename), now, action, serial))
    if not changes and not before and not after:
        # A project with no files at all still exists for a follower.
        changes.append(Change(name, None, now, "create", serial))
    return changes


class Changelog(SharedDatabase):
    """The log in ``<cache>/state/changelog.sqlite``, shared by every process (WAL)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    # -- writing -----------------------------------------------------------------------------

    def page_saved(self, name: str, page: ProjectPage, now: float | None = None) -> int:
        """Log what a newly stored page changed; the number of rows added."""
        if page.serial is None:
            return 0
        with self.transaction() as db:
            before = {
                filename: bool(yanked)
                for filename, yanked in db.execute(
                    "SELECT filename, yanked FROM seen WHERE name = ?", (name,)
                )
            }
            row = db.execute("SELECT serial FROM projects WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] > page.serial:
                return 0  # an older page than one logged (the trust rules refuse it anyway)
            stamp = int(now or time.time())
            changes = page_changes(name, before, page, stamp)
            if row is not None and changes and changes[0].action == "create":
                changes = []  # still empty: nothing new
            if row is not None and not changes and page.serial > row[0]:
                # Something else on the page changed (requires-python, status): followers
                # must fetch it again too.
                changes = [Change(name, None, stamp, "update", page.serial)]
            self._insert(db, changes)
            db.execute("DELETE FROM seen WHERE name = ?", (name,))
            db.executemany(
                "INSERT INTO seen (name, filename, yanked) VALUES (?, ?, ?)",
                [(name, f.filename, int(bool(f.yanked))) for f in page.files],
            )
            db.execute(
                "INSERT OR REPLACE INTO projects (name, serial) VALUES (?, ?)", (name, page.serial)
            )
            return len(changes)

    def project_removed(self, name: str, now: float | None = None) -> bool:
        """Log that the proxy no longer holds ``name``. The row takes the next serial after
        the newest logged: the upstream's own number for the removal is not known here."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone() is None:
                return False
            serial = int(db.execute("SELECT COALESCE(MAX(serial), 0) FROM changes").fetchone()[0])
            self._insert(
                db, [Change(name, None, int(now or time.time()), REMOVE_PROJECT, serial + 1)]
            )
            db.execute("DELETE FROM seen WHERE name = ?", (name,))
            db.execute("DELETE FROM projects WHERE name = ?", (name,))
            return True

    def hold(self) -> None:
        """A prefetch pass begins: from now on rows show only up to a settled watermark (the
        newest logged so far, if none was settled before)."""
        with self.transaction() as db:
            newest = db.execute("SELECT COALESCE(MAX(serial), 0) FROM changes").fetchone()[0]
            db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('watermark', ?)", (newest,))

    def settle(self, serial: int | None = None) -> None:
        """A prefetch pass made the mirror whole at ``serial`` (for a pass without a serial of
        its own, at the newest logged): rows up to it are final."""
        with self.transaction() as db:
            if serial is None:
                serial = db.execute("SELECT COALESCE(MAX(serial), 0) FROM changes").fetchone()[0]
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('watermark', ?)", (serial,)
            )

    @staticmethod
    def _insert(db: sqlite3.Connection, changes: Iterable[Change]) -> None:
        db.executemany(
            "INSERT INTO changes (name, version, ts, action, serial) VALUES (?, ?, ?, ?, ?)",
            [(c.name, c.version, c.timestamp, c.action, c.serial) for c in changes],
        )

    def is_empty(self) -> bool:
        """Never written (a lost log, or a cache older than it): rebuild() it."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM projects LIMIT 1").fetchone() is not None:
                return False
            return self._db.execute("SELECT 1 FROM meta LIMIT 1").fetchone() is None

    def rebuild(self, pages: Iterable[ProjectPage]) -> int:
        """Start again from what the cache holds (the log was lost: a wiped state directory, a
        cache from before the log existed): every project at its page's serial, with one
        "update" row at that serial, and the watermark at the newest. A page's serial is its
        project's latest change, so a follower asking since any serial still hears of every
        project that changed after it (never fewer; perhaps a few more). Returns the projects
        logged."""
        count = newest = 0
        stamp = int(time.time())
        with self.transaction() as db:
            for page in pages:
                if page.serial is None:
                    continue
                db.executemany(
                    "INSERT OR REPLACE INTO seen (name, filename, yanked) VALUES (?, ?, ?)",
                    [(page.name, f.filename, int(bool(f.yanked))) for f in page.files],
                )
                db.execute(
                    "INSERT OR REPLACE INTO projects (name, serial) VALUES (?, ?)",
                    (page.name, page.serial),
                )
                self._insert(db, [Change(page.name, None, stamp, "update", page.serial)])
                count += 1
                newest = max(newest, page.serial)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('watermark', ?)", (newest,)
            )
        return count

    # -- reading -----------------------------------------------------------------------------

    def last_serial(self) -> int:
        """The watermark: every row at or below it is final."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'watermark'").fetchone()
            if row is not None:
                return int(row[0])
            newest = self._db.execute("SELECT COALESCE(MAX(serial), 0) FROM changes").fetchone()
            return int(newest[0])

    def since(self, serial: int, limit: int = MAX_ROWS) -> list[Change]:
        """Rows after ``serial`` up to the watermark, oldest first, at most ``limit``, never
        cutting one serial's rows in two (a follower asks again from the last serial it got)."""
        top = self.last_serial()
        with self._lock:
            rows = self._db.execute(
                "SELECT name, version, ts, action, serial FROM changes "
                "WHERE serial > ? AND serial <= ? ORDER BY serial, id LIMIT ?",
                (serial, top, limit + 1),
            ).fetchall()
            if len(rows) > limit:
                last = rows[limit][4]
                kept = [r for r in rows[:limit] if r[4] != last]
                if not kept:  # one serial with more rows than a page: send all of it
                    kept = self._db.execute(
                        "SELECT name, version, ts, action, serial FROM changes "
                        "WHERE serial = ? ORDER BY id",
                        (last,),
                    ).fetchall()
                rows = kept
        return [Change(*row) for row in rows]

    def packages_with_serial(self) -> dict[str, int]:
        """Every project held, with the serial of its stored page."""
        with self._lock:
            return dict(self._db.execute("SELECT name, serial FROM projects").fetchall())
