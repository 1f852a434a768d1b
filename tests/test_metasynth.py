"""Core metadata read out of wheels the upstream gives none for: ranged reads against the fake
upstream (honest, ignoring ranges, lying about them) and stored copies (issue 10)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from proxy.errors import UpstreamBadResponse
from proxy.filestore import StoredFile
from proxy.fill import Target
from proxy.follow import wait_done
from proxy.metasynth import MadeMetadata, remote_metadata, stored_metadata
from proxy.models import DistFile
from proxy.runtime import Runtime
from proxy.settings import Settings
from proxy.upstream import Upstream
from proxy.upstreamtypes import RangesIgnored
from proxy.wheelmeta import NoMetadata
from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.wheels import Built, foreign_wheel, make_wheel


def _big(upstream: FakeUpstream) -> tuple[Built, str]:
    built = make_wheel("heavy", "1.0", payload_size=2 * 1024 * 1024)
    upstream.add_dist("heavy", built, with_metadata=False)
    return built, f"{upstream.base_url}/files/heavy/{built.filename}"


async def _with_upstream(settings: Settings) -> AsyncIterator[Upstream]:
    runtime = await Runtime.open(settings)
    try:
        assert runtime.upstream is not None
        yield runtime.upstream
    finally:
        await runtime.close()


def _remote(settings: Settings, url: str, size: int | None) -> bytes:
    async def main() -> bytes:
        async for upstream in _with_upstream(settings):
            return await remote_metadata(upstream, url, size, url.rpartition("/")[2])
        raise AssertionError("no upstream")

    return anyio.run(main)


def test_remote_metadata__a_few_small_ranged_reads_not_the_wheel(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built, url = _big(upstream)
    upstream.reset_log()
    assert _remote(settings, url, len(built.content)) == built.metadata
    asked = [r for r in upstream.requests if r.path.startswith("/files/heavy/")]
    assert 1 <= len(asked) <= 4, asked
    assert all("range" in r.headers for r in asked), asked


def test_remote_metadata__size_unknown_learned_from_the_server(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built, url = _big(upstream)
    assert _remote(settings, url, None) == built.metadata


def test_remote_metadata__server_ignoring_ranges_is_left_unread(
    settings: Settings, upstream: FakeUpstream
) -> None:
    _built, url = _big(upstream)
    upstream.ranges = "ignored"
    with pytest.raises(RangesIgnored):
        _remote(settings, url, None)


def test_remote_metadata__shifted_ranges_never_give_wrong_bytes(
    settings: Settings, upstream: FakeUpstream
) -> None:
    _built, url = _big(upstream)
    upstream.ranges = "shifted"
    with pytest.raises((NoMetadata, UpstreamBadResponse)):
        _remote(settings, url, None)


def test_remote_metadata__page_size_that_differs_from_the_server_refused(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built, url = _big(upstream)
    with pytest.raises(NoMetadata, match="page says"):
        _remote(settings, url, len(built.content) + 1)


def test_remote_metadata__not_a_zip(settings: Settings, upstream: FakeUpstream) -> None:
    url = f"{upstream.base_url}/files/plain/plain-1.0.tar.gz"
    upstream.raw_routes["/files/plain/plain-1.0.tar.gz"] = RawAnswer(
        status=206, headers={"Content-Range": "bytes 0-9/10"}, body=b"0123456789"
    )
    with pytest.raises(NoMetadata):
        _remote(settings, url, None)


def test_stored_metadata__from_the_file_and_truncation_refused(tmp_path: Path) -> None:
    built = make_wheel("kept", "1.0", payload_size=300_000)
    path = tmp_path / built.filename
    path.write_bytes(built.content)
    assert anyio.run(stored_metadata, path) == built.metadata
    path.write_bytes(built.content[: len(built.content) // 2])
    with pytest.raises(NoMetadata):
        anyio.run(stored_metadata, path)


def _entry(upstream: FakeUpstream, built: Built, project: str) -> DistFile:
    return DistFile(
        filename=built.filename,
        url=f"{upstream.base_url}/files/{project}/{built.filename}",
        hashes={"sha256": built.sha256},
        size=len(built.content),
    )


def _make(settings: Settings, entry: DistFile, whole: list[Target], offline: bool = False) -> bytes:
    async def main() -> bytes:
        runtime = await Runtime.open(settings)
        try:

            async def fetch_whole(target: Target) -> StoredFile | None:
                whole.append(target)
                assert runtime.filler is not None
                progress = runtime.filler.start(target)
                await wait_done(progress)
                return runtime.storage.stored(entry.sha256 or "", entry.filename)

            made = MadeMetadata(runtime.storage, None if offline else runtime.upstream, fetch_whole)
            assert await made.stored(entry) is None
            stored = await made.make(entry)
            if stored is None:
                return b""
            again = await made.stored(entry)
            assert again is not None and again.sha256 == stored.sha256
            return b"".join(runtime.storage.read(stored))
        finally:
            await runtime.close()

    return anyio.run(main)


def test_made_metadata__from_ranges_stored_and_found_again(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built, _url = _big(upstream)
    whole: list[Target] = []
    assert _make(settings, _entry(upstream, built, "heavy"), whole) == built.metadata
    assert whole == []  # never the whole wheel
    full = [
        r for r in upstream.requests if r.path.startswith("/files/") and "range" not in r.headers
    ]
    assert full == [], full


def test_made_metadata__server_ignoring_ranges__whole_wheel_fetched_once(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built, _url = _big(upstream)
    upstream.ranges = "ignored"
    whole: list[Target] = []
    assert _make(settings, _entry(upstream, built, "heavy"), whole) == built.metadata
    assert len(whole) == 1


def test_made_metadata__offline_only_from_a_stored_wheel(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built, _url = _big(upstream)
    entry = _entry(upstream, built, "heavy")
    assert _make(dataclasses.replace(settings, offline=True), entry, [], offline=True) == b""
    whole: list[Target] = []
    upstream.ranges = "ignored"
    assert _make(settings, entry, whole) == built.metadata  # stores the wheel on the way
    for made in (settings.cache_dir / "files").rglob("*.whl.metadata"):
        made.unlink()  # gone (evicted): made again from the stored wheel, with no network
    upstream.reset_log()
    offline = dataclasses.replace(settings, offline=True)
    assert _make(offline, entry, [], offline=True) == built.metadata
    assert upstream.requests == []


def test_remote_metadata__in_another_projects_dist_info_refused(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built = foreign_wheel("mixed-1.0-py3-none-any.whl", "other-1.0.dist-info")
    upstream.add_dist("mixed", built, with_metadata=False)
    url = f"{upstream.base_url}/files/mixed/{built.filename}"
    with pytest.raises(NoMetadata, match=r"other-1\.0\.dist-info"):
        _remote(settings, url, len(built.content))
