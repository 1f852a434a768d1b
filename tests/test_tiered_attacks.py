"""Attacks on the bucket checks of verify and the scrub (issue 11), against moto's S3 server on
loopback (tests/support/s3.py): damaged objects with no local copy, objects of another size, the
uploader sending a local copy that rotted, and a check racing the uploader's trim."""

from __future__ import annotations

import secrets
from pathlib import Path

import anyio
import obstore

from proxy.models import DistFile, PageRecord, ProjectPage
from proxy.render import render_project
from proxy.runtime import Runtime
from proxy.s3config import S3Config
from proxy.s3store import S3FileStore
from proxy.settings import Settings
from proxy.storage import Storage
from proxy.tiered import wait_uploaded
from proxy.verify import REPAIRED, VerifyReport, verify
from tests.support.s3 import (
    ACCESS_KEY_ID,
    SECRET_ACCESS_KEY,
    s3_config_fixture,  # noqa: F401 (a fixture)
    s3_server_fixture,  # noqa: F401 (a fixture)
)
from tests.test_tiered import _part as part_file
from tests.test_tiered import _tiered

NAME = "demo-1.0.tar.gz"


def _part(root: Path, size: int) -> tuple[Path, str, bytes]:
    return part_file(root, secrets.token_hex(6), size)


def _settings(s3_config: S3Config, cache: Path) -> Settings:
    return Settings(
        cache_dir=cache,
        storage=s3_config.url,
        s3_endpoint=s3_config.endpoint,
        s3_access_key_id=ACCESS_KEY_ID,
        s3_secret_access_key=SECRET_ACCESS_KEY,
        offline=True,
    )


def _verify(settings: Settings) -> VerifyReport:
    async def run() -> VerifyReport:
        runtime = await Runtime.open(settings)
        try:
            return await verify(runtime, repair=True)
        finally:
            await runtime.close()

    return anyio.run(run)


def _stored_in_bucket(settings: Settings, tmp_path: Path, size: int) -> tuple[str, bytes]:
    """A page listing one file, stored and uploaded; then this replica's local copy removed,
    as on a replica that never had one: only the bucket's object is left."""
    part, sha, data = _part(tmp_path, size)
    storage = Storage.from_settings(settings)
    try:
        page = ProjectPage(
            name="demo",
            files=(DistFile(NAME, f"https://files.invalid/{NAME}", {"sha256": sha}, size=size),),
            versions=("1.0",),
        )
        storage.save_page(PageRecord("demo", page, render_project(page, "demo"), 1.0))
        storage.commit(part, sha, NAME)
        assert storage.flush(30)
    finally:
        storage.close()
    local = settings.cache_dir / "files" / sha[:2] / sha / NAME
    assert local.read_bytes() == data
    local.unlink()
    return sha, data


def test_verify__damaged_object_with_no_local_copy_is_deleted_not_kept(
    s3_config: S3Config, tmp_path: Path
) -> None:
    settings = _settings(s3_config, tmp_path / "a")
    sha, data = _stored_in_bucket(settings, tmp_path, 9000)
    bucket = S3FileStore(s3_config)
    damaged = data[:-1] + bytes([data[-1] ^ 1])  # same size: only the hash can tell
    obstore.put(bucket.objects, bucket.key_of(sha, NAME), damaged)
    report = _verify(settings)
    assert (report.checked, report.corrupt, report.dropped) == (1, 1, 1)
    assert report.exit_status == REPAIRED
    assert bucket.stat(sha, NAME) is None  # gone for every replica, not re-uploaded
    assert not (tmp_path / "a" / "uploads" / f"{sha}.{NAME}").exists()


def test_verify__object_of_another_size_with_no_local_copy_is_deleted(
    s3_config: S3Config, tmp_path: Path
) -> None:
    settings = _settings(s3_config, tmp_path / "a")
    sha, data = _stored_in_bucket(settings, tmp_path, 9000)
    bucket = S3FileStore(s3_config)
    obstore.put(bucket.objects, bucket.key_of(sha, NAME), data[:4000])  # truncated
    report = _verify(settings)
    assert (report.checked, report.wrong_size, report.dropped) == (1, 1, 1)
    assert bucket.stat(sha, NAME) is None


def test_tiered__object_of_another_size_behind_a_good_local_copy_is_made_again(
    s3_config: S3Config, tmp_path: Path
) -> None:
    a = _tiered(tmp_path / "a", s3_config)
    part, sha, data = _part(tmp_path, 7000)
    stored, _ = a.put(part, sha, NAME)
    assert wait_uploaded(a)
    obstore.put(a.bucket.objects, a.bucket.key_of(sha, NAME), data + b"appended")
    assert a.check_copies(stored) == 1
    assert wait_uploaded(a)
    remote = a.bucket.stat(sha, NAME)
    assert remote is not None and b"".join(a.bucket.read(remote)) == data


def test_tiered__rotted_local_copy_is_never_uploaded(s3_config: S3Config, tmp_path: Path) -> None:
    a, b = _tiered(tmp_path / "a", s3_config), _tiered(tmp_path / "b", s3_config)
    part, sha, data = _part(tmp_path, 8000)
    stored, _ = a.put(part, sha, NAME)
    assert stored.path is not None
    stored.path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # rot before the upload
    a.upload_pending()
    assert a.bucket.stat(sha, NAME) is None  # the damage did not reach the shared tier
    assert a.pending() == []  # nothing left to send from this copy
    assert a.local.stat(sha, NAME) is None  # and this replica no longer serves it
    assert b.stat(sha, NAME) is None  # every replica fetches it again from the upstream


def test_tiered__check_copies_keeps_the_local_copy_queued_before_deleting_the_object(
    s3_config: S3Config, tmp_path: Path
) -> None:
    """The uploader thread trims the local tier after each upload: a trim that runs while
    check_copies deletes a damaged object must not take the local copy the object is to be
    made again from (it would be the last good copy of the mirror's file)."""
    a = _tiered(tmp_path / "a", s3_config, cap=10_000)
    part, sha, data = _part(tmp_path, 8000)
    stored, _ = a.put(part, sha, NAME)
    assert wait_uploaded(a)
    obstore.put(a.bucket.objects, a.bucket.key_of(sha, NAME), data[:-1] + b"\0")
    # Another file fills the local tier past its cap; its upload's trim runs as the
    # damaged object is deleted (as the uploader thread would, at that moment).
    other, other_sha, _ = _part(tmp_path, 3000)
    a.local.put(other, other_sha, "other-1.0.tar.gz")
    remove = a.bucket.remove

    def remove_while_trimming(sha256: str, filename: str) -> int:
        freed = remove(sha256, filename)
        a._trim()
        return freed

    a.bucket.remove = remove_while_trimming  # type: ignore[method-assign]
    assert a.check_copies(stored) == 1
    a.bucket.remove = remove  # type: ignore[method-assign]
    assert a.local.stat(sha, NAME) is not None  # kept: it was queued for upload first
    assert wait_uploaded(a)
    remote = a.bucket.stat(sha, NAME)
    assert remote is not None and b"".join(a.bucket.read(remote)) == data


def test_tiered__two_replicas_mending_one_object_leave_it_whole(
    s3_config: S3Config, tmp_path: Path
) -> None:
    """Both replicas' scrubs find one damaged object; A deletes it and uploads it again between
    B's read and B's delete, so B deletes A's good object: B then uploads its own good copy, so
    the bucket never ends without the file."""
    a, b = _tiered(tmp_path / "a", s3_config), _tiered(tmp_path / "b", s3_config)
    part, sha, data = _part(tmp_path, 6000)
    stored_a, _ = a.put(part, sha, NAME)
    assert wait_uploaded(a)
    copy = tmp_path / "b.part"
    copy.write_bytes(data)
    stored_b, _ = b.put(copy, sha, NAME)
    assert wait_uploaded(b) and b.uploads.done == 1
    obstore.put(a.bucket.objects, a.bucket.key_of(sha, NAME), data[:-1] + b"\0")
    remove = b.bucket.remove

    def a_mends_first(sha256: str, filename: str) -> int:
        assert a.check_copies(stored_a) == 1 and wait_uploaded(a)
        return remove(sha256, filename)  # the good object A just uploaded

    b.bucket.remove = a_mends_first  # type: ignore[method-assign]
    assert b.check_copies(stored_b) == 1
    b.bucket.remove = remove  # type: ignore[method-assign]
    assert wait_uploaded(b)
    remote = a.bucket.stat(sha, NAME)
    assert remote is not None and b"".join(a.bucket.read(remote)) == data
    assert a.check_copies(stored_a) == 0 and b.check_copies(stored_b) == 0


def test_tiered__upload_finding_an_object_of_another_size_replaces_it(
    s3_config: S3Config, tmp_path: Path
) -> None:
    """check_copies skips a file still queued (its object is not there yet); if an object of
    another size is there by then (truncated, another writer's), the conditional upload must
    not take it for another replica's good copy and leave it for every replica."""
    a = _tiered(tmp_path / "a", s3_config)
    part, sha, data = _part(tmp_path, 6000)
    stored, _ = a.put(part, sha, NAME)
    obstore.put(a.bucket.objects, a.bucket.key_of(sha, NAME), data[:1000])
    assert a.check_copies(stored) == 0  # queued: not checked
    assert wait_uploaded(a)
    remote = a.bucket.stat(sha, NAME)
    assert remote is not None and b"".join(a.bucket.read(remote)) == data


def test_tiered__checks_per_file_do_not_list_the_upload_queue(
    s3_config: S3Config, tmp_path: Path
) -> None:
    """verify's check of each file and each redirect ask whether that one file is queued: a
    listing of the queue each time made a pass quadratic (20,000 files queued after a bucket
    outage: 0.2 s per file checked)."""
    a = _tiered(tmp_path / "a", s3_config)
    part, sha, _ = _part(tmp_path, 2000)
    stored, _ = a.put(part, sha, NAME)

    def no_listing() -> list[tuple[str, str]]:
        raise AssertionError("the whole upload queue was listed for one file")

    a.uploads.pending = no_listing  # type: ignore[method-assign]
    assert a.check_copies(stored) == 0  # queued: its object is not there yet
    assert a.presign(stored, 60) is None
