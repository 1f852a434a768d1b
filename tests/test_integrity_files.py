"""Issue: a client's transfer completes only with bytes whose sha256 matches the page, with any
number of workers, whatever the upstream sends first. Real server processes, real sockets."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
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
        assert sorted(p.name for p in (cache / "tmp").iterdir()) == []
    # A lock file left by a process that died is swept at the next start.
    (cache / "tmp" / ("0" * 64 + ".lock")).write_text("")
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache):
        assert sorted(p.name for p in (cache / "tmp").iterdir()) == []
