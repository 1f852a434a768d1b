"""The upload queue of a tiered store (``proxy/tiered.py``): the files stored on this disk and
not yet in the bucket, and the thread that sends them.

What waits for upload is an empty file in ``<cache>/uploads/`` named ``<sha256>.<filename>``,
written (and synced) *before* the local copy appears, so a crash at any point leaves either
nothing to do or an entry that the next start uploads; an entry whose local copy is gone is
dropped, and so is one whose local copy does not hash to its name (rotted on this disk: its
bytes must not become every replica's). Uploads are conditional writes (``If-None-Match: *``,
see ``proxy/s3store.py``): of two replicas filling one file, the second keeps the first's
object.

One uploader thread per process; several worker processes of one replica share the queue
directory, and an flock on each entry keeps two of them from sending one file at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from proxy.errors import StoreUnavailable
from proxy.filestore import StoredFile
from proxy.localstore import LocalFileStore
from proxy.names import is_safe_filename, is_sha256
from proxy.s3store import S3FileStore

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0  # seconds before an upload that failed is tried again (doubling, to 300)
MAX_RETRY_AFTER = 300.0
ORPHAN_AFTER = 60.0  # seconds before a queue entry with no local copy is taken for debris


def _entry_name(sha256: str, filename: str) -> str:
    return f"{sha256}.{filename}"  # the sha256 is 64 hex digits: the split is unambiguous


def _parse_entry(name: str) -> tuple[str, str] | None:
    sha256, filename = name[:64], name[65:]
    if name[64:65] != "." or not is_sha256(sha256) or not is_safe_filename(filename):
        return None
    return sha256, filename


class Uploads:
    def __init__(
        self,
        queue_dir: Path,
        local: LocalFileStore,
        bucket: S3FileStore,
        *,
        before_round: Callable[[], None],
        after_upload: Callable[[], object],
        after_damaged: Callable[[StoredFile], object] = lambda stored: None,
    ) -> None:
        """``before_round`` runs in the uploader thread before each round (the tiered store
        sends its access markers there); ``after_upload`` after each file sent (its local
        copy may go now); ``after_damaged`` after a local copy found damaged was removed
        instead of sent."""
        self.queue_dir = queue_dir
        queue_dir.mkdir(parents=True, exist_ok=True)
        self._local = local
        self._bucket = bucket
        self._before_round = before_round
        self._after_upload = after_upload
        self._after_damaged = after_damaged
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.done = 0  # this process's, since it started
        self.failed = 0

    # -- the uploader ------------------------------------------------------------------------

    def start(self) -> None:
        """Run the uploader thread (a server does; one-shot commands may not need it)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._upload_forever, name="s3-uploader", daemon=True
            )
            self._thread.start()

    def close(self, wait: float = 5.0) -> None:
        """Stop the uploader; what it did not send stays queued for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(wait)
            self._thread = None

    def pending(self) -> list[tuple[str, str]]:
        """(sha256, filename) of every file waiting for upload."""
        found = []
        for entry in os.scandir(self.queue_dir):
            parsed = _parse_entry(entry.name)
            if parsed is not None:
                found.append(parsed)
        return found

    def is_queued(self, sha256: str, filename: str) -> bool:
        """Whether one file waits for upload: one lookup, not a listing of the queue (a
        check per file of verify, or per redirect, must not grow with the queue)."""
        return os.path.exists(self.queue_dir / _entry_name(sha256, filename))

    def _upload_forever(self) -> None:
        delay = RETRY_AFTER
        while not self._stop.is_set():
            self._wake.clear()
            self._before_round()
            try:
                failed = self.upload_pending()
            except OSError as exc:  # the queue directory itself: say so, keep trying
                log.error("cannot read the upload queue %s: %s", self.queue_dir, exc)
                failed = 1
            except Exception:  # a bug must not end uploads for good: the queue is kept
                log.exception("the uploader failed; trying again later")
                failed = 1
            if failed:
                self._wake.wait(delay)
                delay = min(delay * 2, MAX_RETRY_AFTER)
            else:
                delay = RETRY_AFTER
                self._wake.wait(60.0)  # a put wakes it sooner; the timeout picks up others'

    def upload_pending(self) -> int:
        """Upload every queued file once; how many failed (left queued for a retry)."""
        failed = 0
        for sha256, filename in self.pending():
            if self._stop.is_set():
                break
            try:
                self._upload_one(sha256, filename)
            except StoreUnavailable as exc:
                failed += 1
                self.failed += 1
                log.warning("upload of %s deferred: %s", filename, exc)
        return failed

    def _upload_one(self, sha256: str, filename: str) -> None:
        entry = self.queue_dir / _entry_name(sha256, filename)
        try:
            fd = os.open(entry, os.O_RDONLY)
        except FileNotFoundError:
            return  # another worker sent it just now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker is sending it
            if not os.path.exists(entry):
                return  # sent and dequeued between our scan and our lock
            stored = self._local.stat(sha256, filename)
            if stored is None or stored.path is None:
                # The crash came between queueing and storing, or verify removed the copy:
                # nothing to send. Unless the entry is new: its put may be just renaming the
                # copy into place (the entry is written first).
                if time.time() - os.fstat(fd).st_mtime > ORPHAN_AFTER:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry)
                return
            if not hashes_to(stored.path, sha256):
                # Rotted since it was verified: sending it would damage every replica's copy
                # (and a conditional write would keep it there). The file is fetched again.
                log.warning("%s: the local copy is damaged; dropped, not uploaded", filename)
                self._local.remove(sha256, filename)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry)
                self._after_damaged(stored)
                return
            remote, created = self._bucket.put(stored.path, sha256, filename)
            if not created and remote.size != stored.size:
                # Not another replica's copy (its key names these bytes, so their size):
                # a damaged object, which the conditional write would keep for everyone.
                log.warning("%s: the bucket's object is %d bytes; replaced", filename, remote.size)
                self._bucket.remove(sha256, filename)
                remote, created = self._bucket.put(stored.path, sha256, filename)
            self.done += 1
            log.info(
                "uploaded %s to %s%s",
                filename,
                self._bucket.config.url,
                "" if created else " (another replica had stored it)",
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry)
        finally:
            os.close(fd)
        self._after_upload()  # its local copy may go now

    def wake(self) -> None:
        """Send what is queued now rather than at the next round."""
        self._wake.set()

    def discard(self, sha256: str, filename: str) -> None:
        """Take a file off the queue (it is being removed)."""
        with contextlib.suppress(FileNotFoundError, ValueError):
            os.unlink(self.queue_dir / _entry_name(sha256, filename))

    @contextlib.contextmanager
    def queued_first(self, sha256: str, filename: str) -> Iterator[None]:
        """Queue a file and keep the uploader off it for the block: a caller deleting the
        bucket's damaged object to upload it again. Queued first, the local copy is never
        trimmed meanwhile (nor lost with the object in a crash); held, the conditional upload
        cannot run before the delete and find the damaged object still there."""
        entry = self.queue_dir / _entry_name(sha256, filename)
        while True:
            self.add(sha256, filename)
            fd = os.open(entry, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for an upload of it in flight
            try:
                if os.fstat(fd).st_ino == os.stat(entry).st_ino:
                    break  # ours, not an entry just sent and dequeued
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)
        self.wake()

    def add(self, sha256: str, filename: str) -> None:
        """Queue a file, durably: call before its local copy appears."""
        entry = self.queue_dir / _entry_name(sha256, filename)
        fd = os.open(entry, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(self.queue_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the entry survives a power cut before the local copy exists
        finally:
            os.close(dir_fd)


def hashes_to(path: Path, sha256: str) -> bool:
    """Whether a local copy's bytes hash to its name (False if it cannot be read): read
    whole, so only before an upload or a removal."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() == sha256
