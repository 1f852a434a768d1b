"""The legacy JSON API's records and the root listing, shared through the bucket as page records
are (``proxy/sharedrecords.py``), so that a replica serves them offline when another fetched them.

Keys under the store's prefix:

- ``json/<project>`` and ``json/<project>/<version>``  a JSON API record (the template and its
  URL token in base64: bytes, kept exact);
- ``root``  the root listing: names, serials, the upstream's ETag; each replica renders it.

JSON, never pickles (another machine wrote it); a body that does not decode into a complete
record of the key asked is ignored and logged (nested past the parser's depth too); a fetch
time later than now is taken as now, so no record stays fresh past one ttl. A replica reads
these only when it has no copy of its own (there are no change markers): a stale copy is
revalidated upstream as before.
Blocking, as the rest of ``Storage``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any

import obstore
from obstore.exceptions import BaseError

from proxy.jsonapi import FORMAT as JSON_FORMAT
from proxy.jsonapi import JsonRecord, record_key
from proxy.models import RECORD_FORMAT, ProjectListing, RootRecord
from proxy.render import render_root
from proxy.s3store import raise_store_error
from proxy.sharedrecords import SharedRecords, fetch_time

log = logging.getLogger(__name__)

JSON = "json/"
ROOT = "root"
# A key's project and version as object key segments: a version from a request's path that
# is not one (a slash, a leading dot) is kept locally only.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*")


def shareable(key: str) -> bool:
    return all(_SEGMENT.fullmatch(part) for part in key.split("/", 1))


def encode_json(record: JsonRecord) -> bytes:
    data = {
        "format": JSON_FORMAT,
        "project": record.project,
        "version": record.version,
        "template": base64.b64encode(record.template).decode(),
        "token": base64.b64encode(record.token).decode(),
        "etag": record.etag,
        "serial": record.serial,
        "fetched_at": record.fetched_at,
        "upstream_etag": record.upstream_etag,
    }
    return json.dumps(data, separators=(",", ":")).encode()


def decode_json(body: bytes, key: str) -> JsonRecord | None:
    """The record, or None for anything but a complete record stored under ``key``."""
    try:
        data = json.loads(body)
        record = JsonRecord(
            project=_text(data["project"]),
            version=None if data["version"] is None else _text(data["version"]),
            template=base64.b64decode(_text(data["template"]), validate=True),
            token=base64.b64decode(_text(data["token"]), validate=True),
            etag=_text(data["etag"]),
            serial=_number(data["serial"]),
            fetched_at=fetch_time(data["fetched_at"]),
            upstream_etag=None if data["upstream_etag"] is None else _text(data["upstream_etag"]),
        )
        if data["format"] != JSON_FORMAT or record_key(record.project, record.version) != key:
            return None
        return record
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def encode_root(record: RootRecord) -> bytes:
    listing = record.listing
    data = {
        "format": RECORD_FORMAT,
        "projects": [list(item) for item in listing.projects],
        "api_version": listing.api_version,
        "serial": listing.serial,
        "fetched_at": record.fetched_at,
        "upstream_etag": record.upstream_etag,
    }
    return json.dumps(data, separators=(",", ":")).encode()


def decode_root(body: bytes) -> RootRecord | None:
    try:
        data = json.loads(body)
        if data["format"] != RECORD_FORMAT:
            return None
        projects = tuple((_text(name), _number(serial)) for name, serial in data["projects"])
        listing = ProjectListing(projects, _text(data["api_version"]), _number(data["serial"]))
        etag = data["upstream_etag"]
        return RootRecord(
            listing=listing,
            rendered=render_root(listing),
            fetched_at=fetch_time(data["fetched_at"]),
            upstream_etag=None if etag is None else _text(etag),
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _number(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not a number")
    return value


class SharedDocs:
    """JSON API records and the root listing in the bucket ``shared`` writes pages to."""

    def __init__(self, shared: SharedRecords) -> None:
        self.objects = shared.objects

    def save_json(self, key: str, record: JsonRecord) -> None:
        if shareable(key):
            self._put(JSON + key, encode_json(record))

    def load_json(self, key: str) -> JsonRecord | None:
        body = self._get(JSON + key) if shareable(key) else None
        record = decode_json(body, key) if body is not None else None
        if body is not None and record is None:
            log.warning("the bucket's JSON API record of %s is unreadable; ignored", key)
        return record

    def delete_json(self, project: str) -> None:
        """Drop the project's record and its versions' (a listing of json/<project>/)."""
        if not shareable(project):
            return
        keys = [JSON + project]
        try:
            for chunk in obstore.list(self.objects, JSON + project + "/"):
                keys += [meta["path"] for meta in chunk]
            for at in range(0, len(keys), 1000):  # S3 deletes up to 1000 keys per request
                obstore.delete(self.objects, keys[at : at + 1000])
        except FileNotFoundError:
            pass
        except (BaseError, OSError) as exc:
            raise_store_error("DELETE", JSON + project, exc)

    def save_root(self, record: RootRecord) -> None:
        self._put(ROOT, encode_root(record))

    def load_root(self) -> RootRecord | None:
        body = self._get(ROOT)
        record = decode_root(body) if body is not None else None
        if body is not None and record is None:
            log.warning("the bucket's root listing is unreadable; ignored")
        return record

    def _put(self, key: str, body: bytes) -> None:
        """Write, or log why not: the local copy is kept, and the next save tries again."""
        try:
            obstore.put(self.objects, key, body)
        except (BaseError, OSError) as exc:
            log.warning("%s not written to the bucket: %s", key, type(exc).__name__)

    def _get(self, key: str) -> bytes | None:
        """The object's bytes; None when absent or the bucket cannot be read (as if no
        replica had stored it)."""
        try:
            return bytes(obstore.get(self.objects, key).bytes())
        except FileNotFoundError:
            return None
        except (BaseError, OSError) as exc:
            log.warning("could not read %s from the bucket: %s", key, type(exc).__name__)
            return None
