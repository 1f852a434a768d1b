"""A prefetched wheel's ``.metadata`` is read out of the stored wheel when its bytes hash to what
the page gives for the upstream's file (proxy/sidecar.py): one request less per wheel, never a
byte other than the upstream's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, run_pass, stored
from tests.support.wheels import make_wheel
from tests.test_prefetch import configure


def _metadata_of(cache: Path, filename: str) -> bytes:
    [path] = [p for p in (cache / "files").rglob(filename + ".metadata") if p.is_file()]
    return path.read_bytes()


def test_pass__metadata_made_from_the_wheel_without_asking(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    settings = configure(tmp_path, upstream)
    result = run_pass(settings)
    assert result.ok, result.errors
    wheel_gets = [r.path for r in upstream.requests if r.path.endswith(".whl")]
    assert len(wheel_gets) == 3
    metadata_gets = [r.path for r in upstream.requests if r.path.endswith(".metadata")]
    assert metadata_gets == []
    names = stored(settings.cache_dir)
    for project in upstream.index.projects.values():
        for fake in project.files.values():
            assert fake.built.filename + ".metadata" in names
            got = _metadata_of(settings.cache_dir, fake.built.filename)
            assert got == fake.built.metadata  # the upstream's very bytes
    assert all_whole(settings.cache_dir)
    assert result.files_added == 6


def test_pass__metadata_unlike_the_wheels_member_is_fetched(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """An index whose .metadata differs from the wheel's METADATA (rewritten, say): the page's
    hash is of the index's file, so that file is fetched, and stored as the index serves it."""
    built = make_wheel("odd", "1.0")
    other = dataclasses.replace(built, metadata=built.metadata + b"Extra: rewritten\n")
    upstream.add_dist("odd", other)
    settings = configure(tmp_path, upstream)
    result = run_pass(settings)
    assert result.ok, result.errors
    asked = [r.path for r in upstream.requests if r.path.endswith(".metadata")]
    assert [p.rpartition("/")[2] for p in asked] == [built.filename + ".metadata"]
    assert _metadata_of(settings.cache_dir, built.filename) == other.metadata
    assert all_whole(settings.cache_dir)
