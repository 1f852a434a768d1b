"""Bringing one project in the mirror up to date: its page, its files, and removals."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import partial

import anyio

from prefetch.filters import select
from prefetch.state import HeldFile, PrefetchState
from proxy.errors import NotFound, ProxyError
from proxy.files import target_for
from proxy.fill import Filler, Target, wait_done
from proxy.index import IndexService
from proxy.models import DistFile
from proxy.settings import PrefetchSettings
from proxy.storage import Storage

log = logging.getLogger(__name__)


class SyncFailed(ProxyError):
    pass


@dataclass(frozen=True, slots=True)
class Synced:
    files_added: int = 0
    bytes_added: int = 0
    files_removed: int = 0
    gone: bool = False


@dataclass
class Syncer:
    settings: PrefetchSettings
    storage: Storage
    index: IndexService
    filler: Filler
    state: PrefetchState
    downloads: asyncio.Semaphore

    async def sync(self, name: str, serial: int | None) -> Synced:
        current = await self.index.stored_project(name)
        try:
            record = await self.index.fetch_project(name, current, min_serial=serial)
        except NotFound:
            removed = await self._release(name, keep=[])
            await anyio.to_thread.run_sync(self.state.done, name, None, None)
            log.info("%s is gone upstream; removed %d files", name, removed)
            return Synced(files_removed=removed, gone=True)
        wanted = select(record.page.files, self.settings)
        results = await asyncio.gather(*(self._fetch(entry) for entry in wanted))
        held = [h for files, _added, _bytes in results for h in files]
        removed = await self._release(name, keep=held)
        await anyio.to_thread.run_sync(self.state.done, name, record.page.serial, held)
        return Synced(
            files_added=sum(added for _f, added, _b in results),
            bytes_added=sum(size for _f, _a, size in results),
            files_removed=removed,
        )

    def _targets(self, entry: DistFile) -> list[Target]:
        names = [entry.filename]
        if entry.has_metadata:
            names.append(entry.filename + ".metadata")
        return [t for n in names if (t := target_for(entry, n)) is not None]

    async def _fetch(self, entry: DistFile) -> tuple[list[HeldFile], int, int]:
        held: list[HeldFile] = []
        added = added_bytes = 0
        for target in self._targets(entry):
            sha = target.sha256 or await anyio.to_thread.run_sync(
                self.storage.hash_for_url, target.url
            )
            stat = self.storage.stat_file(sha, target.filename) if sha else None
            if stat is None:
                async with self.downloads:
                    progress = self.filler.start(target)
                    await wait_done(progress)
                if progress.error or progress.final is None:
                    raise SyncFailed(f"{target.filename}: {progress.error or 'not stored'}")
                sha = progress.final.parent.name
                size = progress.final.stat().st_size
                added += 1
                added_bytes += size
            else:
                size = stat.st_size
            assert sha is not None
            await anyio.to_thread.run_sync(self.storage.pin, sha)
            held.append(HeldFile(target.filename, sha, size))
        return held, added, added_bytes

    async def _release(self, name: str, keep: list[HeldFile]) -> int:
        """Unpin and delete what the mirror held for ``name`` and no longer wants."""
        previous = await anyio.to_thread.run_sync(self.state.held_files, name)
        wanted = {(h.filename, h.sha256) for h in keep}
        removed = 0
        for old in previous:
            if (old.filename, old.sha256) in wanted:
                continue
            removed += await anyio.to_thread.run_sync(partial(self._remove, name, old))
        return removed

    def _remove(self, name: str, old: HeldFile) -> int:
        if not self.state.sha_used_by_others(old.sha256, name):
            self.storage.unpin(old.sha256)
        path = self.storage.file_path(old.sha256, old.filename)
        return 1 if path.exists() and self.storage.remove_file(path) >= 0 else 0
