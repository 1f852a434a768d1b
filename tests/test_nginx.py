"""nginx in front (deploy/nginx.conf): the proxy decides, nginx sends cached files itself through
``X-Accel-Redirect`` (issue 10). The route is checked against the proxy alone, then the shipped
configuration is run with a real nginx in front, driven by pip."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.errors import SettingsError
from proxy.settings import Settings, load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import SubprocessProxy, ThreadedProxy, free_port
from tests.support.wheels import make_wheel
from tests.test_e2e import pip_download

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}
CONF = Path(__file__).parent.parent / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed: .ci/run installs it (apt-get install nginx)")
        pytest.skip("no nginx here (apt-get install nginx); .ci/run installs it")
    return found


def file_url(base: str, project: str, filename: str) -> str:
    page = httpx.get(f"{base}/simple/{project}/", headers=JSON).json()
    (entry,) = [f for f in page["files"] if f["filename"] == filename]
    return (
        httpx.URL(f"{base}/simple/{project}/").join(entry["url"]).copy_with(fragment=None).__str__()
    )


def test_accel_redirect__a_hit_names_the_stored_file_a_miss_streams(
    settings: Settings, upstream: FakeUpstream
) -> None:
    upstream.add_dist("odd", make_wheel("odd", "1.0+local.1"))
    accel = dataclasses.replace(settings, accel_redirect="/_cache/")
    with ThreadedProxy(accel) as proxy:
        url = file_url(proxy.url, "odd", "odd-1.0+local.1-py3-none-any.whl")
        miss = httpx.get(url)
        assert miss.status_code == 200 and "x-accel-redirect" not in miss.headers
        sha = hashlib.sha256(miss.content).hexdigest()
        hit = httpx.get(url)
        assert hit.status_code == 200 and hit.content == b""
        target = hit.headers["x-accel-redirect"]
        # Relative to files/, quoted ('+' would otherwise be decoded as itself, a space never).
        assert target == f"/_cache/{sha[:2]}/{sha}/odd-1.0%2Blocal.1-py3-none-any.whl", target
        stored = accel.cache_dir / "files" / target.removeprefix("/_cache/").replace("%2B", "+")
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == sha
        assert hit.headers["etag"] == f'"{sha}"'
        # Evicted meanwhile: the proxy must not hand nginx a path that is gone.
        stored.unlink()
        again = httpx.get(url)
        assert "x-accel-redirect" not in again.headers
        assert hashlib.sha256(again.content).hexdigest() == sha


@pytest.mark.parametrize("bad", ["_cache/", "/_cache", "/a/../b/", "/a b/", "/x/?y/"])
def test_accel_redirect__setting_refuses_what_is_not_an_internal_location(
    bad: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match="accel_redirect"):
        load_settings(None, {}, {"accel_redirect": bad, "cache_dir": tmp_path})


@pytest.fixture
def fronted(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, SubprocessProxy]]:
    """The shipped deploy/nginx.conf with its two marked lines pointed here, in front of a
    ``serve --accel-redirect /_cache/``."""
    binary = nginx_binary()
    cache = tmp_path / "cache"
    proxy = SubprocessProxy(
        "--upstream",
        settings.upstream,
        "--accel-redirect",
        "/_cache/",
        cache_dir=cache,
    )
    with proxy:
        port = free_port()
        text = CONF.read_text()
        text = text.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{proxy.port};")
        text = text.replace("alias /var/cache/pypi-proxy/files/;", f"alias {cache}/files/;")
        text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
        assert str(cache) in text and str(proxy.port) in text, "deploy/nginx.conf changed shape"
        prefix = tmp_path / "nginx"
        (prefix / "logs").mkdir(parents=True)
        head = f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log warn;\n"
        if os.geteuid() == 0:
            head += "user root;\n"  # the test's cache lies under a private temporary directory
        text = head + text.replace(
            "http {",
            f"http {{\n    client_body_temp_path {prefix};\n    proxy_temp_path {prefix};\n",
            1,
        )
        conf = prefix / "nginx.conf"
        conf.write_text(text)
        errors = prefix / "logs" / "stderr.log"
        with errors.open("wb") as sink:  # the child keeps its own copy of the handle
            process = subprocess.Popen(
                [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 15
            while True:
                assert process.poll() is None, errors.read_text()
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "nginx did not come up"
                time.sleep(0.1)
            yield base, proxy
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.e2e
def test_nginx_front__hits_sent_by_nginx_ranges_and_pip_work(
    fronted: tuple[str, SubprocessProxy], upstream: FakeUpstream, tmp_path: Path
) -> None:
    base, proxy = fronted
    filename = "demo-2.0-py3-none-any.whl"
    url = file_url(base, "demo", filename)
    assert url.startswith(base), url  # the page's links lead back through nginx
    first = httpx.get(url)
    assert first.status_code == 200 and "x-cache" not in first.headers
    body = first.content
    sha = hashlib.sha256(body).hexdigest()
    fetched = upstream.count("/files/")
    hit = httpx.get(url)
    assert hit.status_code == 200 and hit.content == body
    assert "x-accel-redirect" not in hit.headers  # nginx consumed it, the client never sees it
    assert hit.headers.get("x-cache") == "HIT", hit.headers  # nginx sent the bytes itself
    part = httpx.get(url, headers={"Range": "bytes=10-29"})
    assert part.status_code == 206 and part.content == body[10:30]
    assert part.headers.get("x-cache") == "HIT"
    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(body)
    assert upstream.count("/files/") == fetched  # all of those were hits
    # The internal location is not a way around the proxy's decisions (auth, integrity).
    direct = httpx.get(f"{base}/_cache/{sha[:2]}/{sha}/{filename}")
    assert direct.status_code == 404
    # pip through nginx: pages proxied, hits sent by nginx.
    got = pip_download(base + "/simple/", tmp_path / "d", "demo==2.0", tmp=tmp_path)
    assert got.returncode == 0, got.stderr + proxy.log()
    assert (tmp_path / "d" / filename).read_bytes() == body
    assert re.search(r"helper-1\.5", " ".join(p.name for p in (tmp_path / "d").iterdir()))
