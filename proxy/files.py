"""Which file a URL names, and where it is: only files listed on a stored page are served."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import anyio

from proxy.errors import NotFound
from proxy.fill import Target
from proxy.index import IndexService
from proxy.models import DistFile
from proxy.storage import Storage

METADATA_SUFFIX = ".metadata"


@dataclass(frozen=True, slots=True)
class Located:
    target: Target
    entry: DistFile
    path: Path | None  # the stored file, when the cache holds it
    stat: os.stat_result | None

    @property
    def sha256(self) -> str | None:
        return self.path.parent.name if self.path is not None else self.target.sha256


def target_for(entry: DistFile, filename: str) -> Target | None:
    """The download behind ``filename``: the distribution itself or its PEP 658 metadata."""
    if filename == entry.filename:
        return Target(url=entry.url, filename=filename, sha256=entry.sha256, size=entry.size)
    if filename == entry.filename + METADATA_SUFFIX and entry.has_metadata:
        return Target(
            url=entry.url + METADATA_SUFFIX,
            filename=filename,
            sha256=entry.metadata_sha256,
            size=None,
        )
    return None


def _lookup(storage: Storage, target: Target) -> tuple[Path, os.stat_result] | None:
    sha = target.sha256 or storage.hash_for_url(target.url)
    if sha is None:
        return None
    stat = storage.stat_file(sha, target.filename)
    return (storage.file_path(sha, target.filename), stat) if stat is not None else None


async def locate(index: IndexService, storage: Storage, project: str, filename: str) -> Located:
    """Find ``filename`` on ``project``'s page; raises NotFound if it is not listed there."""
    record = await index.project(project, allow_stale=True)
    base = filename[: -len(METADATA_SUFFIX)] if filename.endswith(METADATA_SUFFIX) else filename
    entry = record.by_filename.get(filename) or record.by_filename.get(base)
    target = target_for(entry, filename) if entry is not None else None
    if entry is None or target is None:
        raise NotFound(f"{filename} is not a file of {project}")
    if target.sha256 is not None:
        # Cheap path for the usual case: one stat, no diskcache read.
        stat = storage.stat_file(target.sha256, filename)
        path = storage.file_path(target.sha256, filename) if stat is not None else None
        return Located(target, entry, path, stat)
    found = await anyio.to_thread.run_sync(_lookup, storage, target)
    return Located(target, entry, found[0] if found else None, found[1] if found else None)
