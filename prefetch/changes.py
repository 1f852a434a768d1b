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
from proxy.bounded import PageTooLarge
from proxy.errors import UpstreamError, UpstreamUnavailable
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
    claimed = await client.last_serial()
    key = selection_key(selection)
    marker = await anyio.to_thread.run_sync(state.get_meta, "queued_serial")
    if isinstance(marker, dict) and marker.get("key") == key and int(marker["serial"]) > claimed:
        # Queued beyond what the upstream says it has (a lie believed by an older version, or
        # an upstream restored from a backup): changes since there would never come. Diff the
        # full list again instead.
        log.warning(
            "prefetch: changes were queued up to serial %s, beyond the upstream's %d; "
            "diffing the full project list again",
            marker["serial"],
            claimed,
        )
        marker = None
    # The target is the newest serial the rows themselves gave: changelog_last_serial alone
    # is one number an upstream can get wrong, and a target beyond the rows would skip every
    # change up to it in later passes.
    received = 0
    if not isinstance(marker, dict) or marker.get("key") != key:
        # A first pass, or a different selection than last time: diff the full list against
        # what the mirror holds, so nothing synced before is fetched again.
        everything = await client.all_projects()
        await anyio.to_thread.run_sync(state.root_begin)
        rows: list[tuple[str, int | None]] = [
            (normalize(name), _at_most(serial, claimed)) for name, serial in everything.items()
        ]
        del everything
        received = max((serial or 0 for _name, serial in rows), default=0)
        for start in range(0, len(rows), BATCH):
            await anyio.to_thread.run_sync(state.root_add, rows[start : start + BATCH])
        listed = {name for name, _serial in rows} if selection is not None else set()
        del rows
        queued = await anyio.to_thread.run_sync(state.root_diff, selection)
        _log_implausible(state, "the XML-RPC project list")
        if selection is not None:  # selected names the upstream does not list: sync sees 404
            missing = [(name, None) for name in selection - listed]
            # Taken as gone only on a list that looks like the index (as root_diff decides).
            believed = state.implausible_root is None
            queued += await anyio.to_thread.run_sync(partial(state.enqueue, missing, gone=believed))
    else:
        since = received = int(marker["serial"])
        queued = 0
        while True:
            page = await client.changes_since(since)
            if not page:
                break
            # Per project, the last row of the page says whether it still exists.
            latest: dict[str, tuple[int | None, bool]] = {}
            for name, serial, action in page:
                project = normalize(name)
                if selection is None or project in selection:
                    latest[project] = (_at_most(serial, claimed), action == REMOVE_PROJECT)
            for gone in (False, True):
                rows = [(k, serial) for k, (serial, g) in latest.items() if g == gone]
                queued += await anyio.to_thread.run_sync(partial(state.enqueue, rows, gone=gone))
            newest = max(serial for _name, serial, _action in page)
            if newest <= since:  # an upstream that does not advance would loop forever
                break
            since = received = newest
            # Mark progress as we go: a killed detection resumes from the last page.
            marker = {"key": key, "serial": since}
            await anyio.to_thread.run_sync(partial(state.set_meta, queued_serial=marker))
    if not received:  # an empty list: nothing to be whole at, nor to resume from
        return Detection("xmlrpc", None, queued)
    # Whole at what both the rows and the upstream's last serial reach: the lower of the two,
    # so that neither one lying number skips changes in later passes (re-reading rows from
    # there is harmless; a serial queued beyond the upstream is not).
    target = min(received, claimed) if claimed else received
    if claimed > target:
        # Normal for a moment (changes land between the two calls); far beyond, a lie.
        log.warning(
            "prefetch: the upstream's changelog_last_serial is %d, its rows reach %d; "
            "the mirror is whole at %d",
            claimed,
            target,
            target,
        )
    marker = {"key": key, "serial": target}
    await anyio.to_thread.run_sync(partial(state.set_meta, queued_serial=marker))
    return Detection("xmlrpc", target, queued)


@dataclass(frozen=True, slots=True)
class RootLimits:
    """What streaming the JSON root index may cost (prefetch.root_deadline, max_root_size)."""

    deadline: float = 600.0
    max_size: int = 512 * 1024**2


async def by_json_root(
    upstream: Upstream,
    state: PrefetchState,
    selection: set[str] | None,
    limits: RootLimits = RootLimits(),
) -> Detection:
    """Stream the root index; memory stays flat however many projects it lists, and the
    transfer has one deadline and a size cap (a trickled or endless root must not hang the
    pass)."""
    try:
        with anyio.fail_after(limits.deadline):
            return await _by_json_root(upstream, state, selection, limits.max_size)
    except TimeoutError:
        raise UpstreamUnavailable(
            f"the root index did not arrive whole within {limits.deadline:g}s "
            "(prefetch.root_deadline)"
        ) from None


async def _by_json_root(
    upstream: Upstream, state: PrefetchState, selection: set[str] | None, max_size: int
) -> Detection:
    await anyio.to_thread.run_sync(state.root_begin)
    async with upstream.stream_page("", JSON_ROOT_ACCEPT) as response:
        if "json" not in response.headers.get("content-type", ""):
            raise NoSerials("the upstream's root index is not JSON")
        meta_serial, max_serial = await _read_root(state, response, max_size)
    queued = await anyio.to_thread.run_sync(state.root_diff, selection)
    target = meta_serial if meta_serial is not None else (max_serial or None)
    _log_implausible(state, "the JSON root index")
    return Detection("json-root", target, queued)


async def _read_root(state: PrefetchState, response: Any, max_size: int) -> tuple[int | None, int]:
    """Parse a streamed root into the ``root`` table; its meta serial and largest serial.

    The body is pushed into ijson chunk by chunk from this task (not pulled through ijson's
    async reader): a deadline that cancels the read then unwinds httpx's stream here, where it
    was opened, instead of leaving it to be finalised in another task."""
    meta_serial: int | None = None
    max_serial = 0
    batch: list[tuple[str, int | None]] = []
    name: str | None = None
    events: list[tuple[str, str, Any]] = ijson.sendable_list()
    parser = ijson.parse_coro(events)
    left = max_size  # decoded bytes still allowed (a gzip bomb counts inflated)
    chunks = response.aiter_bytes()
    ended = False
    try:
        while True:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                parser.close()  # the end of the document: raises if it is incomplete
                ended = True
            else:
                left -= len(chunk)
                if left < 0:
                    raise PageTooLarge(
                        f"the root index is over {max_size} bytes (prefetch.max_root_size)"
                    )
                parser.send(chunk)
            for prefix, event, value in events:
                if (
                    prefix == "meta._last-serial"
                    and (found := _serial_value(event, value)) is not None
                ):
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
            del events[:]
            if batch and (ended or len(batch) >= BATCH):
                await anyio.to_thread.run_sync(state.root_add, batch)
                batch = []
            if ended:
                return meta_serial, max_serial
    finally:
        await chunks.aclose()


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
    root_limits: RootLimits = RootLimits(),
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
            return await by_json_root(upstream, state, selection, root_limits)
        except (NoSerials, UpstreamError, ijson.JSONError) as exc:
            if method == "json-root" or selection is None:
                raise
            log.warning("JSON root index unusable (%s); revalidating each project", exc)
    if selection is None:
        raise UpstreamError("per-project revalidation needs a selection of projects")
    return await by_project(state, selection)


def _at_most(serial: int | None, claimed: int) -> int | None:
    """The serial a changelog row asks of the project's page: none when the row is beyond
    the upstream's own last serial (a lie, or a change that landed a moment ago, which a later
    pass reads again), since no page could be asked to reach it."""
    return None if serial is not None and claimed > 0 and serial > claimed else serial


def _log_implausible(state: PrefetchState, source: str) -> None:
    if state.implausible_root is not None:
        listed, mirrored = state.implausible_root
        log.warning(
            "prefetch: %s lists %d of the %d projects the mirror holds: too few to believe, "
            "so none is taken as gone",
            source,
            listed,
            mirrored,
        )


def _serial_value(event: str, value: Any) -> int | None:
    """A serial as a JSON number or a numeric string (as some mirrors send it)."""
    if event == "number":
        return int(value)
    if event == "string" and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return None
