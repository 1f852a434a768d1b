"""A mirror that can itself be mirrored: an edge proxy follows a central one through the
central's serial APIs, incrementally, and serves offline what it copied (issue 12)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.generations import CHECK_EVERY
from proxy.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, run_pass, stored
from tests.support.proxy_server import SubprocessProxy, ThreadedProxy
from tests.support.wheels import make_wheel
from tests.test_e2e import pip_download, uv_install

pytestmark = pytest.mark.e2e
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


class RecordPaths:
    """Every request a proxy answered, as (method, path): what the tier below asked of it."""

    def __init__(self, app: ASGIApp, seen: list[tuple[str, str]]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
def central(
    settings: Settings, tmp_path: Path
) -> Iterator[tuple[ThreadedProxy, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    proxy = ThreadedProxy(dataclasses.replace(settings, cache_dir=tmp_path / "central"))
    proxy.app.add_middleware(RecordPaths, seen=seen)
    with proxy:
        yield proxy, seen


def follower(settings: Settings, above: str, cache: Path) -> Settings:
    return dataclasses.replace(
        settings,
        upstream=above + "/simple/",
        cache_dir=cache,
        allowed_private_networks=("127.0.0.0/8",),
    )


def test_edge_follows_central__first_and_incremental_pass_then_offline(
    settings: Settings,
    upstream: FakeUpstream,
    central: tuple[ThreadedProxy, list[tuple[str, str]]],
    tmp_path: Path,
) -> None:
    proxy, seen = central
    for i in range(8):
        upstream.add_dist(f"quiet{i}", make_wheel(f"quiet{i}", "1.0"))
    assert run_pass(proxy.settings).ok
    edge = follower(settings, proxy.url, tmp_path / "edge")
    seen.clear()
    clock = time.monotonic()
    first = run_pass(edge)
    first_time = time.monotonic() - clock
    assert first.ok, first.errors
    assert first.method == "xmlrpc"
    first_requests = list(seen)
    assert stored(edge.cache_dir) == stored(proxy.settings.cache_dir)
    assert all_whole(edge.cache_dir)

    # One change upstream: a new release, a yank.
    upstream.add_dist("demo", make_wheel("demo", "3.0", requires=["helper>=1"]))
    upstream.yank("demo", "demo-1.0-py3-none-any.whl", "broken")
    assert run_pass(proxy.settings).ok
    # The central serves from memory what its own pass (another process here) changed once it
    # next reads the page's generation (at most CHECK_EVERY later); an edge asking sooner gets
    # the older page, refuses it (StalePage) and asks again: correct, but not what is counted.
    time.sleep(CHECK_EVERY + 0.1)
    seen.clear()
    clock = time.monotonic()
    second = run_pass(edge)
    second_time = time.monotonic() - clock
    assert second.ok, second.errors
    incremental = list(seen)
    pages = sorted(p for m, p in incremental if p.startswith("/simple/"))
    assert pages == ["/simple/demo/"], incremental
    files = [p for m, p in incremental if p.startswith("/files/")]
    assert files and all("demo-3.0" in p for p in files), incremental
    assert len(incremental) <= 6, incremental  # a few XML-RPC calls, one page, one file
    assert len(first_requests) > 3 * len(incremental) // 2

    with SubprocessProxy("--offline", cache_dir=edge.cache_dir) as offline:
        index = offline.url + "/simple/"
        root = httpx.get(index, headers=JSON)
        listed = {p["name"]: p.get("_last-serial") for p in root.json()["projects"]}
        assert listed["demo"] == upstream.index.projects["demo"].serial, listed
        assert root.json()["meta"]["_last-serial"] == second.target
        page = httpx.get(index + "demo/", headers=JSON).json()
        yanked = {f["filename"]: f.get("yanked") for f in page["files"]}
        assert yanked["demo-1.0-py3-none-any.whl"] == "broken", yanked
        got = pip_download(index, tmp_path / "d", "demo==3.0", tmp=tmp_path)
        assert got.returncode == 0, got.stderr + offline.log()
        assert (tmp_path / "d" / "demo-3.0-py3-none-any.whl").exists()
        uv = uv_install(index, tmp_path / "t", "demo", "quiet3", tmp=tmp_path)
        assert uv.returncode == 0, uv.stderr + offline.log()
    print(
        f"tiers: first pass {len(first_requests)} requests in {first_time:.2f}s, "
        f"incremental {len(incremental)} in {second_time:.2f}s"
    )


def test_chain_of_three__a_change_reaches_the_last_edge(
    settings: Settings,
    upstream: FakeUpstream,
    central: tuple[ThreadedProxy, list[tuple[str, str]]],
    tmp_path: Path,
) -> None:
    proxy, _seen = central
    assert run_pass(proxy.settings).ok
    edge = follower(settings, proxy.url, tmp_path / "edge")
    assert run_pass(edge).ok
    with ThreadedProxy(edge) as edge_proxy:
        last = follower(settings, edge_proxy.url, tmp_path / "last")
        assert run_pass(last).ok
        upstream.add_dist("helper", make_wheel("helper", "2.0"))
        upstream.remove_project("demo")
        assert run_pass(proxy.settings).ok
        assert run_pass(edge).ok
        assert run_pass(last).ok
    names = set(stored(last.cache_dir))
    assert "helper-2.0-py3-none-any.whl" in names
    assert not any(n.startswith("demo-") for n in names), names
    assert names == set(stored(proxy.settings.cache_dir))


def test_central_loses_its_changelog__edge_diffs_in_full_not_wrongly(
    settings: Settings, upstream: FakeUpstream, tmp_path: Path
) -> None:
    central = dataclasses.replace(settings, cache_dir=tmp_path / "central")
    with ThreadedProxy(central) as proxy:
        assert run_pass(central).ok
        edge = follower(settings, proxy.url, tmp_path / "edge")
        assert run_pass(edge).ok
    upstream.add_dist("helper", make_wheel("helper", "3.0"))
    upstream.yank("demo", "demo-1.0-py3-none-any.whl")
    assert run_pass(central).ok
    # The central's changelog goes (a wiped state directory, a restore from an old backup).
    for path in (central.cache_dir / "state").glob("changelog.sqlite*"):
        path.unlink()
    seen: list[tuple[str, str]] = []
    restarted = ThreadedProxy(central)
    restarted.app.add_middleware(RecordPaths, seen=seen)
    with restarted:
        edge = follower(settings, restarted.url, tmp_path / "edge")
        result = run_pass(edge)
    assert result.ok, result.errors
    assert "helper-3.0-py3-none-any.whl" in stored(edge.cache_dir)
    assert stored(edge.cache_dir) == stored(central.cache_dir)
    with SubprocessProxy("--offline", cache_dir=edge.cache_dir) as offline:
        page = httpx.get(offline.url + "/simple/demo/", headers=JSON).json()
    assert {f["filename"]: f.get("yanked") for f in page["files"]}["demo-1.0-py3-none-any.whl"], (
        page
    )
    assert ("POST", "/pypi") in seen


class Replay:
    """What ``ReplayOld`` recorded and whether it is armed (shared with the test)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.recorded: list[dict[str, object]] = []
        self.armed = False
        self.replayed = 0

    def arm(self) -> None:
        self.armed = True


class ReplayOld:
    """Answers the first GET of the path after ``arm()`` with the answer recorded for it
    before: a central whose page lags the serial it announced (a cache in front of it, a
    replica that has not caught up)."""

    def __init__(self, app: ASGIApp, state: Replay) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        if scope["type"] != "http" or scope["path"] != state.path or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if state.armed and state.recorded:
            state.armed = False
            state.replayed += 1
            for message in state.recorded:
                await send(message)
            return
        messages: list[dict[str, object]] = []

        async def keep(message: dict[str, object]) -> None:
            messages.append(message)
            await send(message)

        await self.app(scope, receive, keep)  # type: ignore[arg-type]
        if not state.armed:
            state.recorded = messages


def test_edge_never_keeps_a_page_older_than_the_serial_central_announced(
    settings: Settings, upstream: FakeUpstream, tmp_path: Path
) -> None:
    central = dataclasses.replace(settings, cache_dir=tmp_path / "central")
    assert run_pass(central).ok
    proxy = ThreadedProxy(central)
    replay = Replay("/simple/demo/")
    proxy.app.add_middleware(ReplayOld, state=replay)
    with proxy:
        edge = follower(settings, proxy.url, tmp_path / "edge")
        assert run_pass(edge).ok
        assert replay.recorded, "the edge never asked for the page: nothing to replay"
        upstream.add_dist("demo", make_wheel("demo", "4.0"))
        assert run_pass(central).ok
        time.sleep(CHECK_EVERY + 0.1)
        announced = upstream.index.projects["demo"].serial
        replay.arm()
        result = run_pass(edge)
        assert replay.replayed == 1, "the stale answer was never sent: the case was not tried"
        if not result.ok:
            # Refusing the stale page may fail this pass; the next one must then catch up.
            result = run_pass(edge)
        assert result.ok, result.errors
    assert "demo-4.0-py3-none-any.whl" in stored(edge.cache_dir)
    with SubprocessProxy("--offline", cache_dir=edge.cache_dir) as offline:
        response = httpx.get(offline.url + "/simple/demo/", headers=JSON)
        html = httpx.get(offline.url + "/simple/demo/", headers={"Accept": "text/html"})
    assert int(response.headers["X-PyPI-Last-Serial"]) >= announced, response.headers
    assert html.headers["X-PyPI-Last-Serial"] == response.headers["X-PyPI-Last-Serial"]
    assert "demo-4.0-py3-none-any.whl" in html.text
    assert "demo-4.0-py3-none-any.whl" in {f["filename"] for f in response.json()["files"]}


def test_edge_reaches_a_central_that_requires_a_token_through_its_upstream_url(
    settings: Settings, upstream: FakeUpstream, tmp_path: Path
) -> None:
    token = "tier-secret-7f3a"
    central = dataclasses.replace(settings, cache_dir=tmp_path / "central", auth_tokens=(token,))
    assert run_pass(central).ok
    with ThreadedProxy(central) as proxy:
        host = proxy.url.split("://", 1)[1]
        refused = run_pass(follower(settings, proxy.url, tmp_path / "no-token"))
        assert not refused.ok, "a central that requires a token served an edge without one"
        assert stored(tmp_path / "no-token") == {}
        edge = follower(settings, f"http://edge:{token}@{host}", tmp_path / "edge")
        result = run_pass(edge)
        assert result.ok, result.errors
        assert result.method == "xmlrpc"  # the serial API accepted the token too
    assert stored(edge.cache_dir) == stored(central.cache_dir)
    for path in (edge.cache_dir).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".log", ".txt"):
            assert token not in path.read_text(errors="replace"), path
