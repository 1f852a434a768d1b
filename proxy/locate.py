"""Which file a URL names, and where it is: only files listed on a stored page are served."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import anyio

from proxy.errors import NotFound
from proxy.filestore import StoredFile
from proxy.fill import Target
from proxy.models import DistFile, PageRecord
from proxy.names import is_sha256
from proxy.pageservice import PageService
from proxy.storage import Storage

log = logging.getLogger(__name__)

METADATA_SUFFIX = ".metadata"


@dataclass(frozen=True, slots=True)
class Located:
    target: Target
    entry: DistFile
    stored: StoredFile | None  # when the cache holds it whole
    damaged: bool = False  # a stored copy of the wrong size was found and dropped

    @property
    def sha256(self) -> str | None:
        return self.stored.sha256 if self.stored is not None else self.target.sha256


def target_for(entry: DistFile, filename: str) -> Target | None:
    """The download behind ``filename``: the distribution itself or its PEP 658 metadata.

    None for an entry that cannot be stored safely (a hash that is not a sha256 digest)."""
    if entry.sha256 is not None and not is_sha256(entry.sha256):
        return None
    if filename == entry.filename:
        return Target(url=entry.url, filename=filename, sha256=entry.sha256, size=entry.size)
    metadata_sha = entry.metadata_sha256
    if metadata_sha is not None and not is_sha256(metadata_sha):
        return None
    if filename == entry.filename + METADATA_SUFFIX and entry.has_metadata:
        return Target(
            url=entry.url + METADATA_SUFFIX,
            filename=filename,
            sha256=entry.metadata_sha256,
            size=None,
        )
    return None


def find_entry(record: PageRecord, filename: str, variant: str | None = None) -> DistFile | None:
    """The page's entry behind a file URL: by name, or by name and variant for an entry whose
    filename the page lists more than once."""
    base = filename[: -len(METADATA_SUFFIX)] if filename.endswith(METADATA_SUFFIX) else filename
    if variant is None:
        return record.by_filename.get(filename) or record.by_filename.get(base)
    for entry in record.page.files:
        if entry.filename in (filename, base) and entry.variant == variant:
            return entry
    return None


def _stored(storage: Storage, target: Target) -> StoredFile | None:
    sha = target.sha256 or storage.hash_for_url(target.url)
    return storage.stored(sha, target.filename) if sha is not None else None


def sha256_of(storage: Storage, stored: StoredFile) -> str | None:
    """The sha256 of a stored file's bytes; None when it cannot be read (gone)."""
    digest = hashlib.sha256()
    try:
        for chunk in storage.read(stored):
            digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _damaged(storage: Storage, target: Target, stored: StoredFile, expected: int) -> bool:
    """A stored file of another size than expected: drop it, unless its bytes still hash to
    the sha256 (then the page's size is what is wrong, and the file is served)."""
    if sha256_of(storage, stored) == stored.sha256:
        log.warning(
            "%s: the page says %d bytes, the verified file has %d",
            target.filename,
            expected,
            stored.size,
        )
        return False
    log.warning(
        "stored %s has %d bytes, %d expected: dropping the damaged copy",
        target.filename,
        stored.size,
        expected,
    )
    storage.remove(stored.sha256, stored.filename)
    return True


def _expected_size(storage: Storage, target: Target, sha: str) -> int | None:
    return target.size if target.size is not None else storage.recorded_size(sha)


async def locate(
    index: PageService,
    storage: Storage,
    project: str,
    filename: str,
    variant: str | None = None,
) -> Located:
    """Find ``filename`` on ``project``'s page; raises NotFound if it is not listed there."""
    record = await index.project(project, allow_stale=True)
    entry = find_entry(record, filename, variant)
    target = target_for(entry, filename) if entry is not None else None
    if entry is None or target is None:
        raise NotFound(f"{filename} is not a file of {project}")
    if target.sha256 is not None and is_sha256(target.sha256) and not storage.files.shared:
        # Cheap path for the usual case: one stat on the event loop, no diskcache read.
        found = storage.stored(target.sha256, filename)
    else:
        found = await anyio.to_thread.run_sync(_stored, storage, target)
    if found is None:
        return Located(target, entry, None)
    sha = found.sha256
    expected = target.size if target.size is not None else storage.known_size(sha)
    if expected is None:
        expected = await anyio.to_thread.run_sync(_expected_size, storage, target, sha)
    if expected is not None and found.size != expected:
        # Damaged on disk (truncated, overwritten): dropped, never served.
        damaged = await anyio.to_thread.run_sync(_damaged, storage, target, found, expected)
        if damaged:
            return Located(target, entry, None, damaged=True)
    return Located(target, entry, found)
