"""Where package files live: the interface every file store implements, and what it returns.

Files are content-addressed: a stored file is named by its sha256 and its filename, and a store
only ever receives bytes that were verified first (see ``proxy/fill.py``), so an object that
exists is whole and right. Two implementations:

- ``LocalFileStore`` (``proxy/localstore.py``): ``<cache>/files/ab/<sha256>/<filename>``, the
  layout every earlier version wrote; hits are sent from a descriptor (sendfile).
- ``S3FileStore`` (``proxy/s3store.py``): the same keys under a bucket prefix, shared by
  replicas; conditional writes, so two replicas storing one file never clobber each other.

Methods are synchronous (called from worker threads, like diskcache); only ``stream`` is async,
because a hit from an object store is read while it is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One stored file, as the store saw it when asked."""

    sha256: str
    filename: str
    size: int
    mtime: float  # when it was stored
    atime: float  # the last access the store knows of (for least-recently-used eviction)
    location: str  # for people: a path or an object URL, never with credentials
    path: Path | None = None  # set by stores on a local disk: the file a hit is sent from
    inode: int | None = None  # on a local disk: tells a file replaced at the same path


class FileStore(Protocol):
    """What the cache needs from the place files live."""

    @property
    def shared(self) -> bool:
        """True for a store other replicas also write (their changes appear without us)."""
        ...

    def stat(self, sha256: str, filename: str) -> StoredFile | None:
        """The stored file, or None when the store does not hold it."""
        ...

    def put(self, source: Path, sha256: str, filename: str) -> tuple[StoredFile, bool]:
        """Store a verified local file. A store on the local disk moves ``source`` into place
        (atomically); another copies it and leaves ``source`` to the caller. Returns the stored
        file and whether this call created it (False: it was there already, and the bytes are
        the same, since the key is their sha256)."""
        ...

    def remove(self, sha256: str, filename: str) -> int:
        """Delete one stored file; the bytes freed (0 if it was already gone)."""
        ...

    def touch(self, stored: StoredFile, now: float) -> None:
        """Record an access, for eviction; may be coarse (callers do it once in a while)."""
        ...

    def iter_files(self) -> Iterator[StoredFile]:
        """Every stored file, in no particular order."""
        ...

    def read(self, stored: StoredFile, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        """The file's bytes, for hashing (verify, scrub); OSError when it cannot be read."""
        ...

    def stream(self, stored: StoredFile, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of the file, read as they are sent."""
        ...

    def presign(self, stored: StoredFile, expires: float) -> str | None:
        """A URL a client may fetch the file from directly for ``expires`` seconds, or None
        when the store cannot give one (a local directory)."""
        ...
