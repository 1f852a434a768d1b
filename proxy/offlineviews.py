"""Offline views of pages: only the files the cache can serve are listed, so that pip and uv
never pick a file they cannot get. Kept in memory per page, rebuilt when the page or the files
generation (files removed by another process) changes."""

from __future__ import annotations

import dataclasses

import anyio

from proxy.memcache import MemoryLRU
from proxy.models import PageRecord, Rendered
from proxy.parse import versions_from
from proxy.render import render_project
from proxy.storage import Storage


class OfflineViews:
    def __init__(self, storage: Storage, memory_bytes: int, made_metadata: bool = False) -> None:
        self._storage = storage
        # A wheel listed here is on disk, so its metadata can be made with no network.
        self._made_metadata = made_metadata
        self._views: MemoryLRU[tuple[tuple[float, int], Rendered]] = MemoryLRU(memory_bytes)

    async def view(self, record: PageRecord, files_generation: int) -> Rendered:
        key = (record.fetched_at, files_generation)
        cached = self._views.get(record.project)
        if cached is not None and cached[0] == key:
            return cached[1]
        rendered = await anyio.to_thread.run_sync(self._render, record)
        size = len(rendered.json.raw) + len(rendered.html.raw)
        self._views.put(record.project, (key, rendered), size * 2)
        return rendered

    def pop(self, project: str) -> None:
        self._views.pop(project)

    def _on_disk(self, sha256: str | None, url: str, filename: str) -> bool:
        sha = sha256 or self._storage.hash_for_url(url)
        # Unstorable names and hashes (records from before they were dropped at parse time)
        # are never stored: stored() says None.
        return sha is not None and self._storage.stored(sha, filename) is not None

    def _render(self, record: PageRecord) -> Rendered:
        files = []
        for f in record.page.files:
            if not self._on_disk(f.sha256, f.url, f.filename):
                continue
            if f.has_metadata and not self._on_disk(
                f.metadata_sha256, f.url + ".metadata", f.filename + ".metadata"
            ):
                f = dataclasses.replace(f, core_metadata=False)
            files.append(f)
        kept = tuple(files)
        page = dataclasses.replace(record.page, files=kept, versions=versions_from(kept))
        return render_project(page, record.project, self._made_metadata)
