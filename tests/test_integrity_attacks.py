"""Regression tests for what the attack review found on the file path (/work/attack/ scripts):
lying sizes and hashes on pages, overlong upstream bodies, eviction racing hits, descriptors
leaked by followers. Real server processes against the fake upstream, real sockets."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy
from tests.support.wheels import Built, make_wheel

pytestmark = pytest.mark.e2e
JSON = "application/vnd.pypi.simple.v1+json"
MIB = 1024 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_page(project: str, entries: list[dict[str, object]]) -> tuple[str, bytes]:
    page = {"meta": {"api-version": "1.1", "_last-serial": 1}, "name": project, "files": entries}
    return JSON, json.dumps(page).encode()


def _stored(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "files").rglob("*") if p.is_file())


def _fetch(url: str, outcomes: list[str], headers: dict[str, str] | None = None) -> None:
    """One GET, recorded as "200 <sha256>" (complete), "status <n>" or "cut"."""
    try:
        with (
            httpx.Client(timeout=20) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            body = response.read()
            if response.status_code == 200:
                outcomes.append(f"200 {_sha(body)}")
            else:
                outcomes.append(f"status {response.status_code}")
    except httpx.TransportError:
        outcomes.append("cut")


def _run_all(threads: list[threading.Thread], timeout: float) -> None:
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a client never got an answer"


def _wait_empty(directory: Path, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        left = sorted(p.name for p in directory.iterdir())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


# -- 1. an upstream that streams more than the page's size ------------------------------------


OVERLONG_SIZES = {"under1mib": MIB - 1, "zero": 0, "over1mib": 1_500_000}


def test_overlong_chunked_body__never_a_complete_200_of_wrong_bytes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    # Each page promises ``size`` bytes with the real file's hash; the upstream answers chunked,
    # without a Content-Length, with more garbage than that, in pieces with pauses between
    # (1 MiB - 1: a read that ended exactly at the size looked whole; 1.5 MB: a chunk ran past
    # the Content-Length announced; 0: an empty 200 was answered before anything was checked).
    wanted: dict[str, str] = {}
    for project, size in OVERLONG_SIZES.items():
        real = random.Random(size).randbytes(size) if size else b"not empty at all"
        wanted[project] = _sha(real)
        filename = f"{project}-1.0-py3-none-any.whl"
        entry = {
            "filename": filename,
            "url": f"{upstream.base_url}/blob/{filename}",
            "hashes": {"sha256": wanted[project]},
            "size": size,
        }
        upstream.raw[f"/simple/{project}/"] = _json_page(project, [entry])
        if size == 0:
            upstream.raw_chunked[f"/blob/{filename}"] = [(b"", 0.8), (b"xx", 0.3)]
        else:
            garbage = random.Random(-size).randbytes(size + MIB)
            pieces = [garbage[i : i + MIB] for i in range(0, len(garbage), MIB)]
            upstream.raw_chunked[f"/blob/{filename}"] = [(piece, 0.3) for piece in pieces]
    cache = tmp_path / "cache"
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", cache_dir=cache
    ) as proxy:
        outcomes: dict[str, list[str]] = {project: [] for project in OVERLONG_SIZES}
        clients = []
        for project in OVERLONG_SIZES:
            assert httpx.get(f"{proxy.url}/simple/{project}/").status_code == 200
            url = f"{proxy.url}/files/{project}/{project}-1.0-py3-none-any.whl"
            # Three clients each, so some follow the download from the other worker.
            clients += [
                threading.Thread(target=_fetch, args=(url, outcomes[project])) for _ in range(3)
            ]
        _run_all(clients, 30)
        leftovers = _wait_empty(cache / "tmp", 5)
        log = proxy.log()
    for project, seen in outcomes.items():
        assert len(seen) == 3, outcomes
        wrong = [o for o in seen if o.startswith("200 ") and o != f"200 {wanted[project]}"]
        assert not wrong, f"{project}: a client completed a 200 of other bytes: {outcomes}"
        assert all(not o.startswith("status 5") or o == "status 502" for o in seen), outcomes
    assert "Traceback" not in log, log
    assert _stored(cache) == []
    assert leftovers == []


# -- 2. a page's hash value that is a path ------------------------------------------------------


def _snapshot(root: Path, cache: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` outside the cache (and the proxy's own log): content and mtime."""
    found: dict[str, tuple[str, int]] = {}
    for path in root.rglob("*"):
        if path.is_relative_to(cache) or path.name.startswith("proxy-") or not path.is_file():
            continue
        try:
            found[str(path.relative_to(root))] = (_sha(path.read_bytes()), path.stat().st_mtime_ns)
        except FileNotFoundError:  # made and removed meanwhile: still a change
            found[str(path.relative_to(root))] = ("vanished", 0)
    return found


def test_hash_value_is_a_path__nothing_touched_outside_the_cache(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "poetry.lock").write_text("precious lock file contents\n")
    (victim / "rel.lock").write_text("another precious file\n")
    (tmp_path / "x.lock").write_text("and one more\n")
    data = random.Random(0).randbytes(300_000)
    values = {
        "absolute": str(victim / "poetry"),
        "relative": "../../victim/rel",
        "relx": "../../x",
        "nul": "ab\x00cd",
    }
    for project, value in values.items():
        filename = f"{project}-1.0-py3-none-any.whl"
        entry = {
            "filename": filename,
            "url": f"{upstream.base_url}/blob/{filename}",
            "hashes": {"sha256": value},
            "size": len(data),
        }
        upstream.raw[f"/simple/{project}/"] = _json_page(project, [entry])
        # Slowly, so files made outside the cache while it downloads can be seen.
        upstream.raw_chunked[f"/blob/{filename}"] = [
            (data[i : i + 65536], 0.08) for i in range(0, len(data), 65536)
        ]
    # The same through an HTML page's fragment.
    html_name = "frag-1.0-py3-none-any.whl"
    link = f'<a href="{upstream.base_url}/blob/{html_name}#sha256=../../victim/rel">{html_name}</a>'
    upstream.raw["/simple/frag/"] = ("text/html", link.encode())
    upstream.raw_chunked[f"/blob/{html_name}"] = [(data, 0.3)]
    cache = tmp_path / "cache"
    before = _snapshot(tmp_path, cache)
    changes: list[dict[str, tuple[str, int]]] = []
    watching = True

    def watch() -> None:
        for _ in range(2000):  # bounded: 2000 x 10 ms at most
            if not watching:
                return
            now = _snapshot(tmp_path, cache)
            if now != before:
                changes.append(now)
            time.sleep(0.01)

    statuses: dict[str, int | str] = {}
    watcher = threading.Thread(target=watch)
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        watcher.start()
        try:
            for project in (*values, "frag"):
                filename = html_name if project == "frag" else f"{project}-1.0-py3-none-any.whl"
                httpx.get(f"{proxy.url}/simple/{project}/", timeout=10)
                try:
                    answer = httpx.get(f"{proxy.url}/files/{project}/{filename}", timeout=10)
                    statuses[project] = answer.status_code
                except httpx.TransportError as exc:
                    statuses[project] = f"cut ({type(exc).__name__})"
            time.sleep(0.3)
        finally:
            watching = False
            watcher.join(30)
        log = proxy.log()
    assert not changes, f"files outside the cache changed: {changes[0]} (was {before})"
    assert _snapshot(tmp_path, cache) == before
    assert (victim / "poetry.lock").read_text() == "precious lock file contents\n"
    for status in statuses.values():
        assert isinstance(status, int) and (400 <= status < 500 or status == 502), statuses
    assert "Traceback" not in log, log


# -- 3. pages without sizes: a stored copy truncated on disk -------------------------------------


def test_html_only_upstream__truncated_copy_fetched_again_whole(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.html_only = True  # no sizes on any page
    wheel = make_wheel("rot", "1.0", payload_size=50_000)
    upstream.add_dist("rot", wheel)
    cache = tmp_path / "cache"
    url = f"/files/rot/{wheel.filename}"
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", cache_dir=cache
    ) as proxy:
        httpx.get(f"{proxy.url}/simple/rot/", headers={"Accept": "text/html"})
        assert httpx.get(proxy.url + url).content == wheel.content
        for attempt in range(4):  # several tries, so both workers answer one
            stored = [p for p in _stored(cache) if p.name == wheel.filename]
            assert len(stored) == 1, stored
            stored[0].write_bytes(wheel.content[:1000])  # truncated on disk
            if attempt % 2:
                ranged = httpx.get(proxy.url + url, headers={"Range": "bytes=-100"})
                assert ranged.status_code == 206, (attempt, ranged.status_code)
                assert ranged.content == wheel.content[-100:], attempt
            else:
                again = httpx.get(proxy.url + url)
                assert again.status_code == 200, (attempt, again.status_code)
                assert len(again.content) == len(wheel.content), (attempt, len(again.content))
                assert again.content == wheel.content, attempt


# -- 4. eviction racing hits ------------------------------------------------------------------


def test_eviction_racing_hits__no_cut_transfers_no_tracebacks(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    built: list[Built] = []
    for i in range(30):
        wheel = make_wheel(f"ch{i}", "1.0", payload_size=100_000)
        upstream.add_dist(f"ch{i}", wheel)
        built.append(wheel)
    cache = tmp_path / "cache"
    outcomes: Counter[str] = Counter()
    bad: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    def client(seed: int, base: str, stop: float) -> None:
        rnd = random.Random(seed)
        with httpx.Client(timeout=15) as http:
            for _ in range(5000):
                if time.monotonic() > stop:
                    return
                i = rnd.randrange(len(built))
                wheel = built[i]
                ranged = rnd.random() < 0.5
                headers = {"Range": "bytes=10-99"} if ranged else {}
                want = wheel.content[10:100] if ranged else wheel.content
                method = "RANGE" if ranged else "GET"
                try:
                    with http.stream(
                        "GET", f"{base}/files/ch{i}/{wheel.filename}", headers=headers
                    ) as response:
                        body = response.read()
                        status = response.status_code
                except httpx.TransportError as exc:
                    with lock:
                        outcomes[f"{method} cut"] += 1
                        bad.append((method, f"cut {type(exc).__name__}", i))
                    continue
                with lock:
                    outcomes[f"{method} {status}"] += 1
                    if status in (200, 206) and body != want:
                        bad.append((method, f"{status} wrong bytes ({len(body)})", i))
                    elif status not in (200, 206, 503):
                        bad.append((method, f"status {status}", i))

    cap = ("--max-cache-size", "1M")
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", *cap, cache_dir=cache
    ) as proxy:
        for i in range(len(built)):
            assert httpx.get(f"{proxy.url}/simple/ch{i}/", timeout=10).status_code == 200
        stop = time.monotonic() + 6
        clients = [
            threading.Thread(target=client, args=(seed, proxy.url, stop)) for seed in range(6)
        ]
        _run_all(clients, 60)
        time.sleep(0.5)
        log = proxy.log()
    assert not bad, f"{len(bad)} bad transfers, first {bad[:5]}; all: {dict(outcomes)}"
    completed = outcomes["GET 200"] + outcomes["RANGE 206"]
    assert completed >= 100, dict(outcomes)  # the race really ran
    assert "Exception in ASGI application" not in log, log
    assert "Traceback" not in log, log
    for path in _stored(cache):
        assert _sha(path.read_bytes()) == path.parent.name, path


# -- 5. followers' descriptors ----------------------------------------------------------------


def _workers(pid: int) -> list[int]:
    """The worker processes of the server ``pid`` (uvicorn spawns them; a resource tracker
    beside them is no worker)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state, ppid, ...
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in command:
            found.append(int(entry))
    return found


def _open_under(pid: int, directories: list[Path]) -> list[str]:
    held = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if any(target.startswith(f"{d}/") for d in directories):
            held.append(target)
    return held


def test_followers__no_descriptors_left_on_cache_files(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    wheels = [make_wheel(f"leak{i}", "1.0", payload_size=300_000) for i in range(4)]
    for i, wheel in enumerate(wheels):
        upstream.add_dist(f"leak{i}", wheel)
    upstream.throttle = 0.05  # slow, so the other worker's clients follow the download
    cache = tmp_path / "cache"
    watched = [(cache / "files").resolve(), (cache / "tmp").resolve()]
    debug = {"PYPI_PROXY_LOG_LEVEL": "debug"}  # to see that clients did follow
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", cache_dir=cache, env=debug
    ) as proxy:
        assert proxy.process is not None
        for i in range(len(wheels)):
            assert httpx.get(f"{proxy.url}/simple/leak{i}/").status_code == 200
        workers = _workers(proxy.process.pid)
        assert len(workers) == 2, workers
        outcomes: list[str] = []
        for i, wheel in enumerate(wheels):
            url = f"{proxy.url}/files/leak{i}/{wheel.filename}"
            _run_all([threading.Thread(target=_fetch, args=(url, outcomes)) for _ in range(8)], 30)
        assert outcomes == [f"200 {w.sha256}" for w in wheels for _ in range(8)], outcomes
        deadline = time.monotonic() + 3  # settle: responses close their descriptors last
        while True:
            held = {pid: _open_under(pid, watched) for pid in workers}
            if not any(held.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sorted(workers) == sorted(_workers(proxy.process.pid)), "a worker restarted"
        following = proxy.log().count("following another worker's download")
    assert following >= len(wheels), f"only {following} followers: the case did not happen"
    assert not any(held.values()), f"workers still hold cache files open: {held}"


# -- 6. a file just under the cap -----------------------------------------------------------


def test_file_just_under_the_cap__other_files_stay_stored(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    small = [make_wheel(f"sm{i}", "1.0", payload_size=60_000) for i in range(5)]
    near = make_wheel("near", "1.0", payload_size=960_000)  # under 1 MiB, above 90% of it
    for built in (*small, near):
        upstream.add_dist(built.filename.split("-")[0], built)
    cache = tmp_path / "cache"
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--max-cache-size", "1M", cache_dir=cache
    ) as proxy:
        for built in small:
            project = built.filename.split("-")[0]
            httpx.get(f"{proxy.url}/simple/{project}/")
            assert httpx.get(f"{proxy.url}/files/{project}/{built.filename}").status_code == 200
        httpx.get(f"{proxy.url}/simple/near/")
        assert httpx.get(f"{proxy.url}/files/near/{near.filename}").content == near.content
        time.sleep(1.0)  # eviction runs in the background after a fill
        names = {p.name for p in _stored(cache)}
        log = proxy.log()
    assert {b.filename for b in small} <= names, f"small files evicted: {names}; {log}"
    assert "Traceback" not in log, log


# -- 7, 8. two entries sharing one sha256 ----------------------------------------------------


def _shared(upstream: FakeUpstream, wheel: Built, pages: dict[str, tuple[str, int]]) -> None:
    for project, (filename, size) in pages.items():
        entry = {
            "filename": filename,
            "url": f"{upstream.base_url}/blob/{filename}",
            "hashes": {"sha256": wheel.sha256},
            "size": size,
        }
        upstream.raw[f"/simple/{project}/"] = _json_page(project, [entry])
        upstream.raw[f"/blob/{filename}"] = ("application/octet-stream", wheel.content)


def test_same_sha_two_filenames__every_client_completes_both_stored(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    wheel = make_wheel("same", "1.0", payload_size=800_000)
    names = ["same-1.0-py3-none-any.whl", "same-1.0-py3-none-any.whl.zip"]
    _shared(
        upstream,
        wheel,
        {"pa": (names[0], len(wheel.content)), "pb": (names[1], len(wheel.content))},
    )
    cache = tmp_path / "cache"
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", cache_dir=cache
    ) as proxy:
        for project in ("pa", "pb"):
            assert httpx.get(f"{proxy.url}/simple/{project}/").status_code == 200
        upstream.delay = 0.6  # the upstream answers late, so the requests overlap
        outcomes: list[str] = []
        clients = [
            threading.Thread(
                target=_fetch, args=(f"{proxy.url}/files/p{'ab'[k % 2]}/{names[k % 2]}", outcomes)
            )
            for k in range(10)
        ]
        _run_all(clients, 40)
        upstream.delay = 0
        time.sleep(0.3)
        log = proxy.log()
    assert outcomes == [f"200 {wheel.sha256}"] * 10, outcomes
    stored = {(p.parent.name, p.name) for p in _stored(cache)}
    assert stored == {(wheel.sha256, names[0]), (wheel.sha256, names[1])}, stored
    assert "Traceback" not in log, log


def test_page_lying_about_size__good_copy_of_another_project_kept(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    wheel = make_wheel("same", "1.0", payload_size=200_000)
    name = wheel.filename
    _shared(
        upstream, wheel, {"pa": (name, len(wheel.content)), "pc": (name, len(wheel.content) + 1)}
    )
    cache = tmp_path / "cache"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        for project in ("pa", "pc"):
            assert httpx.get(f"{proxy.url}/simple/{project}/").status_code == 200
        assert httpx.get(f"{proxy.url}/files/pa/{name}").content == wheel.content
        [good] = _stored(cache)
        inode = good.stat().st_ino
        lied = httpx.get(f"{proxy.url}/files/pc/{name}")
        assert lied.status_code in (200, 502), lied.status_code
        if lied.status_code == 200:
            assert lied.content == wheel.content
        assert good.exists(), "the good copy was dropped because another page lied"
        assert good.stat().st_ino == inode, "the good copy was dropped (and fetched again)"
        again = httpx.get(f"{proxy.url}/files/pa/{name}")
        assert again.status_code == 200 and again.content == wheel.content
        log = proxy.log()
    assert "Traceback" not in log, log


# -- a file too big to keep, on a page without sizes --------------------------------------------
# The leader learns it is too big only at the end; it leaves the verified bytes under a
# "verified" name for a while, so followers in the other worker complete.


def test_too_big_file_without_size__followers_in_another_worker_complete(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.html_only = True  # no sizes: nobody knows in advance that it is too big to keep
    keep = make_wheel("keep", "1.0", payload_size=50_000)
    big = make_wheel("bigh", "1.0", payload_size=1_300_000)
    upstream.add_dist("keep", keep)
    upstream.add_dist("bigh", big)
    cache = tmp_path / "cache"
    cap = ("--max-cache-size", "1M")
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", *cap, cache_dir=cache
    ) as proxy:
        for project in ("keep", "bigh"):
            assert httpx.get(f"{proxy.url}/simple/{project}/").status_code == 200
        assert httpx.get(f"{proxy.url}/files/keep/{keep.filename}").content == keep.content
        upstream.throttle = 0.03  # slow, so clients of both workers overlap the download
        outcomes: list[str] = []
        url = f"{proxy.url}/files/bigh/{big.filename}"
        clients = [threading.Thread(target=_fetch, args=(url, outcomes)) for _ in range(10)]
        for thread in clients:
            thread.start()
            time.sleep(0.05)
        for thread in clients:
            thread.join(40)
        assert not any(t.is_alive() for t in clients)
        log = proxy.log()
    assert outcomes == [f"200 {big.sha256}"] * 10, outcomes
    assert {p.name for p in _stored(cache)} == {keep.filename}
    assert "Traceback" not in log, log
