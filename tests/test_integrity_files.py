"""Issue: a client's transfer completes only with bytes whose sha256 matches the page, with any
number of workers, whatever the upstream sends first. Real server processes, real sockets."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from proxy.runtime import FLUSH_EVERY
from proxy.settings import load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import run_pass
from tests.support.proxy_server import SubprocessProxy
from tests.support.wheels import Built, make_wheel

pytestmark = pytest.mark.e2e
JSON = "application/vnd.pypi.simple.v1+json"


def _fetch_until_whole(url: str, deadline: float, outcomes: list[str]) -> None:
    """Fetch like a retrying client: a cut transfer or a 5xx is retried; a complete 200 ends."""
    with httpx.Client(timeout=20) as client:
        while time.monotonic() < deadline:
            try:
                with client.stream("GET", url) as response:
                    if response.status_code != 200:
                        outcomes.append(f"status {response.status_code}")
                        time.sleep(0.02)
                        continue
                    digest = hashlib.sha256()
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                    outcomes.append(digest.hexdigest())
                    return
            except httpx.TransportError:
                outcomes.append("cut")
        outcomes.append("gave up")


def test_bad_then_good_upstream__no_client_completes_bad_bytes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    files: list[Built] = []
    for i in range(6):
        built = make_wheel(f"lying{i}", "1.0", payload_size=400_000)
        upstream.add_dist(f"lying{i}", built)
        upstream.corrupt_first[built.filename] = 2  # two lying answers, then the truth
        files.append(built)
    upstream.corrupt_pause = 0.02
    cache = tmp_path / "cache"
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "3", cache_dir=cache
    ) as proxy:
        for built in files:
            project = built.filename.split("-")[0]
            # The page first, so every worker can find the file.
            assert httpx.get(f"{proxy.url}/simple/{project}/").status_code == 200
            url = f"{proxy.url}/files/{project}/{built.filename}"
            outcomes: list[str] = []
            deadline = time.monotonic() + 30
            clients = [
                threading.Thread(target=_fetch_until_whole, args=(url, deadline, outcomes))
                for _ in range(8)
            ]
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join()
            complete = [o for o in outcomes if len(o) == 64]
            assert len(complete) == 8, outcomes
            assert set(complete) == {built.sha256}, f"a client completed wrong bytes: {outcomes}"
        log = proxy.log()
    assert "Traceback" not in log, log
    for path in (cache / "files").rglob("*.whl"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.parent.name


def _tmp_left(cache: Path) -> list[str]:
    """What tmp/ holds; a worker starting late probes tmp/ once with a file it removes at
    once (Storage.check_writable), so that one alone is waited out, briefly."""
    deadline = time.monotonic() + 5
    while True:
        names = sorted(p.name for p in (cache / "tmp").iterdir())
        if not any(n.startswith("probe-") for n in names) or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def test_tmp_dir__no_locks_or_partials_left(tmp_path: Path, upstream: FakeUpstream) -> None:
    cache = tmp_path / "cache"
    for i in range(5):
        upstream.add_dist(f"tidy{i}", make_wheel(f"tidy{i}", "1.0"))
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--workers", "2", cache_dir=cache
    ) as proxy:
        for i in range(5):
            page = httpx.get(f"{proxy.url}/simple/tidy{i}/", headers={"Accept": JSON}).json()
            for entry in page["files"]:
                url = httpx.URL(f"{proxy.url}/simple/tidy{i}/").join(entry["url"])
                assert httpx.get(url).status_code == 200
                assert httpx.get(str(url) + ".metadata").status_code == 200
        assert _tmp_left(cache) == []
    # A lock file left by a process that died is swept at the next start.
    (cache / "tmp" / ("0" * 64 + ".lock")).write_text("")
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache):
        assert sorted(p.name for p in (cache / "tmp").iterdir()) == []


def _stored_path(cache: Path, filename: str) -> Path:
    found = [p for p in (cache / "files").rglob(filename) if p.is_file()]
    assert len(found) == 1, found
    return found[0]


def _stats(url: str) -> dict[str, object]:
    """/stats once every worker has written its counters to the shared cache (each does
    every FLUSH_EVERY seconds; the one answering adds its own at once)."""
    time.sleep(FLUSH_EVERY + 0.3)
    data: dict[str, object] = httpx.get(url + "/stats").json()
    return data


def test_damaged_on_disk__wrong_size_never_served(tmp_path: Path, upstream: FakeUpstream) -> None:
    wheel = make_wheel("rotten", "1.0", payload_size=50_000)
    upstream.add_dist("rotten", wheel)
    cache = tmp_path / "cache"
    url_path = f"/files/rotten/{wheel.filename}"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        httpx.get(proxy.url + "/simple/rotten/")
        assert httpx.get(proxy.url + url_path).content == wheel.content
        stored = _stored_path(cache, wheel.filename)
        stored.write_bytes(wheel.content[:1000])  # truncated on disk
        again = httpx.get(proxy.url + url_path)
        assert again.status_code == 200
        assert again.content == wheel.content  # dropped and fetched again, not the stump
        # A Range on a damaged copy is not answered from it either.
        stored.write_bytes(wheel.content[:1000])
        ranged = httpx.get(proxy.url + url_path, headers={"Range": "bytes=-100"})
        assert ranged.status_code == 206
        assert ranged.content == wheel.content[-100:]
        time.sleep(2.5)  # counters are flushed every 2 s
        assert _stats(proxy.url)["integrity_errors"] == 2
    # Offline, a damaged copy is a clean 5xx, not short bytes with a 200.
    stored = _stored_path(cache, wheel.filename)
    stored.write_bytes(wheel.content + b"extra")
    with SubprocessProxy("--offline", cache_dir=cache) as offline:
        answer = httpx.get(offline.url + url_path)
        assert answer.status_code == 503, answer.text
        assert "damaged" in answer.text
        assert httpx.get(offline.url + "/health").status_code == 200


def test_scrub_in_serve__finds_bit_rot(tmp_path: Path, upstream: FakeUpstream) -> None:
    wheel = make_wheel("flipped", "1.0", payload_size=20_000)
    upstream.add_dist("flipped", wheel)
    cache = tmp_path / "cache"
    env = {"PYPI_PROXY_SCRUB_INTERVAL": "0.5"}
    url_path = f"/files/flipped/{wheel.filename}"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache, env=env) as proxy:
        httpx.get(proxy.url + "/simple/flipped/")
        assert httpx.get(proxy.url + url_path).content == wheel.content
        stored = _stored_path(cache, wheel.filename)
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x40  # same size: only hashing can tell
        stored.write_bytes(bytes(data))
        deadline = time.monotonic() + 15
        while stored.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not stored.exists(), "the scrub should have dropped the damaged file"
        time.sleep(2.5)
        figures = _stats(proxy.url)
        assert figures["integrity_errors"] == 1
        scrub = figures["scrub"]
        assert isinstance(scrub, dict)
        assert scrub["last"] is not None
        assert httpx.get(proxy.url + url_path).content == wheel.content


def test_same_filename_twice_on_a_page__each_entry_its_own_bytes(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    first = make_wheel("twice", "1.0")
    second = make_wheel("twice", "1.0", payload_size=3000)  # a re-upload: same name, new bytes
    assert first.filename == second.filename and first.sha256 != second.sha256
    base = upstream.base_url
    entries = [
        {
            "filename": first.filename,
            "url": f"{base}/a/{first.filename}",
            "hashes": {"sha256": first.sha256},
        },
        {
            "filename": second.filename,
            "url": f"{base}/b/{second.filename}",
            "hashes": {"sha256": second.sha256},
        },
    ]
    page = {"meta": {"api-version": "1.1", "_last-serial": 7}, "name": "twice", "files": entries}
    upstream.raw["/simple/twice/"] = (JSON, json.dumps(page).encode())
    upstream.raw[f"/a/{first.filename}"] = ("application/octet-stream", first.content)
    upstream.raw[f"/b/{second.filename}"] = ("application/octet-stream", second.content)
    cache = tmp_path / "cache"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        listing = httpx.get(proxy.url + "/simple/twice/", headers={"Accept": JSON}).json()
        urls = [item["url"] for item in listing["files"]]
        assert len(set(urls)) == 2, urls
        for item in listing["files"]:
            assert item["url"].endswith("/" + first.filename)
            url = httpx.URL(proxy.url + "/simple/twice/").join(item["url"])
            body = httpx.get(url).content
            assert hashlib.sha256(body).hexdigest() == item["hashes"]["sha256"]
        html = httpx.get(proxy.url + "/simple/twice/", headers={"Accept": "text/html"}).text
        hrefs = re.findall(r'href="([^"]+)"', html)
        assert len(set(hrefs)) == 2, hrefs
        for href, built in zip(hrefs, (first, second), strict=True):
            path, _, fragment = href.partition("#")
            assert path.endswith("/" + built.filename) and fragment == f"sha256={built.sha256}"
            body = httpx.get(httpx.URL(proxy.url + "/simple/twice/").join(path)).content
            assert body == built.content


def test_file_larger_than_cache__streamed_not_stored(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    small = [make_wheel(f"small{i}", "1.0", payload_size=100_000) for i in range(3)]
    huge = make_wheel("huge", "1.0", payload_size=1_500_000)
    for built in (*small, huge):
        upstream.add_dist(built.filename.split("-")[0], built)
    cache = tmp_path / "cache"
    with SubprocessProxy(
        "--upstream", upstream.simple_url, "--max-cache-size", "1M", cache_dir=cache
    ) as proxy:
        for built in small:
            project = built.filename.split("-")[0]
            httpx.get(f"{proxy.url}/simple/{project}/")
            assert httpx.get(f"{proxy.url}/files/{project}/{built.filename}").status_code == 200
        httpx.get(f"{proxy.url}/simple/huge/")
        url = f"{proxy.url}/files/huge/{huge.filename}"
        for _ in range(2):
            assert httpx.get(url).content == huge.content
        head = httpx.head(url)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(huge.content))
        assert "accept-ranges" not in head.headers
        ranged = httpx.get(url, headers={"Range": "bytes=0-9"})
        assert ranged.content == huge.content or ranged.content == huge.content[:10]
        names = {p.name for p in (cache / "files").rglob("*.whl")}
        assert names == {b.filename for b in small}, "nothing evicted, the huge file not kept"
        assert not list((cache / "tmp").iterdir())


def test_offline_view__a_file_stored_by_another_process_appears(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Project "other" lists demo's file; prefetching demo stores it, and the offline server
    lists it on other's page too without a restart (a store bumps the files generation)."""
    demo = upstream.index.projects["demo"].files["demo-1.0-py3-none-any.whl"].built
    entry = {
        "filename": demo.filename,
        "url": f"{upstream.base_url}/files/demo/{demo.filename}",
        "hashes": {"sha256": demo.sha256},
        "size": len(demo.content),
    }
    page = {"meta": {"api-version": "1.1", "_last-serial": 3}, "name": "other", "files": [entry]}
    upstream.raw["/simple/other/"] = (JSON, json.dumps(page).encode())
    cache = tmp_path / "cache"
    settings = load_settings(
        None, {}, {"upstream": upstream.simple_url, "cache_dir": cache, "retries": 0}
    )
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as online:
        assert httpx.get(online.url + "/simple/other/").status_code == 200
    with SubprocessProxy("--offline", "--workers", "2", cache_dir=cache) as offline:

        def listed() -> list[str]:
            answer = httpx.get(offline.url + "/simple/other/", headers={"Accept": JSON})
            return [f["filename"] for f in answer.json()["files"]]

        assert listed() == []
        assert run_pass(settings, ["demo"]).ok
        deadline = time.monotonic() + 5
        seen = [listed() for _ in range(6)]
        while seen != [[demo.filename]] * 6 and time.monotonic() < deadline:
            time.sleep(0.2)
            seen = [listed() for _ in range(6)]
        assert seen == [[demo.filename]] * 6  # from every worker, within seconds
