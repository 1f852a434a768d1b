"""A small in-memory tier of hot package files, per process, so that a hot hit costs no
open, read or close and its bytes go to the socket from one shared buffer (issue 10).

Invariants:
- Only verified bytes are held: a file is read whole from the descriptor of a stored hit and
  kept only if it hashes to its sha256 (a copy damaged on disk is never taken into memory).
- An entry is used only while the stored file is the very one it was read from: the caller
  passes the stat it has just made (``StoredFile``), and size, mtime and inode must all match.
  A file replaced, evicted or fetched again is a miss here, and its entry is dropped.
- Bounded: the held bytes never exceed ``max_bytes``; one file may take at most a quarter of
  it; least recently used entries go first. Files are taken in on their second hit, so a
  one-off download does not push hot files out. The bytes being read in at once are bounded
  too (at most a quarter of ``max_bytes``): many hot files' second hits arriving together
  must not each read a whole file into memory beside the tier.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import dataclass

from proxy.filestore import StoredFile

MAX_CANDIDATES = 10_000  # files seen once, waiting for a second hit (bounded, then cleared)
READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Held:
    data: bytes
    size: int
    mtime: float
    inode: int | None

    def matches(self, stored: StoredFile) -> bool:
        return (
            stored.size == self.size
            and stored.mtime == self.mtime
            and stored.inode == self.inode
            and stored.inode is not None
        )


class MemoryFiles:
    """Hot stored files held in memory, up to ``max_bytes`` (0: none are)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_file = max_bytes // 4
        self.held_bytes = 0
        self._held: OrderedDict[tuple[str, str], Held] = OrderedDict()
        self._seen: set[tuple[str, str]] = set()
        self._loading: set[tuple[str, str]] = set()
        self.loading_bytes = 0

    def __len__(self) -> int:
        return len(self._held)

    def get(self, stored: StoredFile) -> Held | None:
        """The held copy of ``stored``, if it is still the same file on disk."""
        key = (stored.sha256, stored.filename)
        held = self._held.get(key)
        if held is None:
            return None
        if not held.matches(stored):
            self._drop(key)
            return None
        self._held.move_to_end(key)
        return held

    def wants(self, stored: StoredFile) -> bool:
        """Whether this hit should take the file into memory (its second hit, and it fits).
        True reserves the load: the caller then reads (``read_verified``, in a worker
        thread) and always calls ``keep``."""
        if stored.size > self.max_file or stored.inode is None or stored.path is None:
            return False
        key = (stored.sha256, stored.filename)
        if key in self._loading or key in self._held:
            return False
        if self.loading_bytes + stored.size > self.max_file:
            return False  # others are being read in: a later hit takes this one
        if key not in self._seen:
            if len(self._seen) >= MAX_CANDIDATES:
                self._seen.clear()
            self._seen.add(key)
            return False
        self._seen.discard(key)
        self._loading.add(key)
        self.loading_bytes += stored.size
        return True

    def keep(self, stored: StoredFile, data: bytes | None) -> Held | None:
        """End the load ``wants`` reserved: hold ``data`` (what ``read_verified`` gave for
        ``stored``; None: it did not verify). Called on the event loop, like ``get``."""
        key = (stored.sha256, stored.filename)
        if key in self._loading:
            self._loading.discard(key)
            self.loading_bytes -= stored.size
        if data is None:
            return None
        held = Held(data, stored.size, stored.mtime, stored.inode)
        self._drop(key)
        self._held[key] = held
        self.held_bytes += len(data)
        while self.held_bytes > self.max_bytes and self._held:
            self._drop(next(iter(self._held)))
        return held

    def _drop(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self.held_bytes -= len(held.data)


def read_verified(fd: int, stored: StoredFile) -> bytes | None:
    """The file's bytes read from ``fd``, if there are exactly ``stored.size`` of them and
    they hash to its sha256; None otherwise. Blocking: call it in a worker thread."""
    parts: list[bytes] = []
    digest = hashlib.sha256()
    offset = 0
    while offset < stored.size:
        chunk = os.pread(fd, min(READ_CHUNK, stored.size - offset), offset)
        if not chunk:
            return None
        digest.update(chunk)
        parts.append(chunk)
        offset += len(chunk)
    if os.pread(fd, 1, offset) or digest.hexdigest() != stored.sha256:
        return None
    return b"".join(parts)
