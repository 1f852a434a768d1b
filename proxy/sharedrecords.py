"""What replicas share in the bucket besides files: page records and pins.

Keys under the store's prefix (beside ``files/``, ``atime/`` and ``lease/``):

- ``pages/<project>``  the project's page record as JSON (below), written by the replica that
  stored it; other replicas read it when they have none and poll the listing for newer ones;
- ``changes/<ms>-<project>``  an empty marker per saved page, keyed by the writer's clock in
  milliseconds: replicas follow these (a listing from where they left off) rather than list
  every page; markers older than a day are swept;
- ``pins/<sha256>``    an empty marker: the prefetcher of some replica holds this file in the
  mirror (the published copy of its held list, ``proxy/heldfiles.py``), so no replica's
  eviction may drop it.

The JSON API's records and the root listing sit beside these (``proxy/shareddocs.py``).

Records are JSON, not the pickles of the local index: a bucket is written by other machines,
and unpickling what another machine wrote would run whatever it says. A record that does not
decode into a complete page is ignored (and logged), never used. The rendered bytes are not
shipped: each replica renders the page itself, with its own code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import obstore
from obstore.exceptions import BaseError

from proxy.models import RECORD_FORMAT, DistFile, PageRecord, ProjectPage
from proxy.names import is_sha256, is_valid_project_name
from proxy.render import render_project
from proxy.s3store import S3FileStore, raise_store_error

log = logging.getLogger(__name__)

PAGES = "pages/"
PINS = "pins/"
CHANGES = "changes/"
KEEP_CHANGES = 86400.0  # a replica stopped longer than this reads every record at its start
PINS_FRESH = 30.0  # seconds the pin listing is trusted before it is read again


def encode_page(record: PageRecord) -> bytes:
    page = record.page
    data = {
        "format": RECORD_FORMAT,
        "project": record.project,
        "fetched_at": record.fetched_at,
        "upstream_etag": record.upstream_etag,
        "allowed_hosts": list(record.allowed_hosts),
        "page": {
            "name": page.name,
            "api_version": page.api_version,
            "serial": page.serial,
            "versions": list(page.versions) if page.versions is not None else None,
            "project_status": dict(page.project_status) if page.project_status else None,
            "extra": dict(page.extra),
            "files": [_file_data(f) for f in page.files],
        },
    }
    return json.dumps(data, separators=(",", ":")).encode()


def _file_data(f: DistFile) -> dict[str, Any]:
    data = {field.name: getattr(f, field.name) for field in dataclasses.fields(f)}
    data["hashes"] = dict(f.hashes)
    data["extra"] = dict(f.extra)
    if not isinstance(f.core_metadata, bool):
        data["core_metadata"] = dict(f.core_metadata)
    return data


_FILE_FIELDS = {f.name for f in dataclasses.fields(DistFile)}


def _file(item: Any) -> DistFile:
    if not isinstance(item, dict) or not set(item) <= _FILE_FIELDS:
        raise ValueError("not a file entry")
    f = DistFile(**item)
    if not isinstance(f.filename, str) or not isinstance(f.url, str):
        raise ValueError("a file entry without a name or URL")
    if not isinstance(f.hashes, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in f.hashes.items()
    ):
        raise ValueError("hashes are not strings")
    if f.size is not None and (not isinstance(f.size, int) or isinstance(f.size, bool)):
        raise ValueError("size is not a number")
    return f


def fetch_time(value: Any) -> float:
    """A record's fetch time from another machine: a number, and never later than now (a
    time in the future, or infinity, would keep its copy fresh here for ever)."""
    when = float(value)
    if not math.isfinite(when):
        raise ValueError("not a time")
    return min(when, time.time())


def decode_page(body: bytes, project: str) -> PageRecord | None:
    """The record, or None for anything but a complete record of ``project``."""
    try:
        data = json.loads(body)
        if data["format"] != RECORD_FORMAT or data["project"] != project:
            return None
        raw = data["page"]
        versions = raw["versions"]
        page = ProjectPage(
            name=str(raw["name"]),
            files=tuple(_file(item) for item in raw["files"]),
            api_version=str(raw["api_version"]),
            serial=raw["serial"] if isinstance(raw["serial"], int) else None,
            versions=tuple(str(v) for v in versions) if versions is not None else None,
            project_status=raw["project_status"] or None,
            extra=dict(raw["extra"]),
        )
        etag = data["upstream_etag"]
        return PageRecord(
            project=project,
            page=page,
            rendered=render_project(page, project),
            fetched_at=fetch_time(data["fetched_at"]),
            upstream_etag=etag if isinstance(etag, str) else None,
            allowed_hosts=tuple(str(h) for h in data["allowed_hosts"]),
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class SharedPage:
    project: str
    version: str  # the object's ETag: a change of record shows as a new one
    modified: float


class SharedRecords:
    """Pages and pins in the bucket of ``store``."""

    def __init__(self, store: S3FileStore, clock: Any = time.time) -> None:
        self.store = store
        self.objects = store.objects
        self.clock = clock
        self._pins: set[str] = set()
        self._pins_read = float("-inf")

    # -- pages -------------------------------------------------------------------------------

    def save_page(self, record: PageRecord) -> str | None:
        """Write the record; its version, or None when it could not be written (logged: the
        local copy is stored, and the next save tries again)."""
        key = PAGES + record.project
        try:
            result = obstore.put(self.objects, key, encode_page(record))
            # After the record: a replica that reads the marker finds the record. A marker
            # lost (a failure just here) delays the change until the others' next start.
            obstore.put(self.objects, self._change_key(self.clock(), record.project), b"")
        except (BaseError, OSError) as exc:
            log.warning("page of %s not written to the bucket: %s", record.project, _short(exc))
            return None
        return result["e_tag"]

    @staticmethod
    def _change_key(when: float, project: str) -> str:
        return f"{CHANGES}{int(when * 1000):013d}-{project}"

    def changes(self, since: float) -> Iterator[tuple[str, str]]:
        """(marker key, project) of every page saved at or after ``since`` by its writer's
        clock, oldest first: one listing that starts there."""
        start = f"{CHANGES}{int(since * 1000):013d}"
        try:
            for chunk in obstore.list(self.objects, CHANGES, offset=start):
                for meta in chunk:
                    project = meta["path"].removeprefix(CHANGES)[14:]
                    if is_valid_project_name(project):
                        yield meta["path"], project
        except (BaseError, OSError) as exc:
            raise_store_error("LIST", CHANGES, exc)

    def sweep_changes(self, now: float | None = None) -> int:
        """Delete the markers older than KEEP_CHANGES; how many went."""
        cutoff = self._change_key((now if now is not None else self.clock()) - KEEP_CHANGES, "")
        old: list[str] = []
        for meta in self._listing(CHANGES):
            if meta["path"] >= cutoff:
                break  # sorted by key, so by time
            old.append(meta["path"])
        for at in range(0, len(old), 1000):  # S3 deletes up to 1000 keys per request
            try:
                obstore.delete(self.objects, old[at : at + 1000])
            except (BaseError, OSError) as exc:
                raise_store_error("DELETE", CHANGES, exc)
        return len(old)

    def load_page(self, project: str) -> tuple[PageRecord, str] | None:
        """The bucket's record of ``project`` and its version, or None."""
        key = PAGES + project
        try:
            result = obstore.get(self.objects, key)
            body = bytes(result.bytes())
        except FileNotFoundError:
            return None
        except (BaseError, OSError) as exc:
            raise_store_error("GET", key, exc)
        record = decode_page(body, project)
        if record is None:
            log.warning("the bucket's page record of %s is unreadable; ignored", project)
            return None
        return record, result.meta["e_tag"] or ""

    def delete_page(self, project: str) -> None:
        self._delete_marker(PAGES + project)
        try:  # the others follow the removal as they follow a save
            obstore.put(self.objects, self._change_key(self.clock(), project), b"")
        except (BaseError, OSError) as exc:
            raise_store_error("PUT", CHANGES, exc)

    def pages(self) -> Iterator[SharedPage]:
        """Every stored page record, with its version."""
        for meta in self._listing(PAGES):
            project = meta["path"].removeprefix(PAGES)
            if is_valid_project_name(project):
                modified = _timestamp(meta["last_modified"])
                yield SharedPage(project, meta["e_tag"] or "", modified)

    # -- pins --------------------------------------------------------------------------------

    def pin(self, sha256: str) -> None:
        self._write_marker(PINS + sha256)
        self._pins.add(sha256)

    def unpin(self, sha256: str) -> None:
        self._delete_marker(PINS + sha256)
        self._pins.discard(sha256)

    def is_pinned(self, sha256: str) -> bool:
        """From a listing read at most every PINS_FRESH seconds: eviction asks per file."""
        now = self.clock()
        if now - self._pins_read > PINS_FRESH:
            pins = set()
            try:
                for meta in self._listing(PINS):
                    name = meta["path"].removeprefix(PINS)
                    if is_sha256(name):
                        pins.add(name)
            except OSError as exc:  # the bucket is down: what we knew (eviction cannot run)
                log.warning("could not read the bucket's pins: %s", exc)
                self._pins_read = now
                return sha256 in self._pins
            self._pins, self._pins_read = pins, now
        return sha256 in self._pins

    # -- helpers -----------------------------------------------------------------------------

    def _delete_marker(self, key: str) -> None:
        """Delete one object; one already gone is fine."""
        try:
            obstore.delete(self.objects, key)
        except FileNotFoundError:
            pass
        except (BaseError, OSError) as exc:
            raise_store_error("DELETE", key, exc)

    def _write_marker(self, key: str) -> None:
        try:
            obstore.put(self.objects, key, b"")
        except (BaseError, OSError) as exc:
            raise_store_error("PUT", key, exc)

    def _listing(self, prefix: str) -> Iterator[Any]:
        try:
            for chunk in obstore.list(self.objects, prefix):
                yield from chunk
        except (BaseError, OSError) as exc:
            raise_store_error("LIST", prefix, exc)


def _timestamp(value: datetime) -> float:
    return value.timestamp()


def _short(exc: BaseException) -> str:
    """The error's kind, never its message (the store's messages carry URLs)."""
    return type(exc).__name__
