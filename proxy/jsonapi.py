"""The legacy JSON API (``/pypi/<project>/json``, ``/pypi/<project>/<version>/json``): fetched
from the upstream, stored, revalidated and served offline as the simple pages are.

The upstream's answer is read under the page caps (``max_page_size``, ``max_page_inflated``,
``upstream_deadline``). Every file's ``url`` is rewritten to the proxy's own file URL, the one
the project's simple page gives it (so the file is served only because the page lists it).
Those URLs must be absolute (tools fetch them as they are) while the stored bytes stay the
same whatever host the proxy is reached under: each URL is stored as a random token followed
by its path, and the token, which the upstream's text never contains, becomes the proxy's base
URL when a response is made (``render``).

A stored document older than the project's page (a prefetch pass stored a newer page since) is
never answered as it is: a mirror of this proxy compares the listing's serial with the
document's. When no usable document comes from the upstream (offline; an upstream with no JSON
API), one is made from the page (proxy/jsonsynth.py), so the mirror needs only what it holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import anyio

from proxy.errors import NotFound, UpstreamBadResponse, UpstreamError
from proxy.jsonsynth import synthesise
from proxy.models import DistFile, PageRecord
from proxy.names import is_sha256, packages_path
from proxy.render import project_file_href
from proxy.storage import Storage
from proxy.trust import older
from proxy.upstream import Upstream

log = logging.getLogger(__name__)
FORMAT = 1  # of JsonRecord: a record of another format is fetched again (or, offline, absent)
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,127}$")
_UP = "../../"  # what file_href's relative URLs climb out of /simple/<project>/ with


def is_valid_version(version: str) -> bool:
    return _VERSION.match(version) is not None


@dataclass(slots=True)
class JsonRecord:
    project: str
    version: str | None
    template: bytes  # the JSON, each file URL as ``token`` + its path under the proxy
    token: bytes
    etag: str  # of the template
    serial: int | None
    fetched_at: float
    upstream_etag: str | None = None
    format: int = FORMAT


def record_key(project: str, version: str | None) -> str:
    return project if version is None else f"{project}/{version}"


def upstream_url(upstream_base: str, project: str, version: str | None) -> str:
    """``Settings.upstream_base`` + ``/pypi/<project>[/<version>]/json``."""
    middle = quote(project) if version is None else f"{quote(project)}/{quote(version)}"
    return f"{upstream_base}/pypi/{middle}/json"


def _serial(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def rewrite(body: bytes, page: PageRecord) -> tuple[bytes, bytes, int | None]:
    """The upstream's JSON with file URLs under the proxy: (template, token, last serial).
    Pure; raises UpstreamBadResponse for an answer that is not a JSON API document."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UpstreamBadResponse(f"{page.project}: the JSON API answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("info"), dict):
        raise UpstreamBadResponse(f"{page.project}: the JSON API answer has no info")
    token = secrets.token_hex(16)
    while token in body.decode("utf-8", "replace"):
        token = secrets.token_hex(16)
    href = project_file_href(page.project, page.page.files)
    by_name: dict[str, list[DistFile]] = {}
    for f in page.page.files:
        by_name.setdefault(f.filename, []).append(f)

    def entry_of(item: dict[str, Any]) -> DistFile | None:
        digests = item.get("digests")
        sha = digests.get("sha256") if isinstance(digests, dict) else None
        entries = by_name.get(item["filename"], [])
        return next((f for f in entries if sha is None or f.sha256 == sha), None)

    def path_of(item: dict[str, Any], entry: DistFile | None) -> str:
        if entry is None:
            # Not on the simple page: the proxy will not serve it, and says so (404).
            return f"files/{quote(page.project)}/{quote(item['filename'], safe='')}"
        if entry.sha256 is not None and is_sha256(entry.sha256):
            # The layout mirroring tools map to local paths (see proxy/web/packages.py).
            return "packages/" + packages_path(entry.sha256, quote(entry.filename, safe=""))
        return href(entry).removeprefix(_UP)

    def fix(items: object) -> None:
        if not isinstance(items, list):
            return
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("filename"), str):
                entry = entry_of(item)
                item["url"] = token + path_of(item, entry)
                if entry is not None and entry.has_metadata and "core-metadata" not in item:
                    # What the proxy's page offers next to the file (PEP 658 ``.metadata``),
                    # for an upstream whose JSON does not say: mirrors copy it only if told.
                    offered = entry.core_metadata
                    item["core-metadata"] = offered if isinstance(offered, bool) else dict(offered)

    fix(data.get("urls"))
    releases = data.get("releases")
    if isinstance(releases, dict):
        for items in releases.values():
            fix(items)
    # ASCII: a lone surrogate the upstream escaped stays escaped instead of failing to encode.
    template = json.dumps(data).encode()
    return template, token.encode(), _serial(data.get("last_serial"))


def render(record: JsonRecord, base_url: str) -> bytes:
    """The stored JSON with its file URLs under ``base_url`` (ends with a slash)."""
    return record.template.replace(record.token, base_url.encode())


class JsonApi:
    """Cache-or-fetch for JSON API documents, one fetch per document however many ask."""

    def __init__(
        self,
        storage: Storage,
        upstream: Upstream | None,
        upstream_base: str,
        *,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._upstream = upstream  # None: offline
        self._base = upstream_base
        self._ttl = ttl
        self._clock = clock
        self._inflight: dict[str, asyncio.Future[JsonRecord]] = {}

    def _load(self, key: str) -> JsonRecord | None:
        record = self._storage.load_json(key)
        if isinstance(record, JsonRecord) and getattr(record, "format", None) == FORMAT:
            return record
        return None

    async def get(self, page: PageRecord, version: str | None) -> JsonRecord:
        """The document for a project whose simple page is ``page``; NotFound, UpstreamError."""
        key = record_key(page.project, version)
        stored = await anyio.to_thread.run_sync(self._load, key)
        fresh = stored is not None and (
            self._upstream is None or self._clock() - stored.fetched_at < self._ttl
        )
        if stored is not None and fresh and not self._behind(stored, page):
            return stored
        if self._upstream is None:
            return await self.from_page(page, version)
        future = self._inflight.get(key)
        if future is not None:
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            record = await self._refresh(self._upstream, page, version, stored)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: there may be no waiter
            raise
        else:
            future.set_result(record)
            return record
        finally:
            del self._inflight[key]

    async def _refresh(
        self, upstream: Upstream, page: PageRecord, version: str | None, stored: JsonRecord | None
    ) -> JsonRecord:
        url = upstream_url(self._base, page.project, version)
        try:
            fetched = await upstream.get_document(url, stored.upstream_etag if stored else None)
        except (NotFound, UpstreamError) as exc:
            what = record_key(page.project, version)
            if stored is not None and not self._behind(stored, page):
                log.warning("serving stored JSON of %s: %s", what, exc)
                return stored
            if stored is None and not isinstance(exc, NotFound):
                raise
            # An upstream with no JSON API (or none for this project), or a stored document
            # older than the page: the page says what there is.
            log.info("JSON of %s made from its page: %s", what, exc)
            return await self.from_page(page, version)
        now = self._clock()
        if fetched is None:
            if stored is None:
                raise UpstreamBadResponse(f"upstream answered 304 for {url} without a condition")
            stored.fetched_at = now
            await self._save(stored)
            return stored
        template, token, serial = await anyio.to_thread.run_sync(rewrite, fetched.body, page)
        if serial is None:
            serial = fetched.serial
        if stored is not None and older(serial, stored.serial):
            log.warning(
                "upstream sent the JSON of %s at serial %s, older than stored %s; keeping stored",
                page.project,
                serial,
                stored.serial,
            )
            stored.fetched_at = now
            return stored
        record = JsonRecord(
            project=page.project,
            version=version,
            template=template,
            token=token,
            etag=hashlib.sha256(template.replace(token, b"")).hexdigest()[:32],
            serial=serial,
            fetched_at=now,
            upstream_etag=fetched.etag,
        )
        await self._save(record)
        return record

    @staticmethod
    def _behind(stored: JsonRecord, page: PageRecord) -> bool:
        """Older than the project's page (a pass stored a newer one since): a mirror comparing
        the serial of the listing with this document's would refuse it."""
        return older(stored.serial, page.page.serial)

    async def from_page(self, page: PageRecord, version: str | None) -> JsonRecord:
        """The document made from the stored page (proxy/jsonsynth.py), at the page's serial;
        not stored, as the page may change under it. NotFound for a release it does not list."""
        try:
            template, token = await anyio.to_thread.run_sync(
                synthesise, page, version, self._storage.recorded_size
            )
        except KeyError:
            raise NotFound(f"{page.project} has no release {version} in this mirror") from None
        return JsonRecord(
            project=page.project,
            version=version,
            template=template,
            token=token,
            etag=hashlib.sha256(template.replace(token, b"")).hexdigest()[:32],
            serial=page.page.serial,
            fetched_at=self._clock(),
        )

    async def _save(self, record: JsonRecord) -> None:
        key = record_key(record.project, record.version)
        try:
            await anyio.to_thread.run_sync(self._storage.save_json, key, record)
        except (OSError, sqlite3.Error) as exc:  # a full disk costs the cache entry, not the answer
            log.error("could not store the JSON of %s: %s", key, exc)
