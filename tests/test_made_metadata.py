"""Metadata for every wheel (issue 10): against an upstream that advertises none, the proxy
announces it and serves ``<wheel>.metadata`` read out of the wheel, so pip and uv resolve a
tree without downloading one whole wheel; offline it is made from the stored wheel."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proxy.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy, ThreadedProxy, client_env
from tests.support.wheels import Built, foreign_wheel, make_wheel
from tests.test_e2e import uv_binary

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


@pytest.fixture
def bare(upstream: FakeUpstream) -> dict[str, Built]:
    """A small tree whose wheels the upstream gives no metadata for (app -> lib1, lib2 -> lib3),
    each wheel big enough that reading it whole would show."""
    tree = {
        "app": make_wheel("app", "1.0", requires=["lib1>=1", "lib2"], payload_size=300_000),
        "lib1": make_wheel("lib1", "1.2", payload_size=300_000),
        "lib2": make_wheel("lib2", "2.0", requires=["lib3"], payload_size=300_000),
        "lib3": make_wheel("lib3", "0.5", payload_size=300_000),
    }
    for name, built in tree.items():
        upstream.add_dist(name, built, with_metadata=False)
    return tree


def _whole_wheel_gets(upstream: FakeUpstream) -> list[str]:
    return [
        r.path
        for r in upstream.requests
        if r.method == "GET" and r.path.endswith(".whl") and "range" not in r.headers
    ]


def test_made_metadata__announced_served_and_kept(
    settings: Settings, upstream: FakeUpstream, bare: dict[str, Built]
) -> None:
    with ThreadedProxy(settings) as proxy:
        page = httpx.get(f"{proxy.url}/simple/lib1/", headers=JSON).json()
        (entry,) = page["files"]
        assert entry["core-metadata"] is True, entry
        html = httpx.get(f"{proxy.url}/simple/lib1/", headers={"Accept": "text/html"}).text
        assert 'data-core-metadata="true"' in html
        url = str(httpx.URL(f"{proxy.url}/simple/lib1/").join(entry["url"]))
        upstream.reset_log()
        made = httpx.get(url + ".metadata")
        assert made.status_code == 200 and made.content == bare["lib1"].metadata
        assert _whole_wheel_gets(upstream) == []
        asked = len(upstream.requests)
        again = httpx.get(url + ".metadata")
        assert again.content == bare["lib1"].metadata
        assert len(upstream.requests) == asked  # kept: a hit
        head = httpx.head(url + ".metadata")
        assert int(head.headers["content-length"]) == len(bare["lib1"].metadata)
        # Not a wheel, not listed: no metadata is invented.
        assert (
            httpx.get(f"{proxy.url}/files/lib1/lib1-9.9-py3-none-any.whl.metadata").status_code
            == 404
        )


def test_made_metadata__off_by_setting(
    settings: Settings, upstream: FakeUpstream, bare: dict[str, Built]
) -> None:
    with ThreadedProxy(dataclasses.replace(settings, wheel_metadata=False)) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/lib1/", headers=JSON).json()["files"]
        assert "core-metadata" not in entry
        url = str(httpx.URL(f"{proxy.url}/simple/lib1/").join(entry["url"]))
        assert httpx.get(url + ".metadata").status_code == 404


@pytest.mark.e2e
def test_pip_and_uv_resolve_without_downloading_a_wheel_then_offline(
    tmp_path: Path, upstream: FakeUpstream, bare: dict[str, Built]
) -> None:
    cache = tmp_path / "cache"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        index = proxy.url + "/simple/"
        upstream.reset_log()
        report = tmp_path / "report.json"
        pip = subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--no-cache-dir", "--disable-pip-version-check", "--index-url", index,
                "--report", str(report), "app",
            ],
            env=client_env(tmp_path), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert pip.returncode == 0, pip.stderr + proxy.log()
        resolved = {i["metadata"]["name"] for i in json.loads(report.read_text())["install"]}
        assert resolved == {"app", "lib1", "lib2", "lib3"}, resolved
        assert _whole_wheel_gets(upstream) == [], "pip's resolution downloaded whole wheels"

        uv = subprocess.run(
            [uv_binary(), "pip", "compile", "-", "--index-url", index, "--no-cache",
             "--python", sys.executable, "--no-header"],
            input="app\n", env=client_env(tmp_path), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert uv.returncode == 0, uv.stderr + proxy.log()
        pinned = {line.split("==")[0] for line in uv.stdout.splitlines() if "==" in line}
        assert pinned == {"app", "lib1", "lib2", "lib3"}, uv.stdout
        assert _whole_wheel_gets(upstream) == [], "uv's resolution downloaded whole wheels"

        # Installing downloads the wheels; the metadata files were stored along the way.
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-cache-dir", "--index-url", index,
             "--dest", str(tmp_path / "d"), "app"],
            env=client_env(tmp_path), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
    made = sorted(p.name for p in (cache / "files").rglob("*.whl.metadata"))
    assert made == sorted(b.filename + ".metadata" for b in bare.values()), made
    for path in (cache / "files").rglob("*.whl.metadata"):
        path.unlink()  # gone (evicted): offline, made again from the stored wheels
    with SubprocessProxy("--offline", cache_dir=cache) as offline:
        uv = subprocess.run(
            [uv_binary(), "pip", "compile", "-", "--index-url", offline.url + "/simple/",
             "--no-cache", "--python", sys.executable, "--no-header"],
            input="app\n", env=client_env(tmp_path), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert uv.returncode == 0, uv.stderr + offline.log()
    assert len(list((cache / "files").rglob("*.whl.metadata"))) == 4


def test_made_metadata__read_by_ranges_is_replaced_by_the_verified_wheels(
    settings: Settings, upstream: FakeUpstream
) -> None:
    """A node answering ranges with another wheel of the same size: what ranges gave is kept
    only until the verified wheel is stored, then made again from it."""
    good = make_wheel("mm", "1.0", requires=["safe"], payload_size=100_000)
    evil = make_wheel("mm", "1.0", requires=["evil"], payload_size=100_000)
    assert len(good.content) == len(evil.content)
    upstream.add_dist("mm", good, with_metadata=False)
    upstream.range_body[good.filename] = evil.content
    with ThreadedProxy(settings) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/mm/", headers=JSON).json()["files"]
        url = str(httpx.URL(f"{proxy.url}/simple/mm/").join(entry["url"]))
        assert httpx.get(url + ".metadata").content == evil.metadata  # the lie, by ranges
        whole = httpx.get(url)
        assert whole.content == good.content  # verified by its sha256, stored
        assert httpx.get(url + ".metadata").content == good.metadata
        assert httpx.get(url + ".metadata").content == good.metadata  # and kept


def test_made_metadata__whole_wheel_unavailable_online_is_a_502(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built = make_wheel("mf", "1.0", payload_size=100_000)
    upstream.add_dist("mf", built, with_metadata=False)
    with ThreadedProxy(settings) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/mf/", headers=JSON).json()["files"]
        url = str(httpx.URL(f"{proxy.url}/simple/mf/").join(entry["url"]))
        upstream.ranges = "ignored"
        upstream.corrupt_first[built.filename] = 5  # every whole GET lies
        answer = httpx.get(url + ".metadata")
        assert answer.status_code == 502, (answer.status_code, answer.text)
        assert httpx.get(proxy.url + "/health").status_code == 200


def test_range_on_a_miss__passed_through_without_a_validator(
    settings: Settings, upstream: FakeUpstream
) -> None:
    """Unverified upstream bytes carry no ETag (nothing to join them with verified ranges as
    one representation) and no-store; once verified, ranges carry the sha256 ETag."""
    built = make_wheel("rs", "1.0", payload_size=200_000)
    upstream.add_dist("rs", built)
    with ThreadedProxy(settings) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/rs/", headers=JSON).json()["files"]
        url = str(httpx.URL(f"{proxy.url}/simple/rs/").join(entry["url"]))
        first = httpx.get(url, headers={"Range": "bytes=10-99"})
        assert first.status_code == 206 and first.content == built.content[10:100]
        assert "etag" not in first.headers and first.headers["cache-control"] == "no-store"
        deadline = time.monotonic() + 10
        while not list((settings.cache_dir / "files").rglob(built.filename)):
            assert time.monotonic() < deadline, "the fill behind the range never stored"
            time.sleep(0.02)
        hit = httpx.get(url, headers={"Range": "bytes=10-99"})
        assert hit.status_code == 206 and hit.content == built.content[10:100]
        assert hit.headers["etag"] == f'"{built.sha256}"'


def test_made_metadata__another_projects_dist_info_is_a_clear_404(
    settings: Settings, upstream: FakeUpstream
) -> None:
    """A wheel whose METADATA sits in another project's dist-info gives no made metadata: by
    ranges, then from the verified whole wheel, a 404 that says why (no 5xx to retry), and
    asking again costs the upstream nothing."""
    built = foreign_wheel("mixed-1.0-py3-none-any.whl", "evil-1.0.dist-info")
    upstream.add_dist("mixed", built, with_metadata=False)
    with ThreadedProxy(settings) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/mixed/", headers=JSON).json()["files"]
        url = str(httpx.URL(f"{proxy.url}/simple/mixed/").join(entry["url"]))
        answer = httpx.get(url + ".metadata")
        assert answer.status_code == 404, (answer.status_code, answer.text)
        assert "evil-1.0.dist-info" in answer.text
        asked = len(upstream.requests)
        again = httpx.get(url + ".metadata")
        assert again.status_code == 404 and len(upstream.requests) == asked
        assert httpx.get(url).content == built.content  # the wheel itself is served as it is


@pytest.mark.parametrize("why", ["lying", "too_big"])
def test_made_metadata__failure_remembered_costs_the_upstream_nothing_more(
    settings: Settings, upstream: FakeUpstream, why: str
) -> None:
    """Ranges ignored, and the whole wheel not to be had (every whole GET lies, or it is too
    big to keep): a 502, then the same 502 again and again with no request upstream, until
    the wheel is stored another way."""
    built = make_wheel("mr", "1.0", payload_size=100_000)
    upstream.add_dist("mr", built, with_metadata=False)
    if why == "too_big":
        settings = dataclasses.replace(settings, max_cache_size=50_000)
    with ThreadedProxy(settings) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/mr/", headers=JSON).json()["files"]
        url = str(httpx.URL(f"{proxy.url}/simple/mr/").join(entry["url"]))
        upstream.ranges = "ignored"
        if why == "lying":
            upstream.corrupt_first[built.filename] = 1000
        upstream.reset_log()
        assert httpx.get(url + ".metadata").status_code == 502
        asked = len(upstream.requests)
        assert asked > 0
        for _ in range(3):
            again = httpx.get(url + ".metadata")
            assert again.status_code == 502 and "whole" in again.text
        assert len(upstream.requests) == asked, upstream.requests[asked:]
        if why == "too_big":
            return
        # The wheel stored since (the upstream mended): its metadata is made from it.
        upstream.corrupt_first.clear()
        assert httpx.get(url).content == built.content
        made = httpx.get(url + ".metadata")
        assert made.status_code == 200 and made.content == built.metadata


def test_made_metadata__no_metadata_remembered_after_the_wheel_is_evicted(
    settings: Settings, upstream: FakeUpstream
) -> None:
    built = foreign_wheel("gone-1.0-py3-none-any.whl", "other-1.0.dist-info")
    upstream.add_dist("gone", built, with_metadata=False)
    with ThreadedProxy(settings) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/gone/", headers=JSON).json()["files"]
        url = str(httpx.URL(f"{proxy.url}/simple/gone/").join(entry["url"]))
        assert httpx.get(url + ".metadata").status_code == 404  # read from the whole wheel
        for path in (settings.cache_dir / "files").rglob(built.filename):
            path.unlink()  # evicted
        upstream.reset_log()
        again = httpx.get(url + ".metadata")
        assert again.status_code == 404 and "other-1.0.dist-info" in again.text
        assert upstream.requests == []


def test_made_metadata__a_transient_upstream_failure_is_not_remembered(
    settings: Settings, upstream: FakeUpstream
) -> None:
    """Ranges ignored and the whole wheel cut short on the way (an upstream error, not a
    verdict on the wheel): a 502, and once the upstream answers again the next ask makes the
    metadata, rather than the 502 remembered for the page's whole freshness."""
    built = make_wheel("mt", "1.0", payload_size=100_000)
    upstream.add_dist("mt", built, with_metadata=False)
    with ThreadedProxy(settings) as proxy:
        (entry,) = httpx.get(f"{proxy.url}/simple/mt/", headers=JSON).json()["files"]
        url = str(httpx.URL(f"{proxy.url}/simple/mt/").join(entry["url"]))
        upstream.ranges = "ignored"
        upstream.truncate_files = True
        assert httpx.get(url + ".metadata").status_code == 502
        upstream.truncate_files = False  # the upstream mended
        made = httpx.get(url + ".metadata")
        assert made.status_code == 200, (made.status_code, made.text)
        assert made.content == built.metadata
