"""The prefetcher as users run it: the command, kill -9, the schedule in serve, offline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import all_whole, stored
from tests.support.proxy_server import SubprocessProxy
from tests.support.wheels import make_wheel
from tests.test_e2e import pip_download, uv_install

pytestmark = pytest.mark.e2e


def prefetch_command(fake: FakeUpstream, cache: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "proxy",
        "prefetch",
        "--upstream",
        fake.simple_url,
        "--cache-dir",
        str(cache),
        *args,
    ]


def test_prefetch_then_offline__pip_and_uv_install_every_project(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.add_dist("extra", make_wheel("extra", "0.1", requires=["helper"]))
    cache = tmp_path / "cache"
    result = subprocess.run(
        prefetch_command(upstream, cache), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "mirror is up to date" in result.stdout
    upstream.stop()
    upstream.reset_log()
    with SubprocessProxy("--offline", cache_dir=cache) as proxy:
        index = proxy.url + "/simple/"
        for project in ("demo", "helper", "extra"):
            done = pip_download(index, tmp_path / f"d-{project}", project, tmp=tmp_path)
            assert done.returncode == 0, done.stderr + proxy.log()
        uv = uv_install(index, tmp_path / "t", "demo", "extra", tmp=tmp_path)
        assert uv.returncode == 0, uv.stderr + proxy.log()
        stats = httpx.get(proxy.url + "/stats").json()
        assert stats["prefetch"]["mirror_serial"] == upstream.serial
        assert stats["prefetch"]["projects"] == 3
        assert stats["prefetch"]["lag"] == 0
    assert upstream.requests == []


def test_prefetch__failure_exits_nonzero_with_message(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.down = True
    result = subprocess.run(
        prefetch_command(upstream, tmp_path / "c"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "pypi-proxy:" in result.stderr or "Error" in result.stderr


def test_kill_9_mid_pass__rerun_completes_whole(tmp_path: Path, upstream: FakeUpstream) -> None:
    for i in range(30):
        upstream.add_dist(f"p{i}", make_wheel(f"p{i}", "1.0", payload_size=200_000))
    cache = tmp_path / "cache"
    upstream.delay = 0.05
    proc = subprocess.Popen(
        prefetch_command(upstream, cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (cache / "files").exists() and len(stored(cache)) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(stored(cache)) < 2 * 33  # killed mid-pass
    assert all_whole(cache)
    upstream.delay = 0
    upstream.add_dist("late", make_wheel("late", "1.0"))  # a change after the kill
    result = subprocess.run(
        prefetch_command(upstream, cache), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    files = stored(cache)
    assert len(files) == 2 * (30 + 3 + 1)
    assert "late-1.0-py3-none-any.whl" in files
    assert all_whole(cache)
    assert not list((cache / "tmp").glob("*.part"))


def test_schedule_in_serve__passes_and_stats(tmp_path: Path, upstream: FakeUpstream) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("prefetch:\n  enabled: true\n  interval: 1\n  projects: [demo]\n")
    with SubprocessProxy(
        "--config",
        str(config),
        "--upstream",
        upstream.simple_url,
        "--admin-token",
        "t0ken",
        cache_dir=tmp_path / "cache",
    ) as proxy:

        def prefetch_stats() -> dict[str, object]:
            data = httpx.get(proxy.url + "/stats").json()["prefetch"]
            assert isinstance(data, dict)
            return data

        deadline = time.monotonic() + 30
        while prefetch_stats().get("mirror_serial") != upstream.serial:
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.2)
        upstream.add_dist("demo", make_wheel("demo", "9.0"))
        deadline = time.monotonic() + 30
        while prefetch_stats().get("mirror_serial") != upstream.serial:
            assert time.monotonic() < deadline, proxy.log()
            time.sleep(0.2)
        data = prefetch_stats()
        assert data["projects"] == 1
        assert data["lag"] == 0
        assert data["state"] in ("idle", "running")
        last_run = data["last_run"]
        assert isinstance(last_run, dict)
        assert last_run["result"] == "ok"
        assert httpx.post(proxy.url + "/admin/prefetch").status_code == 401
        started = httpx.post(
            proxy.url + "/admin/prefetch", headers={"authorization": "Bearer t0ken"}
        )
        # The schedule (every second) may be running a pass just now: then 409 says so.
        assert started.status_code in (202, 409), started.text
        if started.status_code == 409:
            assert started.json()["progress"]["state"] in ("running", "idle")
        assert "demo-9.0-py3-none-any.whl" in stored(tmp_path / "cache")
        assert "t0ken" not in json.dumps(httpx.get(proxy.url + "/stats").json())
        assert "t0ken" not in proxy.log()
