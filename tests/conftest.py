from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.settings import Settings, load_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_server import ThreadedProxy
from tests.support.wheels import make_wheel


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        fake.add_dist("demo", make_wheel("demo", "1.0"))
        fake.add_dist("demo", make_wheel("demo", "2.0", requires=["helper>=1"]))
        fake.add_dist("helper", make_wheel("helper", "1.5"))
        yield fake


@pytest.fixture
def settings(tmp_path: Path, upstream: FakeUpstream) -> Settings:
    return load_settings(
        None,
        {},
        {
            "upstream": upstream.simple_url,
            "cache_dir": tmp_path / "cache",
            "retries": 1,
            "connect_timeout": 2,
            "read_timeout": 5,
        },
    )


@pytest.fixture
def proxy(settings: Settings) -> Iterator[ThreadedProxy]:
    with ThreadedProxy(settings) as server:
        yield server
