"""A local directory in front of a shared bucket: hits from the disk, the bucket as the truth.

Replicas share the bucket; each keeps its own local tier (``<cache>/files/``, the layout of
``proxy/localstore.py``), so a hot file is sent from a descriptor (sendfile) as without S3.

- ``stat``: the local copy if there is one; else the bucket's object (one HEAD), with no
  ``path``: what is held, for page views, verify and the prefetcher, at the cost of a HEAD.
- ``local_copy``: a hit on a file only in the bucket is copied in to ``<cache>/tmp/``, its
  sha256 checked while it is read, then renamed into the local tier: a client is only ever
  sent bytes verified on this machine. An object whose bytes do not match its key (damaged in
  the bucket, or written by something else) is deleted from the bucket and reported as absent,
  so it is fetched again from the upstream, never served. (With ``s3_redirect`` the client is
  sent to the bucket instead; pip and uv check the hash the page gives.)
- ``put``: into the local tier at once (the request that filled it is answered from there),
  then uploaded in the background (``proxy/uploads.py``: the queue, durable across a crash,
  and the thread sending it with conditional writes).
- The local tier is capped by ``local_cap`` (``local_copies_size``): least recently used
  local copies go first, but never one still waiting for upload (it is the only copy).
- ``remove``, ``iter_files``, ``read``: the bucket's (eviction, verify and the scrub work on
  what every replica shares), and the local copy goes too on ``remove``.
- ``check_copies``: verify and the scrub hash the local copy (what this replica serves), then
  the bucket's object behind it: a damaged object is deleted and uploaded again from the
  good local copy.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio

from proxy.errors import StoreUnavailable
from proxy.filestore import StoredFile
from proxy.localstore import LocalFileStore
from proxy.names import is_safe_filename, is_sha256
from proxy.s3store import S3FileStore
from proxy.uploads import Uploads, hashes_to

log = logging.getLogger(__name__)

LOW_WATER = 0.9  # trim the local tier to 90% of its cap, so trimming does not run per file
COPY_CHUNK = 1024 * 1024
MAX_QUEUED_TOUCHES = 10_000


class TieredFileStore:
    def __init__(
        self,
        local: LocalFileStore,
        bucket: S3FileStore,
        *,
        work_dir: Path,
        queue_dir: Path,
        local_cap: int | None = None,
    ) -> None:
        self.local = local
        self.bucket = bucket
        self.work_dir = work_dir
        self.queue_dir = queue_dir
        self.local_cap = local_cap
        self.uploads = Uploads(
            queue_dir,
            local,
            bucket,
            before_round=self._send_touches,
            after_upload=self._trim,
            after_damaged=self._dropped_local,
        )
        self._copying: dict[tuple[str, str], threading.Lock] = {}
        self._copying_lock = threading.Lock()
        self._local_bytes: int | None = None  # counted on first need
        self._trim_lock = threading.Lock()
        self._touches: collections.deque[tuple[StoredFile, float]] = collections.deque(
            maxlen=MAX_QUEUED_TOUCHES
        )
        self.damaged_dropped = 0

    def __repr__(self) -> str:
        return f"TieredFileStore({self.local.root!s}, {self.bucket!r})"

    @property
    def shared(self) -> bool:
        return True

    # -- the uploads (``proxy/uploads.py``) -------------------------------------------------

    def start(self) -> None:
        """Run the uploader thread (a server does; one-shot commands may not need it)."""
        self.uploads.start()

    def close(self, wait: float = 5.0) -> None:
        """Stop the uploader; what it did not send stays queued for the next start."""
        self.uploads.close(wait)

    def pending(self) -> list[tuple[str, str]]:
        """(sha256, filename) of every file waiting for upload."""
        return self.uploads.pending()

    def upload_pending(self) -> int:
        """Upload every queued file once; how many failed (left queued for a retry)."""
        return self.uploads.upload_pending()

    # -- the FileStore interface -------------------------------------------------------------

    def stat(self, sha256: str, filename: str) -> StoredFile | None:
        found = self.local.stat(sha256, filename)
        if found is not None:
            return found
        if not is_sha256(sha256) or not is_safe_filename(filename):
            return None
        return self.bucket.stat(sha256, filename)

    def _copy_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._copying_lock:
            lock = self._copying.get(key)
            if lock is None:
                lock = self._copying[key] = threading.Lock()
            return lock

    def local_copy(self, remote: StoredFile) -> StoredFile | None:
        """The bucket's object as a verified local copy; None (and the object deleted) when
        its bytes do not hash to its key. One copy per file at a time in this process: a
        second request for it waits and finds the first's."""
        key = (remote.sha256, remote.filename)
        with self._copy_lock(key):
            try:
                found = self.local.stat(*key)
                if found is not None:
                    return found
                part = self.work_dir / f"s3-{os.getpid()}-{secrets.token_hex(6)}.part"
                try:
                    digest = hashlib.sha256()
                    size = 0
                    with part.open("wb") as f:
                        for chunk in self.bucket.read(remote, COPY_CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
                            f.write(chunk)
                        f.flush()
                        os.fsync(f.fileno())
                    if digest.hexdigest() != remote.sha256 or size != remote.size:
                        self._drop_damaged(remote, size)
                        return None
                    stored, _ = self.local.put(part, *key)
                except FileNotFoundError:
                    return None  # removed from the bucket while we read it
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(part)
            finally:
                with self._copying_lock:
                    self._copying.pop(key, None)
        self._grew(stored.size)
        return stored

    async def stream_in(self, remote: StoredFile) -> AsyncIterator[bytes]:
        """The bucket's object, sent while it is copied in: its bytes as they come, but the
        last chunk held back until the whole was hashed, so a client never gets a damaged
        object complete (the transfer is cut, or a small file is a clean error); the copy
        is kept only when it checked out. For a plain GET: the first byte does not wait for
        the whole object as ``local_copy`` does."""
        part = self.work_dir / f"s3-{os.getpid()}-{secrets.token_hex(6)}.part"
        digest = hashlib.sha256()
        size = 0
        held: bytes | None = None
        try:
            async with await anyio.open_file(part, "wb") as f:
                async for chunk in self.bucket.stream(remote, 0, remote.size):
                    digest.update(chunk)
                    size += len(chunk)
                    await f.write(chunk)
                    if held is not None:
                        yield held
                    held = chunk
                await f.flush()
                await anyio.to_thread.run_sync(os.fsync, f.wrapped.fileno())
            if digest.hexdigest() != remote.sha256 or size != remote.size:
                await anyio.to_thread.run_sync(self._drop_damaged, remote, size)
                raise StoreUnavailable(f"object store: {remote.filename} is damaged; dropped")
            await anyio.to_thread.run_sync(self._keep, part, remote)
            if held is not None:
                yield held
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)

    def _keep(self, part: Path, remote: StoredFile) -> None:
        stored, created = self.local.put(part, remote.sha256, remote.filename)
        if created:
            self._grew(stored.size)

    def _drop_damaged(self, remote: StoredFile, size: int) -> None:
        self.damaged_dropped += 1
        log.warning(
            "%s: the bucket's copy is damaged (%d bytes, not the %s its key names); deleted",
            remote.filename,
            size,
            remote.sha256[:12],
        )
        with contextlib.suppress(StoreUnavailable):
            self.bucket.remove(remote.sha256, remote.filename)

    def _dropped_local(self, stored: StoredFile) -> None:
        """The uploader found a local copy damaged and removed it (never sent)."""
        self.damaged_dropped += 1
        self._grew(-stored.size)

    def check_copies(self, stored: StoredFile) -> int:
        """Behind a local copy found whole (verify, the scrub), the bucket's object too: one
        whose bytes are not the local copy's (damaged in the bucket) is deleted and the good
        local copy queued for upload again. How many copies were mended (0 or 1). A file
        waiting for upload, or gone from the bucket (evicted), has no object to check."""
        key = (stored.sha256, stored.filename)
        if stored.path is None or self.uploads.is_queued(*key):
            return 0  # the bucket's object was the one hashed; or not there yet
        remote = self._damaged_object(*key, size=stored.size)
        if remote is None:
            return 0
        with self.uploads.queued_first(*key):  # re-sent from the good local copy
            self._drop_damaged(remote, remote.size)
        return 1

    def _damaged_object(
        self, sha256: str, filename: str, size: int | None = None
    ) -> StoredFile | None:
        """The bucket's object if it is there and damaged (not ``size`` bytes, or bytes that
        do not hash to its key); None when whole, absent, or the bucket cannot be read."""
        try:
            remote = self.bucket.stat(sha256, filename)
            if remote is None:
                return None
            if size in (None, remote.size) and _digest(self.bucket.read(remote)) == sha256:
                return None
        except OSError as exc:  # StoreUnavailable: checked at the next pass
            log.warning("could not check the bucket's copy of %s: %s", filename, exc)
            return None
        return remote

    def put(self, source: Path, sha256: str, filename: str) -> tuple[StoredFile, bool]:
        """Into the local tier now (``source`` is moved there), into the bucket soon."""
        self.local.path_of(sha256, filename)  # ValueError for anything not storable
        self.uploads.add(sha256, filename)
        stored, created = self.local.put(source, sha256, filename)
        if created:
            self._grew(stored.size)
        self.uploads.wake()
        return stored, created

    def remove(self, sha256: str, filename: str) -> int:
        """From the bucket and the local tier, and off the upload queue; but when the local
        copy is the damaged one (callers remove a file whose size or hash was wrong), only
        the local copy, unless the bucket's object is damaged too: its good object is every
        replica's, maybe the mirror's last."""
        mine = self.local.stat(sha256, filename)
        if mine is not None and mine.path is not None and not hashes_to(mine.path, sha256):
            size = self.local.remove(sha256, filename)
            self._grew(-size)
            log.warning("%s: this replica's local copy was damaged; dropped it", filename)
            # Its bad bytes may be in the bucket too (rot between the uploader's hash and its
            # send): a damaged object goes too, so the file is fetched again, not kept bad.
            bad = self._damaged_object(sha256, filename)
            if bad is not None:
                self._drop_damaged(bad, bad.size)
            return size
        self.uploads.discard(sha256, filename)
        local = self.local.remove(sha256, filename)
        if local:
            self._grew(-local)
        remote = self.bucket.remove(sha256, filename)
        return max(local, remote)

    def touch(self, stored: StoredFile, now: float) -> None:
        """The local copy's access time now; the bucket's marker (rate-limited there) from
        the uploader thread: a hit, on the event loop, never waits for the network."""
        self.local.touch(stored, now)  # for the local tier's own order
        self._touches.append((stored, now))  # bounded: under a flood, old ones are dropped
        self.uploads.wake()

    def _send_touches(self) -> None:
        while self._touches:
            stored, now = self._touches.popleft()
            self.bucket.touch(stored, now)  # logs its own failures, never raises

    def iter_files(self) -> Iterator[StoredFile]:
        """The bucket's files, and those still waiting for upload (only here, so far)."""
        waiting = set(self.pending())
        for sha256, filename in waiting:
            stored = self.local.stat(sha256, filename)
            if stored is not None:
                yield stored
        for stored in self.bucket.iter_files():
            if (stored.sha256, stored.filename) not in waiting:
                yield stored

    def read(self, stored: StoredFile, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        if stored.path is not None:
            return self.local.read(stored, chunk_size)
        return self.bucket.read(stored, chunk_size)

    def stream(self, stored: StoredFile, start: int, end: int) -> AsyncIterator[bytes]:
        if stored.path is not None:
            return self.local.stream(stored, start, end)
        return self.bucket.stream(stored, start, end)

    def presign(self, stored: StoredFile, expires: float) -> str | None:
        """A URL into the bucket, or None while the file is not there yet."""
        if self.uploads.is_queued(stored.sha256, stored.filename):
            return None
        return self.bucket.presign(stored, expires)

    def figures(self) -> dict[str, object]:
        """For /stats: where files go and how the uploads stand (no endpoint, no credential;
        the counts are this process's since it started)."""
        return {
            "storage": {
                "url": self.bucket.config.url,
                "uploads_pending": len(self.pending()),
                "uploads_done": self.uploads.done,
                "uploads_failed": self.uploads.failed,
                "damaged_dropped": self.damaged_dropped,
                "local_copies_bytes": self.local_bytes(),
                "local_copies_size": self.local_cap,
            }
        }

    # -- the local tier's cap ----------------------------------------------------------------

    def local_bytes(self) -> int:
        if self._local_bytes is None:
            self._local_bytes = sum(f.size for f in self.local.iter_files())
        return self._local_bytes

    def _grew(self, size: int) -> None:
        if self._local_bytes is not None:
            self._local_bytes += size
        if self.local_cap is not None and self.local_bytes() > self.local_cap:
            self._trim()

    def _trim(self) -> int:
        """Drop least recently used local copies (uploaded ones only) to the low-water mark;
        the bytes freed. One trim at a time in this process; other processes may trim too,
        which only frees a little more than needed."""
        if self.local_cap is None:
            return 0
        if not self._trim_lock.acquire(blocking=False):
            return 0
        try:
            files = list(self.local.iter_files())
            total = sum(f.size for f in files)
            self._local_bytes = total
            target = int(self.local_cap * LOW_WATER)
            if total <= self.local_cap:
                return 0
            waiting = set(self.pending())
            freed = 0
            for stored in sorted(files, key=lambda f: f.atime):
                if total <= target:
                    break
                if (stored.sha256, stored.filename) in waiting:
                    continue  # its only copy: it goes once uploaded
                size = self.local.remove(stored.sha256, stored.filename)
                total -= size
                freed += size
            self._local_bytes = total
            if freed:
                log.info("local copies: freed %d bytes to stay under %d", freed, self.local_cap)
            return freed
        finally:
            self._trim_lock.release()


def _digest(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def wait_uploaded(store: TieredFileStore, timeout: float = 30.0) -> bool:
    """Upload what is queued, now, until nothing is left or ``timeout`` passes (tests, and
    a command that must leave nothing behind)."""
    deadline = time.monotonic() + timeout
    while store.pending():
        store.upload_pending()
        if not store.pending():
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)  # a failed upload, or an entry whose put is under way elsewhere
    return True
