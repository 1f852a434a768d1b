"""Package files in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW), shared by replicas.

Keys under the store's prefix, the local layout's (``proxy/localstore.py``):

- ``files/ab/<sha256>/<filename>``  the file; the key proves its content, so whoever holds
  it holds the same bytes;
- ``atime/ab/<sha256>/<filename>``  an empty marker whose LastModified is the file's last
  recorded access (see below);
- ``tmp/<random>``                  a large file on its way in (multipart), copied into place
  and deleted; anything here older than a day is debris of a crash (``sweep_staging``);
- ``lease/<name>``                  leases (``proxy/lease.py``).

Never clobber: a file is created with a conditional write (``If-None-Match: *``), so of two
replicas storing one file the second is told it exists and keeps the first's object. A single
conditional PUT is only possible from memory (obstore reads the whole body first, and
multipart uploads carry no precondition), so files up to ``single_put_limit`` go that way and
larger ones are uploaded multipart to a staging key, then copied into place by a multipart copy
completed with ``If-None-Match: *`` (S3's copy-if-not-exists): memory stays bounded by the
part size times the parts in flight, and the final key is still written at most once. Either
way an object appears whole or not at all.

Access times: S3 has none, and a write per hit would cost more than the hit. ``touch`` writes
the marker at most once per ``touch_interval`` per file and process; the marker's LastModified
is set by the store's own clock, so replicas whose clocks differ still agree on the order.
``iter_files`` joins the two sorted listings (files/ and atime/ share their key order), so
eviction sees ``atime = max(stored, last marker)`` in constant memory. ``stat`` (the hot path)
is one HEAD and reports only the access this process recorded. Eviction must still skip files
some replica's mirror holds: that list is not the store's to keep (see ``proxy/evict.py``).

Errors: the store's own messages carry request URLs and debug dumps, so none is passed on: a
failed call is a ``StoreUnavailable`` (an OSError) naming the operation, the key and the HTTP
status, and nothing this module shows (``location``, ``repr``, a message) holds a credential.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError
from obstore.store import S3Store

from proxy.errors import StoreUnavailable
from proxy.filestore import StoredFile
from proxy.names import is_safe_filename, is_sha256
from proxy.s3config import S3Config

if TYPE_CHECKING:
    from obstore import ObjectMeta
    from obstore.store import S3Config as ObstoreConfig

log = logging.getLogger(__name__)

FILES = "files/"
ATIME = "atime/"
STAGING = "tmp/"
STREAM_CHUNK = 256 * 1024
SINGLE_PUT_LIMIT = 16 * 1024 * 1024  # the largest file sent as one PUT (held in memory)
PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 4  # with PART_SIZE: at most 32 MB of one large upload in memory
TOUCH_INTERVAL = 3600.0
MAX_REMEMBERED_TOUCHES = 100_000
_STATUS = re.compile(r"status code: (\d{3})")


def raise_store_error(operation: str, key: str, exc: BaseException) -> NoReturn:
    """Our own error from the store's: operation, key and status, never its message."""
    found = _STATUS.search(str(exc))
    status = f" (HTTP {found.group(1)})" if found else ""
    raise StoreUnavailable(
        f"object store: {operation} {key} failed: {type(exc).__name__}{status}"
    ) from None


class S3FileStore:
    def __init__(
        self,
        config: S3Config,
        *,
        single_put_limit: int = SINGLE_PUT_LIMIT,
        part_size: int = PART_SIZE,
        touch_interval: float = TOUCH_INTERVAL,
        copy_if_not_exists: str = "multipart",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        retry_timeout: float = 30.0,
    ) -> None:
        """``copy_if_not_exists`` is obstore's setting for the conditional copy of large files:
        "multipart" for AWS S3 (and stores that honour ``If-None-Match`` on completing a
        multipart upload), or a header form for others (see obstore's S3Config)."""
        self.config = config
        self.single_put_limit = single_put_limit
        self.part_size = part_size
        self.touch_interval = touch_interval
        self._touched: dict[str, float] = {}
        options: ObstoreConfig = {"region": config.region, "copy_if_not_exists": copy_if_not_exists}
        if config.endpoint:
            options["endpoint"] = config.endpoint
        if config.access_key_id and config.secret_access_key:
            options["access_key_id"] = config.access_key_id
            options["secret_access_key"] = config.secret_access_key
        self.objects = S3Store(
            config.bucket,
            prefix=config.prefix or None,
            config=options,
            client_options={
                "allow_http": config.allow_http,
                "timeout": timedelta(seconds=timeout),
                "connect_timeout": timedelta(seconds=connect_timeout),
            },
            # obstore's default retries for three minutes: a hit must fail sooner than that
            retry_config={
                "max_retries": retries,
                "retry_timeout": timedelta(seconds=retry_timeout),
            },
        )

    def __repr__(self) -> str:
        return f"S3FileStore({self.config.url!r})"

    @property
    def shared(self) -> bool:
        return True

    def check(self) -> None:
        """Raise StoreUnavailable unless the bucket answers a listing: call it at start. A
        missing bucket cannot be told from a missing file by a HEAD (both are a bodiless 404),
        so without this check a wrong bucket name would look like an empty store."""
        for _ in self._listing(FILES):
            break

    # -- keys --------------------------------------------------------------------------------

    def key_of(self, sha256: str, filename: str) -> str:
        """The file's key under the prefix. ValueError for anything not storable: a page's
        hash field or filename must never name a key outside files/."""
        if not is_sha256(sha256) or not is_safe_filename(filename):
            raise ValueError("not a storable file")
        return f"{FILES}{sha256[:2]}/{sha256}/{filename}"

    def _location(self, key: str) -> str:
        return f"{self.config.url}/{key}"

    def _parse(self, key: str) -> tuple[str, str] | None:
        """(sha256, filename) from a listed key, or None for anything not laid out by us."""
        parts = key.split("/")
        if len(parts) != 4 or parts[1] != parts[2][:2]:
            return None
        sha256, filename = parts[2], parts[3]
        if not is_sha256(sha256) or not is_safe_filename(filename):
            return None
        return sha256, filename

    def _stored(self, sha256: str, filename: str, key: str, meta: ObjectMeta) -> StoredFile:
        mtime = meta["last_modified"].timestamp()
        return StoredFile(
            sha256=sha256,
            filename=filename,
            size=meta["size"],
            mtime=mtime,
            atime=max(mtime, self._touched.get(key, 0.0)),
            location=self._location(key),
        )

    # -- the FileStore interface -------------------------------------------------------------

    def stat(self, sha256: str, filename: str) -> StoredFile | None:
        try:
            key = self.key_of(sha256, filename)
        except ValueError:
            return None
        try:
            meta = obstore.head(self.objects, key)
        except FileNotFoundError:
            return None
        except BaseError as exc:
            raise_store_error("HEAD", key, exc)
        return self._stored(sha256, filename, key, meta)

    def put(self, source: Path, sha256: str, filename: str) -> tuple[StoredFile, bool]:
        """Copy the verified ``source`` into the bucket (``source`` stays the caller's)."""
        key = self.key_of(sha256, filename)
        size = source.stat().st_size
        try:
            if size <= self.single_put_limit:
                obstore.put(self.objects, key, source, mode="create", use_multipart=False)
            else:
                self._put_large(source, key)
            created = True
        except AlreadyExistsError:
            created = False  # another replica stored it first: same key, same bytes
        except (BaseError, OSError) as exc:  # FileNotFoundError: no such bucket
            raise_store_error("PUT", key, exc)
        stored = self.stat(sha256, filename)
        if stored is None:  # evicted by another replica in between: rare, but not a crash
            raise StoreUnavailable(f"object store: {key} vanished just after it was stored")
        return stored, created

    def _put_large(self, source: Path, key: str) -> None:
        staging = f"{STAGING}{secrets.token_hex(16)}"
        try:
            obstore.put(
                self.objects,
                staging,
                source,
                use_multipart=True,
                chunk_size=self.part_size,
                max_concurrency=PARTS_IN_FLIGHT,
            )
            # AlreadyExistsError here when the final key exists: the caller's "not created"
            obstore.copy(self.objects, staging, key, overwrite=False)
        finally:
            with contextlib.suppress(BaseError, FileNotFoundError):
                obstore.delete(self.objects, staging)

    def remove(self, sha256: str, filename: str) -> int:
        try:
            key = self.key_of(sha256, filename)
        except ValueError:
            return 0
        try:
            size = obstore.head(self.objects, key)["size"]
        except FileNotFoundError:
            return 0
        except BaseError as exc:
            raise_store_error("HEAD", key, exc)
        try:
            obstore.delete(self.objects, [key, ATIME + key.removeprefix(FILES)])
        except (BaseError, OSError) as exc:
            raise_store_error("DELETE", key, exc)
        self._touched.pop(key, None)
        return size

    def touch(self, stored: StoredFile, now: float) -> None:
        """Write the access marker, at most once per ``touch_interval``; a failure is logged,
        never raised: a hit must not fail because its access could not be recorded."""
        try:
            key = self.key_of(stored.sha256, stored.filename)
        except ValueError:
            return
        if now - max(stored.atime, self._touched.get(key, 0.0)) < self.touch_interval:
            return
        if len(self._touched) >= MAX_REMEMBERED_TOUCHES:
            self._touched.clear()
        self._touched[key] = now
        marker = ATIME + key.removeprefix(FILES)
        try:
            obstore.put(self.objects, marker, b"")
        except (BaseError, OSError) as exc:
            found = _STATUS.search(str(exc))
            log.warning(
                "object store: access marker %s not written: %s%s",
                marker,
                type(exc).__name__,
                f" (HTTP {found.group(1)})" if found else "",
            )

    def _listing(self, prefix: str) -> Iterator[ObjectMeta]:
        try:
            for chunk in obstore.list(self.objects, prefix):
                yield from chunk
        except (BaseError, OSError) as exc:  # FileNotFoundError: no such bucket
            raise_store_error("LIST", prefix, exc)

    def iter_files(self) -> Iterator[StoredFile]:
        """Every file, its atime the later of its marker's and its own time. Both listings come
        sorted by key (S3 lists in UTF-8 byte order) and share their order after the prefix, so
        they are joined as they are read, in constant memory."""
        markers = self._listing(ATIME)
        marker = next(markers, None)
        for meta in self._listing(FILES):
            key = meta["path"]
            parsed = self._parse(key)
            if parsed is None:
                continue
            rest = key.removeprefix(FILES)
            while marker is not None and marker["path"].removeprefix(ATIME) < rest:
                marker = next(markers, None)  # a marker of a file removed since: skipped
            stored = self._stored(parsed[0], parsed[1], key, meta)
            if marker is not None and marker["path"].removeprefix(ATIME) == rest:
                seen = marker["last_modified"].timestamp()
                if seen > stored.atime:
                    stored = StoredFile(
                        stored.sha256,
                        stored.filename,
                        stored.size,
                        stored.mtime,
                        seen,
                        stored.location,
                    )
            yield stored

    def read(self, stored: StoredFile, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        key = self.key_of(stored.sha256, stored.filename)
        try:
            result = obstore.get(self.objects, key)
            yield from result.stream(min_chunk_size=chunk_size)
        except FileNotFoundError:
            raise FileNotFoundError(f"object store: {key} is gone") from None
        except BaseError as exc:
            raise_store_error("GET", key, exc)

    async def stream(self, stored: StoredFile, start: int, end: int) -> AsyncIterator[bytes]:
        """One ranged GET, read as it is sent. Fewer bytes than asked (the object went or
        changed under us) raise, so the client's transfer is cut rather than short."""
        if end <= start:
            return
        key = self.key_of(stored.sha256, stored.filename)
        sent = 0
        try:
            result = await obstore.get_async(self.objects, key, options={"range": (start, end)})
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
                sent += len(chunk)
                yield chunk
        except FileNotFoundError:
            raise FileNotFoundError(f"object store: {key} is gone") from None
        except BaseError as exc:
            raise_store_error("GET", key, exc)
        if sent != end - start:
            raise StoreUnavailable(f"object store: {key} gave {sent} of {end - start} bytes")

    def presign(self, stored: StoredFile, expires: float) -> str | None:
        key = self.key_of(stored.sha256, stored.filename)
        try:
            return obstore.sign(self.objects, "GET", key, timedelta(seconds=expires))
        except (BaseError, OSError) as exc:
            raise_store_error("SIGN", key, exc)

    # -- housekeeping ------------------------------------------------------------------------

    def sweep_staging(self, older_than: float = 86400.0, now: float | None = None) -> int:
        """Delete staging objects a crashed upload left (older than any upload takes)."""
        cutoff = (now if now is not None else time.time()) - older_than
        old = [
            meta["path"]
            for meta in self._listing(STAGING)
            if meta["last_modified"].timestamp() < cutoff
        ]
        if old:
            try:
                obstore.delete(self.objects, old)
            except (BaseError, OSError) as exc:
                raise_store_error("DELETE", STAGING, exc)
        return len(old)
