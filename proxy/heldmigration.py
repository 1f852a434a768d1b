"""Bringing a cache directory of the previous version into the held list, once, on open.

The previous version kept "held" twice: a ``pin:<sha256>`` key in the index (diskcache) per file
the prefetcher pinned, and the prefetcher's ``files`` table in ``state/prefetch.sqlite``
(project, filename, sha256, size; older still keyed by (project, filename) alone). Both go into
the held list in one transaction, which also sets ``migrated``; then the old keys and table are
removed. A pin no row explains (a sync killed between pinning and recording) is kept held,
under the project ``""`` (no project's name), for each stored file with that sha256: it kept
the file from eviction before, and still does. A pin of bytes the store does not hold protects
nothing and is dropped.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from proxy.filestore import StoredFile
from proxy.heldfiles import HeldFiles

log = logging.getLogger(__name__)

OLD_PIN = "pin:"
UNKNOWN_PROJECT = ""  # the holder of a pin the previous version recorded no project for
MIGRATED = "migrated"


def migrate(
    held: HeldFiles,
    index: Any,
    prefetch_db: Path,
    stored: Callable[[], Iterable[StoredFile]],
) -> int:
    """Move the old pins (``index``: the diskcache) and the old prefetch table into ``held``
    unless done before; how many rows were added. ``stored`` lists the store's files, read only
    when some pin has no row."""
    if held.get_meta(MIGRATED) is not None:
        return 0
    pins = _old_pins(index)
    old_table = _old_rows(prefetch_db)
    rows = old_table or []
    with held.transaction() as db:
        if db.execute("SELECT 1 FROM meta WHERE key = ?", (MIGRATED,)).fetchone():
            return 0  # another process did it meanwhile
        db.executemany(
            "INSERT OR IGNORE INTO held (project, filename, sha256, size) VALUES (?, ?, ?, ?)",
            rows,
        )
        orphans = pins - {sha for _p, _f, sha, _z in rows}
        extra = []
        if orphans:
            extra = [
                (UNKNOWN_PROJECT, s.filename, s.sha256, s.size)
                for s in stored()
                if s.sha256 in orphans
            ]
            db.executemany("INSERT OR IGNORE INTO held VALUES (?, ?, ?, ?)", extra)
        db.execute("INSERT INTO meta (key, value) VALUES (?, '1')", (MIGRATED,))
    _drop_old(index, pins, prefetch_db, old_table is not None)
    if rows or pins:
        log.info(
            "held list made from the previous version's: %d rows, %d pins (%d with no project)",
            len(rows),
            len(pins),
            len(extra),
        )
    return len(rows) + len(extra)


def _old_pins(index: Any) -> set[str]:
    found = index._sql(
        "SELECT key FROM Cache WHERE key > ? AND key < ?",
        (OLD_PIN, OLD_PIN[:-1] + chr(ord(OLD_PIN[-1]) + 1)),
    ).fetchall()
    return {str(key)[len(OLD_PIN) :] for (key,) in found}


def _old_rows(path: Path) -> list[tuple[str, str, str, int | None]] | None:
    """The old table's rows; None when there is no such table."""
    if not path.exists():
        return None
    db = sqlite3.connect(path, timeout=60)
    try:
        if not _has_files_table(db):
            return None
        return [
            (str(p), str(f), str(h), z)
            for p, f, h, z in db.execute("SELECT project, filename, sha256, size FROM files")
        ]
    finally:
        db.close()


def _has_files_table(db: sqlite3.Connection) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'files'"
    return db.execute(query).fetchone() is not None


def _drop_old(index: Any, pins: set[str], prefetch_db: Path, table: bool) -> None:
    """Remove what was migrated: nothing reads it any more (left behind by a crash here, it
    is ignored, as ``migrated`` is set)."""
    for sha in pins:
        index.delete(OLD_PIN + sha)
    if table:
        db = sqlite3.connect(prefetch_db, timeout=60)
        try:
            db.execute("DROP TABLE IF EXISTS files")
            db.commit()
        finally:
            db.close()
