"""The held list: the files the mirror holds, per project, in one small SQLite database (WAL)
at the path ``Storage`` gives (``state/held.sqlite``). The one source of truth for "held":
eviction never takes a file whose sha256 is held here, the prefetcher records here what each
project holds (so removals can be undone and the disk checked), ``verify`` reads it.

    held   (project, filename, sha256, size): one row per file a project holds; a re-upload
           can list one filename twice with two hashes, and projects can share one file's
           bytes, so the key is all three; indexed by sha256, which eviction asks per file
    meta   key/value: ``migrated`` once the previous version's pins and held table are in

A sha256 is held while any row names it. Every change is a transaction; several processes
(workers, the prefetcher, verify) share the file. Blocking: call in a worker thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from proxy.sqlitedb import SharedDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    project TEXT NOT NULL, filename TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER,
    PRIMARY KEY (project, filename, sha256)
);
CREATE INDEX IF NOT EXISTS held_sha256 ON held (sha256, filename);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass(frozen=True, slots=True)
class HeldFile:
    filename: str
    sha256: str
    size: int | None  # None: not verified yet (held before its download), or an old row


class HeldFiles(SharedDatabase):
    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def hold(self, project: str, files: Iterable[HeldFile]) -> set[str]:
        """Record that ``project`` holds ``files``; the sha256s nobody held before. A size
        given replaces the one recorded; None keeps it (a claim made before the download)."""
        rows = [(project, f.filename, f.sha256, f.size) for f in files]
        with self._lock:  # already so (a resync claiming what it held): no write at all
            rows = [row for row in rows if not self._recorded(row)]
        if not rows:
            return set()
        with self.transaction() as db:
            new = {sha for _p, _f, sha, _z in rows if not _sha_held(db, sha)}
            db.executemany(
                "INSERT INTO held (project, filename, sha256, size) VALUES (?, ?, ?, ?) "
                "ON CONFLICT DO UPDATE SET size = coalesce(excluded.size, held.size)",
                rows,
            )
        return new

    def _recorded(self, row: tuple[str, str, str, int | None]) -> bool:
        found = self._db.execute(
            "SELECT size FROM held WHERE project = ? AND filename = ? AND sha256 = ?", row[:3]
        ).fetchone()
        return found is not None and (row[3] is None or found[0] == row[3])

    def release(self, project: str, files: Iterable[HeldFile]) -> set[str]:
        """``project`` no longer holds ``files``; the sha256s no longer held by anyone (what
        it released, and nobody else holds)."""
        rows = [(project, f.filename, f.sha256) for f in files]
        with self.transaction() as db:
            gone = {
                sha
                for _p, _f, sha in rows
                if db.execute(
                    "DELETE FROM held WHERE project = ? AND filename = ? AND sha256 = ?",
                    (project, _f, sha),
                ).rowcount
            }
            return {sha for sha in gone if not _sha_held(db, sha)}

    def held_files(self, project: str) -> list[HeldFile]:
        with self._lock:
            return [
                HeldFile(str(f), str(h), z)
                for f, h, z in self._db.execute(
                    "SELECT filename, sha256, size FROM held WHERE project = ?", (project,)
                )
            ]

    def iter_held(self, batch: int = 10_000) -> Iterator[tuple[str, HeldFile]]:
        """Every (project, file) held, read ``batch`` rows at a time (memory stays flat, and
        no read stays open while the caller works)."""
        after = ("", "", "")
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT project, filename, sha256, size FROM held"
                    " WHERE (project, filename, sha256) > (?, ?, ?)"
                    " ORDER BY project, filename, sha256 LIMIT ?",
                    (*after, batch),
                ).fetchall()
            if not rows:
                return
            for p, f, h, z in rows:
                yield str(p), HeldFile(str(f), str(h), z)
            after = (rows[-1][0], rows[-1][1], rows[-1][2])

    def iter_shas(self, batch: int = 10_000) -> Iterator[str]:
        """Every sha256 held, once each, in order."""
        after = ""
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT DISTINCT sha256 FROM held WHERE sha256 > ? ORDER BY sha256 LIMIT ?",
                    (after, batch),
                ).fetchall()
            if not rows:
                return
            yield from (str(sha) for (sha,) in rows)
            after = rows[-1][0]

    def is_held(self, sha256: str, filename: str | None = None) -> bool:
        """Whether any project holds these bytes (under ``filename``, when given)."""
        query, params = "SELECT 1 FROM held WHERE sha256 = ?", [sha256]
        if filename is not None:
            query, params = query + " AND filename = ?", [sha256, filename]
        with self._lock:
            return self._db.execute(query + " LIMIT 1", params).fetchone() is not None

    def figures(self) -> dict[str, int]:
        """Files held (each stored file once, however many projects hold it) and their bytes."""
        with self._lock:
            files, size = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM"
                " (SELECT sha256, filename, max(size) AS size FROM held GROUP BY sha256, filename)"
            ).fetchone()
        return {"files": int(files), "bytes": int(size)}

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None


def _sha_held(db: sqlite3.Connection, sha256: str) -> bool:
    return (
        db.execute("SELECT 1 FROM held WHERE sha256 = ? LIMIT 1", (sha256,)).fetchone() is not None
    )
