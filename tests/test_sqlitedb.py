"""Processes opening one new shared SQLite file at once (a server's workers starting on a new
cache, a prefetch beside them): every open succeeds."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from proxy.sqlitedb import open_shared

PROCESSES = 6
ROUNDS = 120  # the race showed about once in 240 opens: this many leave it no room to hide


def _open(path: str) -> str:
    try:
        db = open_shared(Path(path))
        db.executescript("CREATE TABLE IF NOT EXISTS t (a INTEGER);")
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        db.close()
        return str(mode)
    except Exception as exc:  # reported, not raised: the count below says how many failed
        return f"{type(exc).__name__}: {exc}"


def test_open_shared__new_file_opened_by_many_processes_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(PROCESSES) as pool:
        results = [
            pool.apply_async(_open, (str(tmp_path / f"db{r}.sqlite"),))
            for r in range(ROUNDS)
            for _ in range(PROCESSES)
        ]
        answers = [r.get(timeout=120) for r in results]
    failed = [a for a in answers if a != "wal"]
    assert failed == [] and len(answers) == ROUNDS * PROCESSES
