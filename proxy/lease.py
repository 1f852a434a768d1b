"""A lease in the store: one holder at a time (one replica runs the prefetcher), for a time.

The lease is one small record, ``{"holder", "expires", "nonce"}``, changed only by
compare-and-swap on its version: created if absent, replaced only if it is still the version
read. So of two contenders that read the same expired lease, exactly one replaces it; the
other's write fails and it is told "not yours". Nobody deletes the record: release writes an
expired one (conditionally, so a holder that lost its lease cannot free the next holder's).
The nonce makes every write's content new, so a version (an S3 ETag is the MD5 of the body)
never repeats.

Two places keep the record, with the same compare-and-swap:

- ``S3Records``: ``<prefix>/lease/<name>`` in the bucket; create is ``If-None-Match: *``,
  replace is ``If-Match: <etag>`` (obstore's put modes), both honoured by S3, MinIO and RGW.
- ``LocalRecords``: ``<dir>/<name>`` on a local disk, the read-compare-write done under an
  flock of ``<dir>/<name>.lock`` (held for microseconds), the write a rename.

Time: ``expires`` is the holder's wall clock. A contender takes an expired lease over only
``grace`` seconds after it expired by its own clock, so clocks that agree within ``grace``
(NTP) never see two holders; the holder renews well before expiry (``ttl / 3`` is a good
period) and stops its work when a renewal fails or its lease ran out.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError
from obstore.store import ObjectStore

from proxy.errors import ProxyError
from proxy.s3store import S3FileStore, raise_store_error

log = logging.getLogger(__name__)
GRACE = 5.0


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    expires: float  # by the holder's clock
    version: str  # of the record as we wrote it: what renew and release compare against

    def valid(self, now: float) -> bool:
        return now < self.expires


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    holder: str
    expires: float


class Records(Protocol):
    """One record with compare-and-swap on its version."""

    def read(self) -> tuple[bytes, str] | None:
        """The record and its version, or None when there is none."""
        ...

    def create(self, body: bytes) -> str | None:
        """Write the record if there is none: its version, or None when one exists."""
        ...

    def replace(self, body: bytes, version: str) -> str | None:
        """Write the record if it is still at ``version``: the new version, or None."""
        ...


def _encode(holder: str, expires: float) -> bytes:
    record = {"holder": holder, "expires": expires, "nonce": secrets.token_hex(8)}
    return json.dumps(record).encode()


def _decode(body: bytes) -> LeaseInfo | None:
    """None for a record that cannot be read: it is taken as expired, so a damaged record
    cannot keep every replica out forever."""
    try:
        record = json.loads(body)
        holder, expires = record["holder"], record["expires"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(holder, str) or not isinstance(expires, int | float):
        return None
    return LeaseInfo(holder, float(expires))


class LeaseKeeper:
    def __init__(
        self,
        name: str,
        records: Records,
        *,
        grace: float = GRACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.records = records
        self.grace = grace
        self.clock = clock

    def current(self) -> LeaseInfo | None:
        """Who holds the lease now (None: nobody, or it expired)."""
        got = self.records.read()
        info = _decode(got[0]) if got is not None else None
        if info is None or not info.holder or self.clock() >= info.expires:
            return None
        return info

    def acquire(self, holder: str, ttl: float) -> Lease | None:
        """The lease for ``ttl`` seconds, or None when another holder has it. A holder that
        asks again while it holds the lease gets it extended."""
        if not holder:
            raise ValueError("a lease holder needs a name")
        now = self.clock()
        body = _encode(holder, now + ttl)
        got = self.records.read()
        if got is None:
            version = self.records.create(body)
        else:
            info = _decode(got[0])
            held = info is not None and info.holder not in ("", holder)
            if held and info is not None and now < info.expires + self.grace:
                return None  # held, or expired too recently for all clocks to agree on it
            version = self.records.replace(body, got[1])
        if version is None:
            return None  # another contender wrote first
        return Lease(self.name, holder, now + ttl, version)

    def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """The lease extended, or None when it was lost (taken over after it expired)."""
        now = self.clock()
        version = self.records.replace(_encode(lease.holder, now + ttl), lease.version)
        return Lease(self.name, lease.holder, now + ttl, version) if version else None

    def release(self, lease: Lease) -> bool:
        """Let the next holder in at once; False when the lease was no longer ours."""
        return self.records.replace(_encode("", 0.0), lease.version) is not None


class S3Records:
    def __init__(self, objects: ObjectStore, key: str) -> None:
        self.objects = objects
        self.key = key

    def read(self) -> tuple[bytes, str] | None:
        try:
            result = obstore.get(self.objects, self.key)
            body = bytes(result.bytes())
        except FileNotFoundError:
            return None
        except BaseError as exc:
            raise_store_error("GET", self.key, exc)
        version = result.meta["e_tag"]
        if version is None:
            raise_store_error("GET", self.key, BaseError("no ETag"))
        return body, version

    def create(self, body: bytes) -> str | None:
        try:
            return obstore.put(self.objects, self.key, body, mode="create")["e_tag"] or None
        except AlreadyExistsError:
            return None
        except BaseError as exc:
            raise_store_error("PUT", self.key, exc)

    def replace(self, body: bytes, version: str) -> str | None:
        try:
            result = obstore.put(self.objects, self.key, body, mode={"e_tag": version})
        except (PreconditionError, FileNotFoundError):
            return None
        except BaseError as exc:
            raise_store_error("PUT", self.key, exc)
        return result["e_tag"] or None


class LocalRecords:
    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        self._lock = directory / f"{name}.lock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held only for one read and one rename
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _read(self) -> tuple[bytes, str] | None:
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return body, hashlib.sha256(body).hexdigest()

    def _write(self, body: bytes) -> str:
        part = self.path.with_name(f"{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}")
        with part.open("wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, self.path)  # whole or absent, whoever reads it
        return hashlib.sha256(body).hexdigest()

    def read(self) -> tuple[bytes, str] | None:
        return self._read()

    def create(self, body: bytes) -> str | None:
        with self._locked():
            return None if self._read() is not None else self._write(body)

    def replace(self, body: bytes, version: str) -> str | None:
        with self._locked():
            got = self._read()
            return self._write(body) if got is not None and got[1] == version else None


def s3_lease(
    store: S3FileStore, name: str, grace: float = GRACE, clock: Callable[[], float] = time.time
) -> LeaseKeeper:
    """The lease ``name`` kept in the bucket, beside the files every replica shares."""
    return LeaseKeeper(name, S3Records(store.objects, f"lease/{name}"), grace=grace, clock=clock)


def local_lease(
    directory: Path, name: str, grace: float = GRACE, clock: Callable[[], float] = time.time
) -> LeaseKeeper:
    """The lease ``name`` kept in a local directory (processes on one machine)."""
    return LeaseKeeper(name, LocalRecords(directory, name), grace=grace, clock=clock)


class LeaseLost(ProxyError):
    """The lease ran out or was taken over while its holder worked: the work was stopped."""


RENEWALS_PER_TTL = 3  # renew at a third of the lease's time: two may fail before it runs out


def holder_name() -> str:
    """Who holds a lease, for people reading it: this machine and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


@contextlib.asynccontextmanager
async def holding(
    keeper: LeaseKeeper, ttl: float, busy: Callable[[str], Exception], holder: str = ""
) -> AsyncIterator[Lease]:
    """Hold the lease for the body, renewed every ``ttl / 3``; raise ``busy(message)`` when
    another holder has it. When a renewal is refused (it was lost), the body is cancelled and
    LeaseLost raised: two holders never work at once. A store that cannot be reached keeps
    the lease until it would run out, then counts as lost too."""
    holder = holder or holder_name()
    acquired = await anyio.to_thread.run_sync(keeper.acquire, holder, ttl)
    if acquired is None:
        current = await anyio.to_thread.run_sync(keeper.current)
        who = f" ({current.holder})" if current is not None else ""
        raise busy(f"another replica holds the {keeper.name} lease{who}")
    lease: Lease = acquired
    lost = False
    try:
        async with anyio.create_task_group() as group:

            async def renew() -> None:
                nonlocal lease, lost
                while True:
                    await anyio.sleep(ttl / RENEWALS_PER_TTL)
                    try:
                        renewed = await anyio.to_thread.run_sync(keeper.renew, lease, ttl)
                    except OSError as exc:
                        log.warning("could not renew the %s lease: %s", keeper.name, exc)
                        if lease.valid(keeper.clock() + ttl / RENEWALS_PER_TTL):
                            continue  # still ours for a while: try again
                        renewed = None
                    if renewed is None:
                        lost = True
                        log.error("lost the %s lease; stopping", keeper.name)
                        group.cancel_scope.cancel()
                        return
                    lease = renewed

            group.start_soon(renew)
            try:
                yield lease
            finally:
                group.cancel_scope.cancel()
    finally:
        if not lost:
            with contextlib.suppress(OSError):
                await anyio.to_thread.run_sync(keeper.release, lease)
    if lost:
        raise LeaseLost(f"the {keeper.name} lease was lost while its work ran")
