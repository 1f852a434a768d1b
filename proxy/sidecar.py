"""A wheel's ``.metadata`` file (PEP 658) stored from the stored, verified wheel instead of asked
of the upstream: a prefetch pass's third request per project saved (issue 10).

The page gives the sha256 of the upstream's own ``.metadata`` file; the bytes read out of the
wheel (``proxy.wheelmeta``: sizes capped, the member's CRC checked) are kept only if they hash to
it, so what is stored is byte for byte what the upstream serves. Anything else (another hash, an
unreadable zip, no wheel stored) returns None, and the caller fetches the file as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os

import anyio

from proxy.filestore import StoredFile
from proxy.fill import Filler, Target
from proxy.metasynth import stored_metadata
from proxy.storage import Storage
from proxy.wheelmeta import NoMetadata, read_metadata

SMALL = 4 * 1024**2  # a wheel up to this size is read whole, once, to find its member


async def store_from_wheel(
    storage: Storage,
    filler: Filler,
    target: Target,
    wheel: tuple[str, str],
    batched: bool,
) -> StoredFile | None:
    """Store ``target`` from the stored wheel (``wheel``: its sha256 and filename); None when
    the bytes cannot be had this way."""
    if target.sha256 is None:
        return None
    try:
        data = await _metadata_of(storage, wheel)
    except (NoMetadata, OSError):
        return None
    if data is None:
        return None
    if hashlib.sha256(data).hexdigest() != target.sha256:
        return None  # the upstream's file differs from the wheel's member: fetch it
    kept, due = await anyio.to_thread.run_sync(_write, storage, filler, target, data, batched)
    if due:
        filler.settle_soon()
    return kept


async def _metadata_of(storage: Storage, wheel: tuple[str, str]) -> bytes | None:
    """The wheel's METADATA member; None when the wheel is not stored on this disk."""
    stored, data = await anyio.to_thread.run_sync(_small_wheel, storage, wheel)
    if stored is None or stored.path is None:
        return None
    if data is None:
        return await stored_metadata(stored.path)

    async def read(start: int, end: int) -> bytes:
        return data[start:end]

    return await read_metadata(read, len(data), wheel[1])


def _small_wheel(
    storage: Storage, wheel: tuple[str, str]
) -> tuple[StoredFile | None, bytes | None]:
    """The stored wheel, and its bytes when it is small (one thread call, one read)."""
    stored = storage.stored(*wheel)
    if stored is None or stored.path is None or stored.size > SMALL:
        return stored, None
    return stored, stored.path.read_bytes()


def _write(
    storage: Storage, filler: Filler, target: Target, data: bytes, batched: bool
) -> tuple[StoredFile, bool]:
    """Into a temporary file, then into the store as a download would be (blocking)."""
    assert target.sha256 is not None
    part = storage.part_path(target.key, ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        return filler.store(part, fd, target.sha256, target, batched)
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            part.unlink()  # still there only when storing failed
