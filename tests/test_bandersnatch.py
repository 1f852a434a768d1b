"""bandersnatch, a mirroring client nobody here wrote, mirrors a central proxy: a full mirror,
then an incremental one after a change upstream, and pip installs from its output served as
static files (issue 12).

bandersnatch 8 reads no XML-RPC: it lists projects with their serials from the PEP 691 JSON
root (``/simple/``, ``_last-serial`` per project), and for each project whose serial moved past
the one it synced to it reads ``/pypi/<project>/json`` (refusing an answer whose
``X-PyPI-Last-Serial`` is older than the listing's) and the files at its ``/packages/`` URLs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from proxy.generations import CHECK_EVERY
from proxy.settings import Settings
from tests.support import bandersnatch
from tests.support.fake_upstream import FakeUpstream
from tests.support.prefetching import run_pass
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel
from tests.test_e2e import pip_download
from tests.test_tiers import RecordPaths

pytestmark = pytest.mark.e2e  # about 5 s a case here, 20 s more once to make the venv


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """``directory`` served as plain files (what an operator puts bandersnatch's web/ behind)."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def _fake_python(where: Path, name: str, version: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    script = where / name
    script.write_text(f"#!/bin/sh\necho {version}\n")
    script.chmod(0o755)


def test_find_python__fails_clearly_without_3_12_and_takes_the_newest(tmp_path: Path) -> None:
    old = tmp_path / "bin"
    _fake_python(old, "python3", "3 11")
    _fake_python(old, "python3.13", "nonsense")  # a pyenv shim for a version not selected
    with pytest.raises(bandersnatch.NoPython, match=r"needs Python 3\.12 or newer"):
        bandersnatch.find_python(str(old / "python3"), str(old), tmp_path / "no-pyenv")
    _fake_python(tmp_path / "pyenv" / "versions" / "3.12.1" / "bin", "python3.12", "3 12")
    _fake_python(tmp_path / "pyenv" / "versions" / "3.14.0" / "bin", "python3.14", "3 14")
    found, version = bandersnatch.find_python(str(old / "python3"), str(old), tmp_path / "pyenv")
    assert version == (3, 14) and found.endswith("3.14.0/bin/python3.14")


def mirrored(web: Path) -> dict[str, str]:
    """filename -> sha256 of every release file bandersnatch stored under web/packages/."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (web / "packages").rglob("*")
        if p.is_file() and not p.name.endswith(".metadata")
    }


def metadata_mirrored(web: Path) -> set[str]:
    """The files bandersnatch stored a PEP 658 ``.metadata`` for, whole."""
    found = set()
    for path in (web / "packages").rglob("*.metadata"):
        wheel = path.with_name(path.name.removesuffix(".metadata"))
        if wheel.exists():
            found.add(wheel.name)
    return found


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_bandersnatch__full_then_incremental_mirror_of_a_central_then_pip_installs(
    settings: Settings, upstream: FakeUpstream, tmp_path: Path, mode: str
) -> None:
    """Online, the central answers from its cache and its upstream; offline, only from what its
    prefetch passes stored (the root listing and the JSON API then come from its pages)."""
    python = bandersnatch.bandersnatch_python()  # made once, then cached under .cache/
    upstream.add_dist("quiet", make_wheel("quiet", "1.0"))
    upstream.add_dist("quiet", make_wheel("quiet", "1.1"))
    # Online, bandersnatch learns of changes from the root listing, which the proxy takes from
    # its upstream and keeps for index_ttl: short here, so the second run sees the pass's.
    central = dataclasses.replace(settings, cache_dir=tmp_path / "central", index_ttl=1.0)
    assert run_pass(central).ok
    seen: list[tuple[str, str]] = []
    proxy = ThreadedProxy(dataclasses.replace(central, offline=mode == "offline"))
    proxy.app.add_middleware(RecordPaths, seen=seen)
    home = tmp_path / "bandersnatch"
    web = home / "web"
    config = bandersnatch.write_config(tmp_path / "bandersnatch.conf", proxy.url, home)
    with proxy:
        first = bandersnatch.mirror(python, config)
        assert first.returncode == 0, first.log
        assert "Error syncing package" not in first.log, first.log
        first_requests = list(seen)
        assert int((home / "status").read_text()) == upstream.serial, first.log
        assert not (home / "todo").exists()
        expected = {
            f.built.filename: f.built.sha256
            for p in upstream.index.projects.values()
            for f in p.files.values()
        }
        assert mirrored(web) == expected
        # The proxy's pages offer .metadata (PEP 658), and so its JSON API says: copied too.
        assert metadata_mirrored(web) == set(expected)

        # A new release, a yank and a removed file upstream; the central takes them in.
        upstream.add_dist("demo", make_wheel("demo", "3.0", requires=["helper>=1"]))
        upstream.yank("demo", "demo-1.0-py3-none-any.whl", "broken")
        upstream.remove_file("quiet", "quiet-1.0-py3-none-any.whl")
        assert run_pass(central).ok
        time.sleep(max(CHECK_EVERY, central.index_ttl) + 0.1)  # the central notices the pass
        seen.clear()
        second = bandersnatch.mirror(python, config)
        assert second.returncode == 0, second.log
        assert "Error syncing package" not in second.log, second.log
        incremental = list(seen)
    assert int((home / "status").read_text()) == upstream.serial, second.log
    print(
        f"bandersnatch ({mode} central): first {first.seconds:.2f} s, {len(first_requests)} "
        f"requests {sorted(first_requests)}; incremental {second.seconds:.2f} s, "
        f"{len(incremental)} requests {sorted(incremental)}"
    )
    # Incremental: the listing (asked as /simple, redirected), then only the projects that
    # changed and only the new file and its metadata.
    pages = sorted(p for m, p in incremental if not p.startswith("/packages/"))
    assert pages == ["/pypi/demo/json", "/pypi/quiet/json", "/simple", "/simple/"], incremental
    files = sorted(p.rsplit("/", 1)[1] for m, p in incremental if p.startswith("/packages/"))
    wheel = "demo-3.0-py3-none-any.whl"
    assert files == [wheel, wheel + ".metadata"], incremental
    assert len(first_requests) > len(incremental)

    demo = (web / "simple" / "demo" / "index.html").read_text()
    assert 'data-yanked="broken">demo-1.0-py3-none-any.whl' in demo, demo
    assert wheel in demo
    quiet = (web / "simple" / "quiet" / "index.html").read_text()
    assert "quiet-1.1" in quiet and "quiet-1.0" not in quiet, quiet

    with static_server(web) as static:
        got = pip_download(static + "/simple/", tmp_path / "d", "demo==3.0", tmp=tmp_path)
    assert got.returncode == 0, got.stderr
    downloaded = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert downloaded == [wheel, "helper-1.5-py3-none-any.whl"]
