"""The mirror facade (proxy/cache.py) without a server or a port: storage in tmp_path, the
upstream an httpx MockTransport that answers one JSON page and its files."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from proxy.answers import FileAnswer, Handover, Hit, Refusal, SizeOnly, Stream
from proxy.cache import Mirror
from proxy.heldfiles import HeldFile
from proxy.origins import AddressGuard, IPAddress, literal_address
from proxy.pageservice import PageService
from proxy.stats import Stats
from proxy.storage import Storage
from proxy.upstream import Upstream

INDEX = "https://index.test/simple/"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"

pytestmark = pytest.mark.anyio


async def _public(host: str, port: int) -> list[IPAddress]:
    address = literal_address("8.8.8.8")
    assert address is not None
    return [address]


@dataclass
class FakeIndex:
    """A project ``demo`` whose page lists ``files``; ``wrong`` sends other bytes for a file
    than the page's sha256 says; ``down`` answers 503 to everything."""

    files: dict[str, bytes] = field(default_factory=dict)
    wrong: set[str] = field(default_factory=set)
    down: bool = False
    asked: Counter[str] = field(default_factory=Counter)

    def page(self) -> bytes:
        entries = [
            {
                "filename": name,
                "url": f"https://files.test/{name}",
                "hashes": {"sha256": hashlib.sha256(body).hexdigest()},
                "size": len(body),
            }
            for name, body in self.files.items()
        ]
        return json.dumps(
            {"meta": {"api-version": "1.1"}, "name": "demo", "files": entries}
        ).encode()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked[request.url.path] += 1
        if self.down:
            return httpx.Response(503)
        if request.url.path == "/simple/demo/":
            return httpx.Response(200, content=self.page(), headers={"content-type": JSON_TYPE})
        name = request.url.path.rsplit("/", 1)[-1]
        if request.url.host == "files.test" and name in self.files:
            body = self.files[name]
            if name in self.wrong:
                body = bytes(len(body))  # the right length, other bytes
            # A stream, as a network answer is: the filler reads it raw, chunk by chunk.
            return httpx.Response(
                200, stream=httpx.ByteStream(body), headers={"content-length": str(len(body))}
            )
        return httpx.Response(404)


@dataclass
class Setup:
    mirror: Mirror
    stats: Stats
    storage: Storage
    fake: FakeIndex


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Setup]]:
    opened: list[tuple[Mirror, Storage, httpx.AsyncClient | None]] = []

    def build(
        fake: FakeIndex,
        *,
        offline: bool = False,
        cap: int | None = None,
        name: str = "c",
        hand_over: bool = False,
    ) -> Setup:
        storage = Storage(tmp_path / name)
        stats = Stats()
        client = None
        upstream = None
        if not offline:
            client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
            guard = AddressGuard(INDEX, resolver=_public)
            upstream = Upstream(
                client, INDEX, retries=0, backoff=0, guard=guard, allowed_file_hosts=["files.test"]
            )
        pages = PageService(
            storage,
            upstream,
            stats,
            ttl=600,
            negative_ttl=60,
            memory_bytes=2**20,
            allowed_file_hosts=["files.test"],
        )
        mirror = Mirror(storage, pages, stats, upstream, max_cache_size=cap, hand_over=hand_over)
        opened.append((mirror, storage, client))
        return Setup(mirror, stats, storage, fake)

    yield build
    for mirror, storage, client in opened:
        await mirror.close()
        if client is not None:
            await client.aclose()
        storage.close()


async def _body(answer: FileAnswer) -> bytes:
    """What a response would send, with the bytes reported as sent (as responses do)."""
    if isinstance(answer, Hit):
        try:
            data = os.pread(answer.fd, 1 << 20, 0)
        finally:
            os.close(answer.fd)
        answer.sent(len(data))
        return data
    assert isinstance(answer, Stream), answer
    chunks = [chunk async for chunk in answer.chunks]
    data = b"".join(chunks)
    answer.sent(len(data))
    return data


WHEEL = "demo-1.0-py3-none-any.whl"
BYTES = b"wheel bytes " * 1000


async def test_miss_then_hit__fetched_once_and_counted(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    first = await s.mirror.file("demo", WHEEL)
    assert isinstance(first, Stream) and first.outcome == "miss"
    assert await _body(first) == BYTES
    second = await s.mirror.file("demo", WHEEL)
    assert isinstance(second, Hit) and second.outcome == "hit"
    assert second.sha256 == hashlib.sha256(BYTES).hexdigest()
    assert await _body(second) == BYTES
    assert s.fake.asked[f"/{WHEEL}"] == 1
    assert s.stats.pending["bytes_fetched"] == len(BYTES)
    assert s.stats.pending["bytes_served"] == 2 * len(BYTES)
    assert s.mirror.stored_totals()["files"] == 1


async def test_head_and_range_on_a_miss__one_download_one_miss(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    head = await s.mirror.file("demo", WHEEL, head=True)
    # The page gives the size: answered at once, ranges promised, nothing fetched.
    assert isinstance(head, SizeOnly) and head.outcome == "miss" and head.ranges
    assert head.size == len(BYTES) and s.fake.asked[f"/{WHEEL}"] == 0
    # A Range this upstream cannot pass through (it ignores ranges) waits for the whole file,
    # answered from it, and a miss: counted once, not once per read.
    ranged = await s.mirror.file("demo", WHEEL, range_header="bytes=0-9")
    assert isinstance(ranged, Hit) and ranged.outcome == "miss"
    assert await _body(ranged) == BYTES
    again = await s.mirror.file("demo", WHEEL, ranged=True)
    assert isinstance(again, Hit) and again.outcome == "hit"
    os.close(again.fd)
    assert s.fake.asked[f"/{WHEEL}"] == 2  # the refused ranged read, then the download
    assert s.stats.pending["bytes_fetched"] == len(BYTES)


async def test_too_big_to_keep__head_is_its_size_without_a_download(
    make: Callable[..., Setup],
) -> None:
    s = make(FakeIndex({WHEEL: BYTES}), cap=len(BYTES) // 2)
    head = await s.mirror.file("demo", WHEEL, head=True)
    assert isinstance(head, SizeOnly) and head.size == len(BYTES)
    assert s.fake.asked[f"/{WHEEL}"] == 0


async def test_wrong_bytes__refused_not_stored_counted(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}, wrong={WHEEL}))
    answer = await s.mirror.file("demo", WHEEL)
    # Refused outright when the download failed before the answer began, else cut short:
    # never the whole of the wrong bytes.
    if isinstance(answer, Stream):
        with pytest.raises(Exception, match="sha256"):
            await _body(answer)
    else:
        assert isinstance(answer, Refusal) and answer.kind == "upstream_failed"
        assert "sha256" in answer.message
    assert s.stats.pending["integrity_errors"] == 1
    assert s.mirror.stored_totals()["files"] == 0
    # A HEAD is answered from the page (it sends no byte, so it promises none); a Range
    # that must wait for the file is refused as the GET was, never answered from wrong bytes.
    head = await s.mirror.file("demo", WHEEL, head=True)
    assert isinstance(head, SizeOnly) and head.size == len(BYTES)
    tail = await s.mirror.file("demo", WHEEL, range_header="bytes=-10")
    assert isinstance(tail, Refusal) and tail.kind == "upstream_failed"
    assert s.stats.pending["integrity_errors"] == 2


async def test_not_listed_and_upstream_404__not_found(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    unlisted = await s.mirror.file("demo", "demo-9.0-py3-none-any.whl")
    assert isinstance(unlisted, Refusal) and unlisted.kind == "not_found"
    s.fake.files = {}  # the page is cached; the file has gone upstream
    gone = await s.mirror.file("demo", WHEEL)
    assert isinstance(gone, Refusal) and gone.kind == "not_found"


async def test_upstream_down__page_and_file_refused(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}, down=True))
    answer = await s.mirror.file("demo", WHEEL)
    assert isinstance(answer, Refusal) and answer.kind == "upstream_failed"


async def test_offline__held_file_served_missing_one_refused(make: Callable[..., Setup]) -> None:
    other = "demo-2.0-py3-none-any.whl"
    online = make(FakeIndex({WHEEL: BYTES, other: b"two"}))
    assert await _body(await online.mirror.file("demo", WHEEL)) == BYTES
    await online.mirror.close()
    online.storage.close()
    offline = make(FakeIndex(), offline=True)
    hit = await offline.mirror.file("demo", WHEEL)
    assert isinstance(hit, Hit) and await _body(hit) == BYTES
    missing = await offline.mirror.file("demo", other)
    assert isinstance(missing, Refusal) and missing.kind == "not_found"
    assert "offline" in missing.message
    page = await offline.mirror.page("demo")
    # Offline, the page lists only what the mirror can serve.
    assert WHEEL.encode() in page.rendered.html.raw and other.encode() not in page.rendered.html.raw


async def test_page_outcomes__miss_then_hit(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    first = await s.mirror.page("demo")
    second = await s.mirror.page("demo")
    assert (first.outcome, second.outcome) == ("miss", "hit")
    assert s.fake.asked["/simple/demo/"] == 1


async def test_forget__page_fetched_again(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    await s.mirror.page("demo")
    await s.mirror.forget("demo")
    assert await s.mirror.stored_page("demo") is None
    again = await s.mirror.page("demo")
    assert again.outcome == "miss" and s.fake.asked["/simple/demo/"] == 2


async def test_held_files_survive_eviction(make: Callable[..., Setup]) -> None:
    names = [f"demo-{i}.0-py3-none-any.whl" for i in range(4)]
    bodies = {n: bytes([i]) * 1000 for i, n in enumerate(names)}
    s = make(FakeIndex(bodies), cap=2500)
    kept = hashlib.sha256(bodies[names[0]]).hexdigest()
    row = HeldFile(names[0], kept, 1000)
    assert s.mirror.hold("demo", [row]) == {kept}
    assert s.mirror.hold("other", [row]) == set()  # held already
    assert s.mirror.release("other", [row]) == set()  # demo still holds it
    for name in names:
        assert await _body(await s.mirror.file("demo", name)) == bodies[name]
        await s.mirror.settle()
    assert s.storage.stored(kept, names[0]) is not None
    assert s.mirror.stored_totals()["bytes"] <= 2500
    assert s.stats.pending["evicted_files"] >= 1
    # Released, it is evicted like any other file once the cache is over its cap again.
    assert s.mirror.release("demo", [row]) == {kept}
    s.fake.files = {**bodies, "demo-9.0-py3-none-any.whl": b"x" * 1000}
    await s.mirror.forget("demo")
    assert await _body(await s.mirror.file("demo", "demo-9.0-py3-none-any.whl")) == b"x" * 1000
    await s.mirror.settle()
    assert s.storage.stored(kept, names[0]) is None


async def test_held_copy__damaged_copy_dropped(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    assert await _body(await s.mirror.file("demo", WHEEL)) == BYTES
    sha = hashlib.sha256(BYTES).hexdigest()
    assert s.mirror.stored_copy(sha, WHEEL, len(BYTES)) is not None
    assert s.mirror.stored_copy(sha, WHEEL, len(BYTES) + 1) is None
    assert s.storage.stored(sha, WHEEL) is None


async def test_hand_over__hits_named_for_the_front_server(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}), hand_over=True)
    miss = await s.mirror.file("demo", WHEEL)
    assert isinstance(miss, Stream)  # a miss is always the proxy's to send
    await _body(miss)
    served = s.stats.pending["bytes_served"]
    hit = await s.mirror.file("demo", WHEEL)
    sha = hashlib.sha256(BYTES).hexdigest()
    assert isinstance(hit, Handover) and hit.relative == f"{sha[:2]}/{sha}/{WHEEL}"
    assert s.stats.pending["bytes_served"] == served + len(BYTES)  # sent by the front server
    head = await s.mirror.file("demo", WHEEL, head=True)
    assert isinstance(head, Handover)
    assert s.stats.pending["bytes_served"] == served + len(BYTES)  # a HEAD sends no body


async def test_figures__every_count_once_and_what_is_held(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    assert await _body(await s.mirror.file("demo", WHEEL)) == BYTES
    first = await s.mirror.figures()
    assert first.counters["bytes_fetched"] == len(BYTES)
    assert first.cache == {"projects": 1, "files": 1, "bytes": len(BYTES)}
    again = await s.mirror.figures()  # written once: asking twice adds nothing
    assert again.counters["bytes_fetched"] == len(BYTES)
    assert await s.mirror.usable()


async def test_page_records__an_unreadable_record_is_reported_not_skipped(
    make: Callable[..., Setup],
) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    await s.mirror.page("demo")
    s.storage.index.set("page:broken", "not a page record")
    records = dict(s.mirror.page_records())
    assert sorted(records) == ["broken", "demo"]
    assert records["broken"] is None
    demo = records["demo"]
    assert demo is not None and [f.filename for f in demo.page.files] == [WHEEL]


async def test_hash_of__the_bytes_as_they_are_now(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    assert await _body(await s.mirror.file("demo", WHEEL)) == BYTES
    sha = hashlib.sha256(BYTES).hexdigest()
    stored = s.mirror.stored_copy(sha, WHEEL)
    assert stored is not None and stored.path is not None
    assert s.mirror.hash_of(stored) == sha
    Path(stored.path).write_bytes(bytes(len(BYTES)))  # bit rot: the same size, other bytes
    assert s.mirror.hash_of(stored) == hashlib.sha256(bytes(len(BYTES))).hexdigest()
    assert s.mirror.drop(sha, WHEEL, damaged=True) == len(BYTES)
    assert s.stats.pending["integrity_errors"] == 1
    assert s.mirror.hash_of(stored) is None  # gone


async def test_catalog__projects_and_files_from_the_mirror(make: Callable[..., Setup]) -> None:
    other = "demo-2.0-py3-none-any.whl"
    s = make(FakeIndex({WHEEL: BYTES, other: b"two" * 100}))
    assert await _body(await s.mirror.file("demo", WHEEL)) == BYTES
    s.mirror.hold("demo", [HeldFile(WHEEL, hashlib.sha256(BYTES).hexdigest(), len(BYTES))])
    for sort in ("name", "bytes"):
        rows, as_of = s.mirror.list_projects(sort, limit=10)
        assert [(r.name, r.files, r.bytes, r.pinned) for r in rows] == [("demo", 1, len(BYTES), 1)]
        assert as_of > 0
    rows, _ = s.mirror.list_projects("name", after="demo", limit=10)
    assert rows == []
    record = await s.mirror.stored_page("demo")
    assert record is not None
    assert s.mirror.project_facts(record).listed == 2
    files = {f.filename: (f.stored, f.pinned) for f in s.mirror.project_files(record)}
    assert files == {WHEEL: (True, True), other: (False, False)}


async def test_state__lock_note_lease_and_serial_answer(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    first, second = s.mirror.lock("scrub.lock"), s.mirror.lock("scrub.lock")
    assert not first.held()
    assert first.take() and first.held()
    assert not second.take()  # one holder per cache directory
    first.release()
    assert not first.held() and second.take()
    second.release()
    assert s.mirror.note("scrub:last") is None
    s.mirror.set_note("scrub:last", {"checked": 3})
    assert s.mirror.note("scrub:last") == {"checked": 3}
    assert s.mirror.lease("prefetch") is None  # this machine's store alone: no shared lease
    body = s.mirror.serial_answer("changelog_last_serial", ())
    assert b"<methodResponse>" in body and b"<fault>" not in body
    assert b"<fault>" in s.mirror.serial_answer("no_such_method", ())


async def test_stored_figures__what_every_process_wrote(make: Callable[..., Setup]) -> None:
    s = make(FakeIndex({WHEEL: BYTES}))
    assert await _body(await s.mirror.file("demo", WHEEL)) == BYTES
    assert s.mirror.stored_figures().counters["bytes_fetched"] == 0  # not yet written
    await s.mirror.figures()  # writes this process's counts
    stored = s.mirror.stored_figures()
    assert stored.counters["bytes_fetched"] == len(BYTES)
    assert stored.cache == {"projects": 1, "files": 1, "bytes": len(BYTES)}
