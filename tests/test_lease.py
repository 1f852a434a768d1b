"""The prefetch lease, in a bucket (a real S3 API server on loopback) and in a local directory.

Every test runs against both: the two keep the same record with the same compare-and-swap.
Time is a fake clock the test moves, so expiry is exact and the tests do not sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.lease import LeaseKeeper, local_lease, s3_lease
from proxy.s3config import S3Config
from proxy.s3store import S3FileStore
from tests.support.s3 import (
    s3_config_fixture,  # noqa: F401 (a fixture)
    s3_server_fixture,  # noqa: F401 (a fixture)
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


Keepers = Callable[[], LeaseKeeper]  # a new keeper over the same record: another replica


@pytest.fixture(params=["s3", "local"])
def keepers(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Keepers:
    if request.param == "local":
        return lambda: local_lease(tmp_path / "state", "prefetch", grace=5, clock=clock)
    config: S3Config = request.getfixturevalue("s3_config")
    return lambda: s3_lease(S3FileStore(config), "prefetch", grace=5, clock=clock)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_lease__two_contenders_one_wins(keepers: Keepers) -> None:
    a, b = keepers(), keepers()
    won = a.acquire("replica-a", ttl=30)
    assert won is not None and won.holder == "replica-a"
    assert b.acquire("replica-b", ttl=30) is None
    current = b.current()
    assert current is not None and current.holder == "replica-a"


def test_lease__contenders_at_once_one_wins(keepers: Keepers) -> None:
    contenders = [keepers() for _ in range(6)]
    barrier = threading.Barrier(len(contenders))
    winners: list[str] = []

    def contend(i: int, keeper: LeaseKeeper) -> None:
        barrier.wait()
        if keeper.acquire(f"replica-{i}", ttl=30) is not None:
            winners.append(f"replica-{i}")

    threads = [threading.Thread(target=contend, args=(i, k)) for i, k in enumerate(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    current = contenders[0].current()
    assert current is not None and current.holder == winners[0]


def test_lease__expired_taken_over_after_grace(keepers: Keepers, clock: Clock) -> None:
    a, b = keepers(), keepers()
    old = a.acquire("replica-a", ttl=10)
    assert old is not None
    clock.now += 12  # expired by 2 s: within the 5 s grace, clocks may still disagree
    assert a.current() is None  # the holder itself stops counting on it
    assert b.acquire("replica-b", ttl=10) is None
    clock.now += 4
    new = b.acquire("replica-b", ttl=10)
    assert new is not None
    assert a.renew(old, ttl=10) is None  # the old holder learns it lost the lease
    assert not a.release(old)  # and cannot free the new holder's
    current = a.current()
    assert current is not None and current.holder == "replica-b"


def test_lease__holder_that_renews_keeps_it(keepers: Keepers, clock: Clock) -> None:
    a, b = keepers(), keepers()
    lease = a.acquire("replica-a", ttl=10)
    for _ in range(5):
        assert lease is not None
        clock.now += 8
        lease = a.renew(lease, ttl=10)
        assert b.acquire("replica-b", ttl=10) is None
    assert lease is not None and lease.valid(clock.now)
    clock.now += 16  # stopped renewing: gone after ttl and grace
    assert b.acquire("replica-b", ttl=10) is not None


def test_lease__release_lets_the_other_in(keepers: Keepers) -> None:
    a, b = keepers(), keepers()
    lease = a.acquire("replica-a", ttl=300)
    assert lease is not None
    assert a.release(lease)
    assert b.current() is None
    assert b.acquire("replica-b", ttl=300) is not None
    assert not a.release(lease)  # released twice: the second is not ours any more


def test_lease__same_holder_asking_again_extends(keepers: Keepers, clock: Clock) -> None:
    a = keepers()
    first = a.acquire("replica-a", ttl=10)
    clock.now += 5
    again = keepers().acquire("replica-a", ttl=10)  # e.g. the holder restarted
    assert first is not None and again is not None and again.expires == first.expires + 5


def test_lease__stale_version_loses_the_swap(keepers: Keepers, clock: Clock) -> None:
    """Two contenders that read the same expired record: only the first write counts."""
    keeper = keepers()
    assert keeper.acquire("replica-a", ttl=1) is not None
    got = keeper.records.read()
    assert got is not None
    first, second = keepers().records, keepers().records
    assert first.replace(b'{"holder": "b", "expires": 0, "nonce": "1"}', got[1]) is not None
    assert second.replace(b'{"holder": "c", "expires": 0, "nonce": "2"}', got[1]) is None
    assert first.create(b"{}") is None  # a record exists: create never overwrites


@pytest.mark.parametrize(
    "garbage", [b"", b"not json", b"[]", b'{"holder": 3, "expires": "x"}', b'{"holder": "z"}']
)
def test_lease__damaged_record_does_not_lock_everyone_out(keepers: Keepers, garbage: bytes) -> None:
    keeper = keepers()
    assert keeper.acquire("replica-a", ttl=30) is not None
    got = keeper.records.read()
    assert got is not None
    assert keeper.records.replace(garbage, got[1]) is not None
    assert keeper.current() is None
    assert keepers().acquire("replica-b", ttl=30) is not None


def test_lease__nameless_holder_refused(keepers: Keepers) -> None:
    with pytest.raises(ValueError, match="name"):
        keepers().acquire("", ttl=30)
