"""A wheel's core metadata (``*.dist-info/METADATA``) read out of the wheel itself, for indexes
that do not serve PEP 658 ``.metadata`` files (issue 10).

A zip keeps its table of contents at the end, so the metadata of a remote wheel costs two or
three small ranged reads (the tail, perhaps the central directory, then one member) instead of
the whole file. The reader is passed in (ranged HTTP, or a stored file), so this module does
no I/O of its own, and everything read is distrusted: sizes are capped, offsets checked against
the file, the member's CRC checked after inflating.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.distinfo import belongs_to
from proxy.errors import ProxyError

TAIL = 64 * 1024 + 22  # the end record plus the longest zip comment
MAX_DIRECTORY = 16 * 1024**2  # a central directory larger than this is not a wheel's
MAX_METADATA = 8 * 1024**2  # METADATA files are KBs; README-heavy ones reach a few hundred
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_METADATA_NAME = re.compile(r"[^/\n]+\.dist-info/METADATA")  # matched whole (fullmatch)

Reader = Callable[[int, int], Awaitable[bytes]]  # (start, end exclusive) -> those bytes


class NoMetadata(ProxyError):
    """The file is not a wheel whose metadata can be read (the caller falls back)."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    method: int
    crc: int
    compressed: int
    size: int
    offset: int  # of its local header


def _end_record(tail: bytes, tail_start: int, total: int) -> tuple[int, int, int | None]:
    """(directory offset, directory size, zip64 end record offset or None)."""
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise NoMetadata("no zip end record")
    _sig, _disk, _cd_disk, _n_disk, _n, cd_size, cd_offset, _clen = struct.unpack(
        "<4sHHHHIIH", tail[at : at + 22]
    )
    locator = at - 20
    placeholder = cd_offset == 0xFFFFFFFF or cd_size == 0xFFFFFFFF
    if placeholder and locator >= 0 and tail[locator : locator + 4] == _EOCD64_LOCATOR:
        (eocd64,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        if not 0 <= eocd64 < total:
            raise NoMetadata("zip64 end record outside the file")
        return 0, 0, eocd64
    return cd_offset, cd_size, None


def _parse_zip64(record: bytes) -> tuple[int, int]:
    if len(record) < 56 or record[:4] != _EOCD64:
        raise NoMetadata("bad zip64 end record")
    cd_size, cd_offset = struct.unpack("<QQ", record[40:56])
    return cd_offset, cd_size


def _zip64_extra(extra: bytes, fields: list[int]) -> list[int]:
    """Replace the 0xFFFFFFFF placeholders in ``fields`` (size, compressed, offset) from the
    zip64 extra field."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack("<HH", extra[at : at + 4])
        body = extra[at + 4 : at + 4 + length]
        if tag == 1:
            values = list(struct.unpack(f"<{len(body) // 8}Q", body[: len(body) // 8 * 8]))
            out = []
            for value in fields:
                out.append(values.pop(0) if value == 0xFFFFFFFF and values else value)
            return out
        at += 4 + length
    return fields


def find_metadata(directory: bytes, wheel_filename: str) -> Member:
    """The one ``<name>.dist-info/METADATA`` member listed in a central directory, which
    must be in the dist-info of the project and version ``wheel_filename`` names."""
    found: list[Member] = []
    at = 0
    while at + 46 <= len(directory) and directory[at : at + 4] == _CENTRAL:
        (
            _sig,
            _made,
            _need,
            flags,
            method,
            _time,
            _date,
            crc,
            compressed,
            size,
            name_len,
            extra_len,
            comment_len,
            _disk,
            _internal,
            _external,
            offset,
        ) = struct.unpack("<4sHHHHHHIIIHHHHHII", directory[at : at + 46])
        name_bytes = directory[at + 46 : at + 46 + name_len]
        extra = directory[at + 46 + name_len : at + 46 + name_len + extra_len]
        at += 46 + name_len + extra_len + comment_len
        name = name_bytes.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        if not _METADATA_NAME.fullmatch(name):
            continue
        size, compressed, offset = _zip64_extra(extra, [size, compressed, offset])
        found.append(Member(name, method, crc, compressed, size, offset))
    if len(found) != 1:
        raise NoMetadata(f"{len(found)} dist-info METADATA members, one expected")
    dist_info = found[0].name.partition("/")[0]
    if not belongs_to(dist_info, wheel_filename):
        raise NoMetadata(f"its METADATA is in {dist_info}, not the dist-info of {wheel_filename}")
    return found[0]


def inflate(member: Member, data: bytes) -> bytes:
    if member.size > MAX_METADATA or member.compressed > MAX_METADATA:
        raise NoMetadata("METADATA larger than any a wheel has")
    if member.method == 0:
        out = data[: member.size]
    elif member.method == 8:
        inflater = zlib.decompressobj(-15)
        try:
            out = inflater.decompress(data, MAX_METADATA + 1)
        except zlib.error as exc:
            raise NoMetadata(f"METADATA does not inflate: {exc}") from None
    else:
        raise NoMetadata(f"METADATA compressed with method {member.method}")
    if len(out) != member.size or zlib.crc32(out) != member.crc:
        raise NoMetadata("METADATA fails its CRC or size")
    return out


async def read_metadata(read: Reader, total: int, wheel_filename: str) -> bytes:
    """The METADATA bytes of the wheel ``wheel_filename`` of ``total`` bytes that ``read``
    reads from (refused when they sit in another project's or version's dist-info)."""
    if total < 22:
        raise NoMetadata("too small to be a zip")
    tail_start = max(0, total - TAIL)
    tail = await read(tail_start, total)
    cd_offset, cd_size, eocd64 = _end_record(tail, tail_start, total)
    if eocd64 is not None:
        record = (
            tail[eocd64 - tail_start : eocd64 - tail_start + 56]
            if eocd64 >= tail_start
            else await read(eocd64, eocd64 + 56)
        )
        cd_offset, cd_size = _parse_zip64(record)
    if cd_size > MAX_DIRECTORY or cd_offset + cd_size > total:
        raise NoMetadata("central directory outside the file or too large")
    if cd_offset >= tail_start:
        directory = tail[cd_offset - tail_start : cd_offset - tail_start + cd_size]
    else:
        directory = await read(cd_offset, cd_offset + cd_size)
    member = find_metadata(directory, wheel_filename)
    if member.compressed > MAX_METADATA or member.size > MAX_METADATA:
        raise NoMetadata("METADATA larger than any a wheel has")
    # The local header's name and extra lengths may differ from the directory's: read them.
    header_end = member.offset + 30
    if header_end > total:
        raise NoMetadata("member header outside the file")
    header = await read(member.offset, header_end)
    if header[:4] != _LOCAL:
        raise NoMetadata("no local header where the directory says")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    start = header_end + name_len + extra_len
    end = start + member.compressed
    if end > total:
        raise NoMetadata("member data outside the file")
    return inflate(member, await read(start, end) if member.compressed else b"")
