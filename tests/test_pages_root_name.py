"""A project may be called "root": it and the root listing never get each other's record."""

from __future__ import annotations

import dataclasses
import threading

import httpx

from proxy.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel


def test_project_named_root__never_the_root_listing(
    settings: Settings, upstream: FakeUpstream
) -> None:
    upstream.add_dist("root", make_wheel("root", "1.0"))
    upstream.delay = 0.05  # fetches overlap
    fresh = dataclasses.replace(settings, index_ttl=0.0)  # every request fetches again
    statuses: list[int] = []
    with ThreadedProxy(fresh) as proxy:

        def ask(path: str) -> None:
            with httpx.Client(timeout=20) as client:
                for _ in range(6):
                    statuses.append(client.get(proxy.url + path).status_code)

        threads = [
            threading.Thread(target=ask, args=(path,)) for path in ("/simple/", "/simple/root/") * 3
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        page = httpx.get(proxy.url + "/simple/root/", headers={"Accept": "text/html"}).text
        listing = httpx.get(proxy.url + "/simple/", headers={"Accept": "text/html"}).text
    assert statuses == [200] * 36, statuses
    assert "root-1.0-py3-none-any.whl" in page
    assert "Simple index" in listing
