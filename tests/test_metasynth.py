"""Core metadata read out of wheels the upstream gives none for: ranged reads against the fake
upstream (honest, ignoring ranges, lying about them) and stored copies (issue 10)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from proxy.errors import UpstreamBadResponse
from proxy.metasynth import remote_metadata, stored_metadata
from proxy.runtime import Runtime
from proxy.settings import Settings
from proxy.upstream import RangesIgnored, Upstream
from proxy.wheelmeta import NoMetadata
from tests.support.fake_upstream import FakeUpstream, RawAnswer
from tests.support.wheels import Built, make_wheel


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
            return await remote_metadata(upstream, url, size)
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
