"""HTTP Range parsing (RFC 9110 section 14) for single byte ranges, as wheel readers send them."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import Unsatisfiable

__all__ = ["ByteRange", "Unsatisfiable", "if_range_allows", "parse_range"]

_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


MAX_RANGE_HEADER = 1024


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range to serve, or None to serve the whole file.

    Other units and multiple ranges are ignored (a full 200 is always a correct answer);
    a malformed or unsatisfiable bytes range raises Unsatisfiable.
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if len(header) > MAX_RANGE_HEADER:
        raise Unsatisfiable
    if "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    # ASCII digits only: str.isdigit() also accepts "²" and other digits int() rejects.
    if not dash or not _digits_or_empty(first) or not _digits_or_empty(last):
        raise Unsatisfiable
    if first == "":
        if last == "" or int(last) == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - int(last)), size - 1)
    start = int(first)
    if start >= size:
        raise Unsatisfiable
    if last == "":
        return ByteRange(start, size - 1)
    end = int(last)
    if end < start:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1))


def _digits_or_empty(text: str) -> bool:
    return _DIGITS.issuperset(text)


def if_range_allows(if_range: str | None, etag: str, last_modified: str) -> bool:
    """Whether a Range may be honoured given If-Range: only on an exact, strong validator match."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith("W/"):
        return False
    if value.startswith('"'):
        return value == etag
    return value == last_modified
