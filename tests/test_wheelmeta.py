"""Reading a wheel's METADATA out of the wheel with a few ranged reads, distrusting every byte."""

from __future__ import annotations

import io
import struct
import zipfile

import anyio
import pytest

from proxy.wheelmeta import TAIL, NoMetadata, read_metadata
from tests.support.wheels import make_wheel


class Ranged:
    """Reads of a byte string, recorded: what a ranged HTTP reader would fetch."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[tuple[int, int]] = []

    async def __call__(self, start: int, end: int) -> bytes:
        assert 0 <= start <= end <= len(self.data), (start, end)
        self.reads.append((start, end))
        return self.data[start:end]


def _read(data: bytes, wheel: str = "x-1.0-py3-none-any.whl") -> tuple[bytes, Ranged]:
    reader = Ranged(data)
    return anyio.run(read_metadata, reader, len(data), wheel), reader


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED, pad: int = 0) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        if pad:
            archive.writestr("big.bin", bytes(pad), compress_type=zipfile.ZIP_STORED)
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_real_wheel__metadata_in_few_small_reads() -> None:
    built = make_wheel("demo", "1.0", requires=["helper>=1"], payload_size=3_000_000)
    got, reader = _read(built.content, built.filename)
    assert got == built.metadata
    assert len(reader.reads) <= 4
    assert sum(end - start for start, end in reader.reads) < TAIL + 10_000


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_stored_and_deflated_members(method: int) -> None:
    data = _zip({"x-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: x\n"}, method)
    assert _read(data)[0] == b"Metadata-Version: 2.1\nName: x\n"


def test_central_directory_far_from_the_end_is_fetched() -> None:
    members = {f"x/m{i}.py": b"x" * 10 for i in range(3000)}  # a directory larger than TAIL
    members["x-1.0.dist-info/METADATA"] = b"Name: x\n"
    got, reader = _read(_zip(members))
    assert got == b"Name: x\n" and len(reader.reads) >= 3


@pytest.mark.parametrize(
    "members",
    [
        {"x/__init__.py": b""},  # no metadata
        {"a-1.dist-info/METADATA": b"A", "b-1.dist-info/METADATA": b"B"},  # two
        {"x-1.0.dist-info/sub/METADATA": b"nested"},  # not at the top of a dist-info
    ],
)
def test_not_exactly_one_metadata__refused(members: dict[str, bytes]) -> None:
    with pytest.raises(NoMetadata):
        _read(_zip(members))


def test_lies_and_damage__refused_never_read_outside() -> None:
    good = _zip({"x-1.0.dist-info/METADATA": b"Name: x\n" * 100})
    cases = [b"", b"PK", b"not a zip at all" * 10, good[:-30], good[: len(good) // 2]]
    # A directory that claims to lie beyond the file, and a flipped byte in the member (CRC).
    eocd = good.rfind(b"PK\x05\x06")
    cases.append(good[: eocd + 16] + struct.pack("<I", len(good) * 4) + good[eocd + 20 :])
    data_at = 30 + len("x-1.0.dist-info/METADATA") + 3  # inside the deflated member
    cases.append(good[:data_at] + bytes([good[data_at] ^ 0xFF]) + good[data_at + 1 :])
    for data in cases:
        with pytest.raises(NoMetadata):
            _read(data)


def test_metadata_bomb__refused() -> None:
    bomb = _zip({"x-1.0.dist-info/METADATA": bytes(64 * 1024**2)})  # 64 MB of zeros, tiny zipped
    with pytest.raises(NoMetadata):
        _read(bomb)


def test_zip64_wheel() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for i in range(70_000):  # more members than a plain end record can count
            archive.writestr(zipfile.ZipInfo(f"x/{i}"), b"")
        archive.writestr("x-1.0.dist-info/METADATA", b"Name: x\n")
    data = buffer.getvalue()
    assert b"PK\x06\x06" in data
    assert _read(data)[0] == b"Name: x\n"
