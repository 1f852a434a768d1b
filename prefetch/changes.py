"""Change detection: what changed upstream since the mirror's serial, into the queue.

Three methods, tried in this order by ``auto`` (each fallback is logged):

1. the XML-RPC changelog (``list_packages_with_serial`` for a first pass,
   ``changelog_since_serial`` in pages for increments);
2. the JSON root index's per-project ``_last-serial``, streamed and diffed in SQLite;
3. for a named selection, every selected project, revalidated one by one.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import ijson

from prefetch.state import PrefetchState
from prefetch.xmlrpc import ChangelogClient, XmlRpcRefused
from proxy.errors import UpstreamError
from proxy.names import normalize
from proxy.upstream import Upstream

log = logging.getLogger(__name__)
JSON_ROOT_ACCEPT = "application/vnd.pypi.simple.v1+json"
BATCH = 10_000
REMOVE_PROJECT = "remove project"  # the changelog's action when a project is deleted


class NoSerials(UpstreamError):
    """The root index carries no per-project serials (an HTML-only upstream)."""


@dataclass(frozen=True, slots=True)
class Detection:
    method: str
    target: int | None  # the upstream serial the mirror will be whole at, when known
    queued: int


def selection_key(selection: set[str] | None) -> str:
    if selection is None:
        return "*"
    return hashlib.sha256("\n".join(sorted(selection)).encode()).hexdigest()


async def by_xmlrpc(
    client: ChangelogClient, state: PrefetchState, selection: set[str] | None
) -> Detection:
    target = await client.last_serial()
    key = selection_key(selection)
    marker = await anyio.to_thread.run_sync(state.get_meta, "queued_serial")
    if not isinstance(marker, dict) or marker.get("key") != key:
        # A first pass, or a different selection than last time: diff the full list against
        # what the mirror holds, so nothing synced before is fetched again.
        everything = await client.all_projects()
        await anyio.to_thread.run_sync(state.root_begin)
        rows: list[tuple[str, int | None]] = [
            (normalize(name), serial) for name, serial in everything.items()
        ]
        del everything
        for start in range(0, len(rows), BATCH):
            await anyio.to_thread.run_sync(state.root_add, rows[start : start + BATCH])
        listed = {name for name, _serial in rows} if selection is not None else set()
        del rows
        queued = await anyio.to_thread.run_sync(state.root_diff, selection)
        if selection is not None:  # selected names the upstream does not list: sync sees 404
            missing = [(name, None) for name in selection - listed]
            queued += await anyio.to_thread.run_sync(partial(state.enqueue, missing, gone=True))
    else:
        since = int(marker["serial"])
        queued = 0
        while True:
            page = await client.changes_since(since)
            if not page:
                break
            # Per project, the last row of the page says whether it still exists.
            latest: dict[str, tuple[int, bool]] = {}
            for name, serial, action in page:
                key = normalize(name)
                if selection is None or key in selection:
                    latest[key] = (serial, action == REMOVE_PROJECT)
            for gone in (False, True):
                rows = [(k, serial) for k, (serial, g) in latest.items() if g == gone]
                queued += await anyio.to_thread.run_sync(partial(state.enqueue, rows, gone=gone))
            newest = max(serial for _name, serial, _action in page)
            if newest <= since:  # an upstream that does not advance would loop forever
                break
            since = newest
            # Mark progress as we go: a killed detection resumes from the last page.
            marker = {"key": key, "serial": since}
            await anyio.to_thread.run_sync(partial(state.set_meta, queued_serial=marker))
        target = max(target, since)
    marker = {"key": key, "serial": target}
    await anyio.to_thread.run_sync(partial(state.set_meta, queued_serial=marker))
    return Detection("xmlrpc", target, queued)


async def by_json_root(
    upstream: Upstream, state: PrefetchState, selection: set[str] | None
) -> Detection:
    """Stream the root index; memory stays flat however many projects it lists."""
    await anyio.to_thread.run_sync(state.root_begin)
    meta_serial: int | None = None
    max_serial = 0
    batch: list[tuple[str, int | None]] = []
    async with upstream.stream_page("", JSON_ROOT_ACCEPT) as response:
        if "json" not in response.headers.get("content-type", ""):
            raise NoSerials("the upstream's root index is not JSON")
        parser = ijson.parse_async(_AsyncReader(response))
        name: str | None = None
        async for prefix, event, value in parser:
            if prefix == "meta._last-serial" and (found := _serial_value(event, value)) is not None:
                meta_serial = found
            elif prefix == "projects.item.name" and event == "string":
                name = normalize(value)
            elif (
                prefix == "projects.item._last-serial"
                and (serial := _serial_value(event, value)) is not None
            ):
                max_serial = max(max_serial, serial)
                if name is not None:
                    batch.append((name, serial))
                    name = None
            elif prefix == "projects.item" and event == "end_map" and name is not None:
                raise NoSerials("the upstream's root index has no _last-serial per project")
            if len(batch) >= BATCH:
                await anyio.to_thread.run_sync(state.root_add, batch)
                batch = []
    if batch:
        await anyio.to_thread.run_sync(state.root_add, batch)
    queued = await anyio.to_thread.run_sync(state.root_diff, selection)
    target = meta_serial if meta_serial is not None else (max_serial or None)
    return Detection("json-root", target, queued)


async def by_project(state: PrefetchState, selection: set[str]) -> Detection:
    rows: list[tuple[str, int | None]] = [(name, None) for name in sorted(selection)]
    queued = await anyio.to_thread.run_sync(state.enqueue, rows)
    return Detection("per-project", None, queued)


async def detect(
    method: str,
    upstream: Upstream,
    client: ChangelogClient,
    state: PrefetchState,
    selection: set[str] | None,
) -> Detection:
    """Run the configured method; ``auto`` falls back down the list with a log line."""
    if method in ("auto", "xmlrpc"):
        try:
            return await by_xmlrpc(client, state, selection)
        except (XmlRpcRefused, UpstreamError) as exc:
            if method == "xmlrpc":
                raise
            log.warning("XML-RPC changelog unavailable (%s); falling back to the JSON root", exc)
    if method in ("auto", "json-root"):
        try:
            return await by_json_root(upstream, state, selection)
        except (NoSerials, UpstreamError, ijson.JSONError) as exc:
            if method == "json-root" or selection is None:
                raise
            log.warning("JSON root index unusable (%s); revalidating each project", exc)
    if selection is None:
        raise UpstreamError("per-project revalidation needs a selection of projects")
    return await by_project(state, selection)


def _serial_value(event: str, value: Any) -> int | None:
    """A serial as a JSON number or a numeric string (as some mirrors send it)."""
    if event == "number":
        return int(value)
    if event == "string" and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return None


class _AsyncReader:
    """ijson's async parser reads from an object with ``async read(n)``."""

    def __init__(self, response: Any) -> None:
        self._chunks = response.aiter_bytes(64 * 1024)
        self._buffer = b""

    async def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                break
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data
