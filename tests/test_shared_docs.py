"""The JSON API's records and the root listing shared through a bucket (proxy/shareddocs.py), as
page records are: what one replica stored another reads when it has none, against moto's S3 API
server on loopback (tests/support/s3.py)."""

from __future__ import annotations

import time
from pathlib import Path

import obstore

from proxy.jsonapi import JsonRecord
from proxy.models import ProjectListing, RootRecord
from proxy.render import render_root
from proxy.s3config import S3Config
from proxy.shareddocs import JSON, ROOT, decode_json, decode_root, encode_json, encode_root
from proxy.sharedrecords import decode_page, encode_page
from tests.support.s3 import (
    s3_config_fixture,  # noqa: F401 (a fixture)
    s3_server_fixture,  # noqa: F401 (a fixture)
)
from tests.test_tiered import _record, _replica


def _json(project: str, version: str | None) -> JsonRecord:
    return JsonRecord(
        project=project,
        version=version,
        template=b'{"info":{"name":"demo"},"urls":[{"url":"\x00tok\x00/packages/x"}]}',
        token=b"\x00tok\x00",
        etag="e" * 32,
        serial=7,
        fetched_at=123.5,
        upstream_etag='W/"abc"',
    )


def _root(names: tuple[str, ...]) -> RootRecord:
    listing = ProjectListing(tuple((n, i) for i, n in enumerate(names)), serial=len(names))
    return RootRecord(listing, render_root(listing), fetched_at=50.0, upstream_etag='"r1"')


def test_codecs__round_trip_and_refusals() -> None:
    record = _json("demo", "1.0")
    assert decode_json(encode_json(record), "demo/1.0") == record
    assert decode_json(encode_json(record), "demo") is None  # stored under another key
    assert decode_json(encode_json(_json("demo", None)), "demo") == _json("demo", None)
    assert decode_json(b"\x80garbage", "demo/1.0") is None
    assert (
        decode_json(encode_json(record).replace(b'"serial":7', b'"serial":true'), "demo/1.0")
        is None
    )
    root = _root(("demo", "helper"))
    back = decode_root(encode_root(root))
    assert back is not None and back.listing == root.listing
    assert back.rendered == root.rendered  # rendered here again, to the same bytes
    assert decode_root(b'{"format": 1, "projects": [[1, 2]]}') is None


def test_replicas__json_records_shared_and_deleted(s3_config: S3Config, tmp_path: Path) -> None:
    a, b = _replica(tmp_path / "a", s3_config), _replica(tmp_path / "b", s3_config)
    try:
        a.save_json("demo", _json("demo", None))
        a.save_json("demo/1.0", _json("demo", "1.0"))
        a.save_json("demo/../x", _json("demo", "../x"))  # no object key: kept locally only
        assert b.load_json("demo/1.0") == _json("demo", "1.0")  # none here: the bucket's
        assert b.load_json("demo") == _json("demo", None)
        assert b.load_json("demo/../x") is None
        assert b.load_json("other") is None
        assert a.load_json("demo/../x") == _json("demo", "../x")
        assert a.delete_json("demo") == 3
        c = _replica(tmp_path / "c", s3_config)
        try:
            assert c.load_json("demo/1.0") is None  # gone from the bucket too
            assert c.load_json("demo") is None
        finally:
            c.close()
        assert b.load_json("demo/1.0") == _json("demo", "1.0")  # B's own copy stays (its TTL)
    finally:
        a.close()
        b.close()


def test_replicas__root_listing_shared_once_per_listing(
    s3_config: S3Config, tmp_path: Path
) -> None:
    a, b = _replica(tmp_path / "a", s3_config), _replica(tmp_path / "b", s3_config)
    try:
        root = _root(("demo", "helper"))
        a.save_root(root)
        got = b.load_root()
        assert got is not None and got.listing == root.listing and got.rendered == root.rendered
        assert b.load_root() is not None  # kept here: the bucket is not asked again
        assert a.docs is not None
        objects = a.docs.objects
        before = obstore.head(objects, ROOT)["e_tag"]
        root.fetched_at = 99.0  # revalidated (304): the same listing saved again
        a.save_root(root)
        assert obstore.head(objects, ROOT)["e_tag"] == before  # not uploaded again
        a.save_root(_root(("demo", "helper", "new")))
        assert obstore.head(objects, ROOT)["e_tag"] != before
        obstore.put(objects, ROOT, b"not a listing")
        c = _replica(tmp_path / "c", s3_config)
        try:
            assert c.load_root() is None  # unreadable: ignored, never used
            obstore.put(objects, JSON + "demo", b"{}")
            assert c.load_json("demo") is None
        finally:
            c.close()
    finally:
        a.close()
        b.close()


def test_codecs__hostile_bodies_are_ignored_never_raised() -> None:
    """What another machine wrote (JSON records, the root listing, page records): nested
    past the parser's depth is ignored (not a RecursionError on every request), and a fetch
    time in the future, or not finite, never keeps a copy fresh for ever."""
    deep = b"[" * 100_000
    assert decode_json(deep, "demo") is None
    assert decode_root(deep) is None
    record = encode_json(_json("demo", None))
    later = decode_json(record.replace(b'"fetched_at":123.5', b'"fetched_at":1e300'), "demo")
    assert later is not None and later.fetched_at <= time.time()
    for bad in (b"NaN", b"Infinity", b'"inf"'):
        assert (
            decode_json(record.replace(b'"fetched_at":123.5', b'"fetched_at":' + bad), "demo")
            is None
        )
    root = encode_root(_root(("demo",)))
    back = decode_root(root.replace(b'"fetched_at":50.0', b'"fetched_at":1e300'))
    assert back is not None and back.fetched_at <= time.time()
    assert decode_root(root.replace(b'"fetched_at":50.0', b'"fetched_at":NaN')) is None
    assert decode_page(deep, "demo") is None  # a page record, the same
    page = encode_page(_record("demo", 7, "cd" * 32))
    shared = decode_page(page.replace(b'"fetched_at":107.0', b'"fetched_at":1e300'), "demo")
    assert shared is not None and shared.fetched_at <= time.time()
