"""A byte-bounded in-memory LRU of page records, so a hot page never touches the disk."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from proxy.models import Rendered

V = TypeVar("V")


class MemoryLRU(Generic[V]):
    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._items: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: V, size: int) -> None:
        self.pop(key)
        if size > self._max:
            return
        self._items[key] = (value, size)
        self._bytes += size
        while self._bytes > self._max:
            _key, (_value, old) = self._items.popitem(last=False)
            self._bytes -= old

    def pop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]

    def __len__(self) -> int:
        return len(self._items)  # proxy.generations bounds what it remembers by this count


def record_size(rendered: Rendered) -> int:
    """What a page record costs here, by its rendered forms: the parsed page costs about as
    much memory as its JSON; count it twice over to be safe."""
    return (len(rendered.json.raw) + len(rendered.html.raw)) * 3
