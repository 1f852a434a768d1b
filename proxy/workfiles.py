"""The cache directory's working files: downloads in progress (``tmp/``) and bookkeeping
(``state/``). Part of ``Storage``, which owns every path and hands these on; nobody else
names a directory of the cache.

    <cache>/tmp/    partial downloads (``.part``) and the locks electing their one writer
                    (``.lock``), a verified download kept briefly for followers (``.ok``)
    <cache>/state/  bookkeeping: locks (eviction, the scrub, the prefetch pass), the
                    prefetcher's database, the changelog followers read, local leases
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from proxy.errors import CacheUnusable
from proxy.locks import lock_held

# A part unwritten for this long is left over even if a process of its pid runs (pid reuse);
# a live download writes far more often (the read timeout is seconds).
STALE_PART = 3600.0
_PROC = Path("/proc")


def unusable(root: Path, exc: OSError | sqlite3.Error) -> CacheUnusable:
    """One line for an operator: which directory, what failed, which setting to change."""
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        reason += f" ({exc.filename})" if exc.filename else ""
    else:
        reason = f"its index database: {exc}"
    return CacheUnusable(
        f"cannot use the cache directory {root}: {reason}; set cache_dir "
        "(PYPI_PROXY_CACHE_DIR, --cache-dir) to a directory this user can write"
    )


class WorkFiles:
    def __init__(self, root: Path) -> None:
        """Made with their directories; OSError when they cannot be (``Storage`` says so)."""
        self.root = root
        self.tmp_dir = root / "tmp"
        self.state_dir = root / "state"
        for directory in (self.tmp_dir, self.state_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def check_writable(self) -> None:
        """Write and remove a file in tmp/, as every download does; CacheUnusable if it fails."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.tmp_dir, prefix="probe-", suffix=".probe"):
                pass
        except OSError as exc:
            raise unusable(self.root, exc) from None

    def part_path(self, key: str, suffix: str) -> Path:
        """A new temporary file of a download (``key`` is a Target's key: never a page's raw
        value), unique to this process and call."""
        return self.tmp_dir / f"{key}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"

    def lock_path(self, key: str) -> Path:
        """The lock electing one downloader of ``key`` across processes."""
        return self.tmp_dir / f"{key}.lock"

    def state_path(self, name: str) -> Path:
        """A bookkeeping file (locks, the prefetcher's database) of this cache directory."""
        if "/" in name or name.startswith("."):
            raise ValueError(f"not a state file name: {name!r}")
        return self.state_dir / name

    def sweep_tmp(self) -> int:
        """Remove partial downloads nobody is writing (left by a crash), and lock files nobody
        holds; returns how many partial downloads went."""
        removed = 0
        for entry in os.scandir(self.tmp_dir):
            if entry.name.endswith(".lock"):
                if not lock_held(Path(entry.path)):
                    # Safe even if someone is just taking it: take_lock re-checks the inode.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                continue
            if entry.name.endswith(".ok"):
                # A verified download kept briefly for followers (see proxy/follow.py).
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - entry.stat().st_mtime > 120:
                        os.unlink(entry.path)
                continue
            if not entry.name.endswith(".part"):
                continue
            lock_path = self.tmp_dir / (entry.name.split(".", 1)[0] + ".lock")
            if lock_held(lock_path):
                continue
            # The holder of a lock removes its file while holding it (proxy/locks.py), so an
            # absent lock says nothing: a part whose writer still runs is a download in
            # progress (a late worker's start, or verify beside a server, must not cut it),
            # unless it has not been written to for long (its pid may be another's by now).
            with contextlib.suppress(FileNotFoundError):
                idle = time.time() - entry.stat().st_mtime
                if _writer_running(entry.name) and idle < STALE_PART:
                    continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        return removed


def _writer_running(name: str) -> bool:
    """Whether the process that named a part (``<key>.<pid>-<token>.part``, see part_path)
    still runs; a cache directory's tmp/ is one machine's, so the pid is meaningful here."""
    try:
        pid = int(name.split(".")[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    if pid <= 0:
        return False
    if _PROC.is_dir():
        # A killed process stays a zombie until its parent reaps it (in a container whose
        # first process reaps nobody, for ever): it is no writer, though kill(pid, 0) works.
        try:
            stat = (_PROC / str(pid) / "stat").read_text()
        except FileNotFoundError:
            return False
        except OSError:
            pass
        else:
            return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"], ["x"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process, alive
    return True
