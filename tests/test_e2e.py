"""The proxy as users run it (``python -m proxy serve``), driven by real pip and uv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from proxy.runtime import FLUSH_EVERY
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy, client_env

pytestmark = pytest.mark.e2e


def pip_download(
    index: str, dest: Path, *requirements: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--index-url",
            index,
            "--dest",
            str(dest),
            "--no-cache-dir",
            "--disable-pip-version-check",
            *requirements,
        ],
        env=client_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


def uv_binary() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    assert Path(found).exists(), "uv is installed with the test extras"
    return found


def uv_install(
    index: str, target: Path, *requirements: str, tmp: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            uv_binary(),
            "pip",
            "install",
            "--index-url",
            index,
            "--target",
            str(target),
            "--python",
            sys.executable,
            "--no-cache",
            *requirements,
        ],
        env=client_env(tmp),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_pip_and_uv__online_then_offline(tmp_path: Path, upstream: FakeUpstream) -> None:
    cache = tmp_path / "cache"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        index = proxy.url + "/simple/"
        first = pip_download(index, tmp_path / "d1", "demo", tmp=tmp_path)
        assert first.returncode == 0, first.stderr + proxy.log()
        assert sorted(p.name for p in (tmp_path / "d1").iterdir()) == [
            "demo-2.0-py3-none-any.whl",
            "helper-1.5-py3-none-any.whl",
        ]
        fetched = upstream.count("/files/")
        second = pip_download(index, tmp_path / "d2", "demo", tmp=tmp_path)
        assert second.returncode == 0, second.stderr
        assert upstream.count("/files/") == fetched  # every file from the cache

        uv = uv_install(index, tmp_path / "t1", "demo==1.0", "helper", tmp=tmp_path)
        assert uv.returncode == 0, uv.stderr + proxy.log()
        assert (tmp_path / "t1" / "demo" / "__init__.py").read_text().count("1.0")
        # Each worker writes its counters to the shared cache every FLUSH_EVERY seconds:
        # /stats, answered by one of them, has the others' within that.
        deadline = time.monotonic() + FLUSH_EVERY * 3
        while True:
            stats = httpx.get(proxy.url + "/stats").json()
            if stats["files"]["hits"] >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stats["files"]["hits"] >= 2 and stats["hit_ratio"] > 0

    upstream.stop()  # the upstream is gone: offline must not need it
    upstream.reset_log()
    with SubprocessProxy("--offline", "--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        index = proxy.url + "/simple/"
        offline = pip_download(index, tmp_path / "d3", "demo", tmp=tmp_path)
        assert offline.returncode == 0, offline.stderr + proxy.log()
        uv = uv_install(index, tmp_path / "t2", "demo==1.0", "helper", tmp=tmp_path)
        assert uv.returncode == 0, uv.stderr + proxy.log()
        unknown = httpx.get(index + "never-seen/")
        assert unknown.status_code == 404
        assert "offline" in unknown.text
    assert upstream.requests == []


def test_workers__two_processes_share_one_cache(tmp_path: Path, upstream: FakeUpstream) -> None:
    with SubprocessProxy(
        "--upstream",
        upstream.simple_url,
        "--workers",
        "2",
        cache_dir=tmp_path / "cache",
        env={"PYPI_PROXY_LOG_LEVEL": "debug"},
    ) as proxy:
        result = pip_download(proxy.url + "/simple/", tmp_path / "d", "demo", tmp=tmp_path)
        assert result.returncode == 0, result.stderr + proxy.log()
        assert httpx.get(proxy.url + "/stats").status_code == 200


def test_bad_settings__clear_message(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            "notaport",
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "'port'" in result.stderr


@pytest.mark.network
def test_default_upstream__real_index(tmp_path: Path) -> None:
    """Off by default: the only test that talks to the real index (the built-in default)."""
    with SubprocessProxy(cache_dir=tmp_path / "cache") as proxy:
        result = pip_download(proxy.url + "/simple/", tmp_path / "d", "six", tmp=tmp_path)
        assert result.returncode == 0, result.stderr + proxy.log()


def test_workers__concurrent_misses_across_processes_download_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.wheels import make_wheel

    big = make_wheel("big", "1.0", payload_size=4 * 1024 * 1024)
    upstream.add_dist("big", big)
    path = f"/files/big/{big.filename}"
    with SubprocessProxy(
        "--upstream",
        upstream.simple_url,
        "--workers",
        "2",
        cache_dir=tmp_path / "cache",
        env={"PYPI_PROXY_LOG_LEVEL": "debug"},
    ) as proxy:
        for _ in range(4):  # let both workers see the page
            httpx.get(proxy.url + "/simple/big/")
        upstream.delay = 0.5

        def fetch(_: int) -> bytes:
            with httpx.Client() as client:  # one connection each: spread over the workers
                return client.get(proxy.url + path, timeout=60).content

        with ThreadPoolExecutor(16) as pool:
            bodies = list(pool.map(fetch, range(16)))
        assert all(body == big.content for body in bodies)
        assert upstream.count(path) == 1, proxy.log()
        log = proxy.log()
    assert "cached big-1.0" in log  # worker processes log too


def test_stats_command__prints_cache_figures(tmp_path: Path, upstream: FakeUpstream) -> None:
    import json

    cache = tmp_path / "cache"
    with SubprocessProxy("--upstream", upstream.simple_url, cache_dir=cache) as proxy:
        httpx.get(proxy.url + "/files/demo/demo-1.0-py3-none-any.whl")
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "stats", "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["cache"]["files"] == 1
    assert data["files"]["misses"] == 1
