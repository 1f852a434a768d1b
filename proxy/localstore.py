"""Package files in a local directory: ``<files>/ab/<sha256>/<filename>``.

The layout every version wrote, so a cache directory of an earlier version keeps working, and
a static server (nginx) could serve the tree as it is: a path proves its content. The access
time lives on the file itself (set explicitly on each touch, so ``noatime`` mounts do not
matter), which survives restarts and is shared by every process on the machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio

from proxy.filestore import StoredFile
from proxy.names import is_safe_filename, is_sha256

STREAM_CHUNK = 256 * 1024


class LocalFileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def shared(self) -> bool:
        return False

    def path_of(self, sha256: str, filename: str) -> Path:
        """The only place the layout is spelled out. ValueError for anything not storable:
        a page's hash field or filename must never name a path outside the tree."""
        if not is_sha256(sha256) or not is_safe_filename(filename):
            raise ValueError("not a storable file")
        return self.root / sha256[:2] / sha256 / filename

    def _stored(self, sha256: str, filename: str, path: Path, st: os.stat_result) -> StoredFile:
        return StoredFile(
            sha256=sha256,
            filename=filename,
            size=st.st_size,
            mtime=st.st_mtime,
            atime=st.st_atime,
            location=str(path),
            path=path,
            inode=st.st_ino,
        )

    def stat(self, sha256: str, filename: str) -> StoredFile | None:
        try:
            path = self.path_of(sha256, filename)
        except ValueError:
            return None
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return self._stored(sha256, filename, path, st)

    def put(self, source: Path, sha256: str, filename: str) -> tuple[StoredFile, bool]:
        final = self.path_of(sha256, filename)
        final.parent.mkdir(parents=True, exist_ok=True)
        existed = final.exists()
        os.replace(source, final)  # atomic: whole or absent, whoever looks
        return self._stored(sha256, filename, final, os.stat(final)), not existed

    def remove(self, sha256: str, filename: str) -> int:
        try:
            path = self.path_of(sha256, filename)
        except ValueError:
            return 0
        try:
            size = path.stat().st_size
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return 0
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty: another name may share the digest
        return size

    def touch(self, stored: StoredFile, now: float) -> None:
        if stored.path is None:
            return
        with contextlib.suppress(OSError):
            st = stored.path.stat()
            os.utime(stored.path, (now, st.st_mtime))

    def iter_files(self) -> Iterator[StoredFile]:
        if not self.root.is_dir():
            return
        for prefix in os.scandir(self.root):
            if not prefix.is_dir():
                continue
            for digest in os.scandir(prefix.path):
                if not digest.is_dir() or not is_sha256(digest.name):
                    continue
                for entry in os.scandir(digest.path):
                    if entry.is_file():
                        with contextlib.suppress(FileNotFoundError):
                            path = Path(entry.path)
                            yield self._stored(digest.name, entry.name, path, entry.stat())

    def read(self, stored: StoredFile, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        path = stored.path or self.path_of(stored.sha256, stored.filename)
        with path.open("rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk

    async def stream(self, stored: StoredFile, start: int, end: int) -> AsyncIterator[bytes]:
        path = stored.path or self.path_of(stored.sha256, stored.filename)
        async with await anyio.open_file(path, "rb") as f:
            await f.seek(start)
            left = end - start
            while left > 0:
                chunk = await f.read(min(STREAM_CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk

    def presign(self, stored: StoredFile, expires: float) -> str | None:
        return None
