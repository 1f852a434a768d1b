"""Storage from settings, in one place: the cache directory alone, or a bucket behind it.

Every caller (the server's runtime, the command line's checks, verify, stats) gets its Storage
here, so the choice the ``storage`` setting makes is made once. The S3 parts are imported only
when a bucket is asked for.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from proxy.errors import CacheUnusable
from proxy.storage import Storage
from proxy.workfiles import unusable

if TYPE_CHECKING:
    from proxy.settings import Settings


def open_storage(cls: type[Storage], settings: Settings) -> Storage:
    if not settings.storage:
        return cls(settings.cache_dir)

    from proxy.localstore import LocalFileStore
    from proxy.s3config import s3_config_from
    from proxy.s3store import S3FileStore
    from proxy.sharedrecords import SharedRecords
    from proxy.tiered import TieredFileStore

    config = s3_config_from(
        settings.storage,
        os.environ,
        endpoint=settings.s3_endpoint,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
    )
    bucket = S3FileStore(config)
    root = settings.cache_dir
    try:
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        files = TieredFileStore(
            LocalFileStore(root / "files"),
            bucket,
            work_dir=root / "tmp",
            queue_dir=root / "uploads",
            local_cap=settings.local_copies_size,
        )
    except OSError as exc:
        raise unusable(root, exc) from None
    return cls(root, files, SharedRecords(bucket))


def check_bucket(storage: Storage) -> None:
    """StoreUnavailable unless the bucket answers (a wrong name or endpoint, bad credentials):
    one line before a server starts, not an error at the first file."""
    bucket = getattr(storage.files, "bucket", None)
    check = getattr(bucket, "check", None)
    if callable(check):
        check()


def check_storage(settings: Settings) -> None:
    """That the cache directory ``settings`` name is usable and, with a bucket, that it
    answers. SettingsError (one line for an operator) when either is unusable."""
    storage = Storage.from_settings(settings)
    try:
        storage.check_writable()
        try:
            check_bucket(storage)
        except OSError as exc:  # StoreUnavailable: names the bucket and status, no secret
            raise CacheUnusable(
                f"cannot use the storage {settings.storage}: {exc}; check storage, "
                "s3_endpoint and the credentials (AWS_ACCESS_KEY_ID, ...)"
            ) from None
    finally:
        storage.close()
