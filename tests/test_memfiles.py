"""The in-memory tier of hot files (proxy.memfiles): right bytes, never a replaced or evicted
file's, bounded."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import httpx

from proxy.filestore import StoredFile
from proxy.memfiles import MemoryFiles, read_verified
from proxy.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel

WHEEL = "/files/demo/demo-1.0-py3-none-any.whl"


def _stored(tmp_path: Path, name: str, data: bytes) -> StoredFile:
    path = tmp_path / name
    path.write_bytes(data)
    st = os.stat(path)
    return StoredFile(
        sha256=hashlib.sha256(data).hexdigest(),
        filename=name,
        size=st.st_size,
        mtime=st.st_mtime,
        atime=st.st_atime,
        location=str(path),
        path=path,
        inode=st.st_ino,
    )


def _load(memory: MemoryFiles, stored: StoredFile) -> None:
    assert stored.path is not None
    assert not memory.wants(stored)  # the first hit only notes it
    assert memory.wants(stored)
    fd = os.open(stored.path, os.O_RDONLY)
    try:
        memory.keep(stored, read_verified(fd, stored))
    finally:
        os.close(fd)


def test_memfiles__held_on_second_hit_and_served_while_unchanged(tmp_path: Path) -> None:
    memory = MemoryFiles(1000)
    stored = _stored(tmp_path, "a.whl", b"x" * 100)
    _load(memory, stored)
    held = memory.get(stored)
    assert held is not None and held.data == b"x" * 100
    assert memory.held_bytes == 100


def test_memfiles__replaced_file_is_not_served(tmp_path: Path) -> None:
    memory = MemoryFiles(1000)
    stored = _stored(tmp_path, "a.whl", b"x" * 100)
    _load(memory, stored)
    replaced = _stored(tmp_path, "a.whl.new", b"x" * 100)
    os.replace(tmp_path / "a.whl.new", tmp_path / "a.whl")
    again = dataclasses.replace(replaced, filename="a.whl")
    assert memory.get(again) is None  # another inode at the same path
    assert len(memory) == 0 and memory.held_bytes == 0


def test_memfiles__bytes_that_do_not_hash_right_are_not_held(tmp_path: Path) -> None:
    memory = MemoryFiles(1000)
    stored = _stored(tmp_path, "a.whl", b"x" * 100)
    wrong = dataclasses.replace(stored, sha256="0" * 64)
    assert not memory.wants(wrong) and memory.wants(wrong)
    assert wrong.path is not None
    fd = os.open(wrong.path, os.O_RDONLY)
    try:
        data = read_verified(fd, wrong)
    finally:
        os.close(fd)
    assert data is None
    assert memory.keep(wrong, data) is None
    assert memory.get(wrong) is None


def test_memfiles__bounded_least_recently_used_out(tmp_path: Path) -> None:
    memory = MemoryFiles(100)
    assert not memory.wants(_stored(tmp_path, "big.whl", b"b" * 26))  # over a quarter
    assert not memory.wants(_stored(tmp_path, "big.whl", b"b" * 26))
    files = [_stored(tmp_path, f"f{i}.whl", bytes([65 + i]) * 25) for i in range(5)]
    for stored in files[:4]:
        _load(memory, stored)
    assert memory.get(files[0]) is not None  # now the most recently used
    _load(memory, files[4])
    assert memory.held_bytes <= 100 and len(memory) == 4
    assert memory.get(files[1]) is None  # the least recently used went
    assert all(memory.get(f) is not None for f in (files[0], files[2], files[3], files[4]))


def _stored_wheel(cache: Path) -> Path:
    (path,) = [p for p in (cache / "files").rglob("*.whl") if p.is_file()]
    return path


def test_memory_tier__serves_verified_bytes_never_a_replaced_file(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    built = make_wheel("demo", "1.0")
    values: dict[str, object] = {
        "upstream": upstream.simple_url,
        "cache_dir": tmp_path / "cache",
        "retries": 0,
    }
    with ThreadedProxy(load_settings(None, {}, values)) as proxy:
        for _ in range(3):  # a miss, a hit, and the hit that takes it into memory
            response = httpx.get(proxy.url + WHEEL)
            assert response.content == built.content
        path = _stored_wheel(tmp_path / "cache")
        st = path.stat()
        # The same file (inode, size, mtime) with other bytes: only memory still has the
        # verified ones, and they are what a hit gets, whole and by range.
        with path.open("r+b") as f:
            f.write(b"\0" * 64)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert httpx.get(proxy.url + WHEEL).content == built.content
        ranged = httpx.get(proxy.url + WHEEL, headers={"range": "bytes=0-63"})
        assert ranged.status_code == 206 and ranged.content == built.content[:64]
        head = httpx.head(proxy.url + WHEEL)
        assert head.headers["content-length"] == str(len(built.content))
        assert head.content == b""
        # Replaced at its path (another inode): the memory copy is no longer this file's.
        fresh = path.with_name("fresh")
        fresh.write_bytes(b"\1" * len(built.content))
        os.replace(fresh, path)
        assert httpx.get(proxy.url + WHEEL).content == b"\1" * len(built.content)
        # Evicted: fetched again from the upstream, never answered from memory.
        path.unlink()
        fetched = upstream.count("/files/demo/demo-1.0")
        assert httpx.get(proxy.url + WHEEL).content == built.content
        assert upstream.count("/files/demo/demo-1.0") == fetched + 1
        stats = httpx.get(proxy.url + "/stats").json()
        assert stats["bytes_served"] == 6 * len(built.content) + 64  # the HEAD sends none


def test_memory_tier__off_reads_every_hit_from_disk(tmp_path: Path, upstream: FakeUpstream) -> None:
    built = make_wheel("demo", "1.0")
    values: dict[str, object] = {
        "upstream": upstream.simple_url,
        "cache_dir": tmp_path / "cache",
        "memory_files_size": 0,
    }
    with ThreadedProxy(load_settings(None, {}, values)) as proxy:
        for _ in range(3):
            assert httpx.get(proxy.url + WHEEL).content == built.content
        path = _stored_wheel(tmp_path / "cache")
        with path.open("r+b") as f:
            f.write(b"\0" * 64)
        assert httpx.get(proxy.url + WHEEL).content[:64] == b"\0" * 64


def test_memfiles__second_hits_arriving_together_read_in_a_bounded_amount(
    tmp_path: Path,
) -> None:
    """Many hot files' second hits at once (each reserved before any read ends): what is
    being read in beside the tier stays within a quarter of it, not one file per request."""
    memory = MemoryFiles(400)
    files = [_stored(tmp_path, f"f{i}.whl", bytes([65 + i]) * 100) for i in range(8)]
    for stored in files:
        assert not memory.wants(stored)
    reserved = [stored for stored in files if memory.wants(stored)]
    assert sum(stored.size for stored in reserved) <= 100, len(reserved)
    for stored in reserved:
        memory.keep(stored, None)  # the reads ended (here: did not verify)
    assert memory.loading_bytes == 0
    assert memory.wants(files[-1])  # still a candidate: a later hit takes it in
