"""Whether a record read back from the cache is one this version can use.

Records are pickled dataclasses. One written by a version with another layout unpickles into
an object with missing attributes (slots left unset), and a damaged one may not unpickle at all;
either used as it is would fail deep inside a request (a 500). Here every attribute a request
reads is checked once, when the record comes off the disk, so such a record is treated as
absent (fetched again online) and reported, never served.
"""

from __future__ import annotations

import dataclasses

from proxy.models import RECORD_FORMAT, Body, DistFile, PageRecord, Rendered, RootRecord


def _complete(value: object) -> bool:
    """Every field of a dataclass instance is set (a slot missing from an older pickle is
    not)."""
    return all(hasattr(value, f.name) for f in dataclasses.fields(value))  # type: ignore[arg-type]


def _rendered_ok(rendered: object) -> bool:
    if not isinstance(rendered, Rendered) or not _complete(rendered):
        return False
    return all(
        isinstance(body, Body) and _complete(body) for body in (rendered.json, rendered.html)
    )


def usable_page(record: object) -> PageRecord | None:
    if not isinstance(record, PageRecord) or not _complete_or_old(record):
        return None
    if getattr(record, "format", 1) != RECORD_FORMAT:
        return None
    page = record.page
    if not _complete(page) or not _rendered_ok(record.rendered):
        return None
    if not all(isinstance(f, DistFile) and _complete(f) for f in page.files):
        return None
    return record


def usable_root(record: object) -> RootRecord | None:
    if not isinstance(record, RootRecord) or not _complete_or_old(record):
        return None
    if getattr(record, "format", 1) != RECORD_FORMAT:
        return None
    if not _complete(record.listing) or not _rendered_ok(record.rendered):
        return None
    return record


def _complete_or_old(record: PageRecord | RootRecord) -> bool:
    """Complete, where a record from before ``format`` existed counts as layout 1."""
    return all(f.name == "format" or hasattr(record, f.name) for f in dataclasses.fields(record))
