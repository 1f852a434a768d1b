"""``pypi-proxy verify``: check every stored file against the hash its index page records.

It walks the page records, not the file tree: each listed file the cache holds is hashed (with
a bucket, the local copy and the bucket's object both); a file whose bytes do not match is
dropped, and re-fetched when the mirror pinned it (the prefetcher wants it) and the upstream is
reachable; a damaged object behind a good local copy is deleted and uploaded again from it; a
pinned file that went missing is re-fetched too. Partial downloads are swept first. Then the
held list (``proxy/heldfiles.py``) is checked against the store: a held file no page lists and
the store lacks cannot be fetched again, so its row is released (the prefetcher's next pass
holds again what its pages list); with a bucket, a held file with no ``pins/`` marker there
(other replicas' eviction could take it) gets one. ``repair`` False (``--no-repair``) reports
both and mends neither. A record that cannot be read, or an entry that cannot be stored, is
counted and reported; nothing stops the check.

The same pass runs inside ``serve`` on a schedule (``scrub_interval``): see ``proxy/scrub.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import anyio

from proxy.cache import Mirror
from proxy.fill import Target
from proxy.locate import target_for
from proxy.names import is_safe_filename, is_sha256
from proxy.runtime import Runtime

log = logging.getLogger(__name__)


# Exit statuses of `pypi-proxy verify` (documented in the README).
WHOLE = 0  # every stored file checked was whole
REPAIRED = 1  # damage was found; all of it was dropped or fetched again
DAMAGED = 3  # damage remains: a mirrored file could not be fetched again, or records unreadable


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    corrupt: int = 0
    wrong_size: int = 0
    missing_pinned: int = 0
    repaired: int = 0
    dropped: int = 0
    swept_partials: int = 0
    unreadable_records: int = 0
    unstorable_entries: int = 0
    held_missing: int = 0  # held rows whose file the store lacks and no page lists
    held_released: int = 0
    unpublished_pins: int = 0  # held files the bucket has no pin for
    pins_written: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def damage_found(self) -> bool:
        return bool(
            self.corrupt
            or self.wrong_size
            or self.missing_pinned
            or self.held_missing
            or self.unpublished_pins
        )

    @property
    def whole(self) -> bool:
        return not self.failed and not self.unreadable_records

    @property
    def exit_status(self) -> int:
        if not self.whole:
            return DAMAGED
        return REPAIRED if self.damage_found else WHOLE


def _listed(mirror: Mirror, report: VerifyReport) -> Iterator[Target]:
    for project, record in mirror.page_records():
        if record is None:  # an unreadable record must not stop the check
            report.unreadable_records += 1
            report.failed.append(f"{project}: page record unreadable (another format?)")
            continue
        files = list(record.page.files)
        for entry in files:
            if target_for(entry, entry.filename) is None:
                report.unstorable_entries += 1  # a hash that is not a sha256 digest
                continue
            for name in (entry.filename, entry.filename + ".metadata"):
                target = target_for(entry, name)
                if target is not None:
                    yield target


Checked = tuple[Target, str, tuple[str, str] | None]


def _check(mirror: Mirror, target: Target) -> Checked:
    """(target, outcome, (sha256, filename)): ok, mended (another copy was damaged and made
    again), corrupt, wrong-size, missing-pinned, absent or unstorable."""
    sha = target.sha256 or mirror.hash_for_url(target.url)
    if sha is None:
        return target, "absent", None
    if not is_sha256(sha) or not is_safe_filename(target.filename):
        return target, "unstorable", None
    key = (sha, target.filename)
    stored = mirror.stored_copy(sha, target.filename)
    if stored is None:
        return target, "missing-pinned" if mirror.is_held(sha) else "absent", key
    if target.size is not None and stored.size != target.size:
        return target, "wrong-size", key
    actual = mirror.hash_of(stored)
    if actual is None:
        return target, "missing-pinned" if mirror.is_held(sha) else "absent", key
    if actual != sha:
        return target, "corrupt", key
    # Whole here; with a bucket, the object behind this local copy is hashed too (and made
    # again from this copy when damaged): what the other replicas read.
    return target, "mended" if mirror.check_copies(stored) else "ok", key


async def verify(runtime: Runtime, *, repair: bool = True) -> VerifyReport:
    mirror = runtime.mirror
    report = VerifyReport()
    report.swept_partials = await anyio.to_thread.run_sync(mirror.sweep_partials)
    targets = await anyio.to_thread.run_sync(lambda: list(_listed(mirror, report)))

    def check_all() -> list[Checked]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda t: _check(mirror, t), targets))

    results = await anyio.to_thread.run_sync(check_all)
    seen: set[tuple[str, str]] = set()
    for target, outcome, key in results:
        if outcome == "unstorable":
            report.unstorable_entries += 1
            continue
        if outcome == "absent" or key in seen:
            continue  # one stored file listed twice (two projects) is checked once
        if key is not None:
            seen.add(key)
        report.checked += 1
        if outcome == "ok":
            report.ok += 1
            continue
        if outcome == "mended":  # damage in the bucket, mended from the good local copy
            report.corrupt += 1
            report.repaired += 1
            continue
        pinned = key is not None and mirror.is_held(key[0])
        if outcome in ("corrupt", "wrong-size"):
            if outcome == "corrupt":
                report.corrupt += 1
            else:
                report.wrong_size += 1
            log.warning("verify: %s is damaged (%s); dropping it", target.filename, outcome)
            assert key is not None
            await anyio.to_thread.run_sync(partial(mirror.drop, *key, damaged=True))
            report.dropped += 1
        else:
            report.missing_pinned += 1
        if pinned:
            if not repair:
                report.failed.append(
                    f"{target.filename}: mirrored, not fetched again (--no-repair)"
                )
                continue
            if mirror.offline:
                report.failed.append(f"{target.filename}: offline, cannot re-fetch")
                continue
            download = await mirror.fetch(target, pinned=True)
            if download.error:
                report.failed.append(f"{target.filename}: {download.error}")
            else:
                report.repaired += 1
    await anyio.to_thread.run_sync(partial(_check_held, mirror, report, seen, repair=repair))
    await anyio.to_thread.run_sync(mirror.recount)
    return report


def _check_held(
    mirror: Mirror, report: VerifyReport, listed: set[tuple[str, str]], *, repair: bool
) -> None:
    """The held list against the store and the bucket (blocking); ``listed``: the (sha256,
    filename) the page walk checked, and fetched again where it could."""
    lost = [
        (project, held)
        for project, held in mirror.iter_held()
        if (held.sha256, held.filename) not in listed
        and mirror.stored_copy(held.sha256, held.filename) is None
    ]
    report.held_missing = len(lost)
    for project, held in lost:
        log.warning("verify: %s is held for %r but not stored", held.filename, project)
        if not repair:
            report.failed.append(f"{held.filename}: held, not stored (--no-repair)")
            continue
        mirror.release(project, [held])
        report.held_released += 1
    report.unpublished_pins = mirror.publish(write=repair)
    if report.unpublished_pins:
        log.warning("verify: %d held files had no pin in the bucket", report.unpublished_pins)
        if repair:
            report.pins_written = report.unpublished_pins
        else:
            report.failed.append(f"{report.unpublished_pins} bucket pins missing (--no-repair)")
