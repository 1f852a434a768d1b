"""``pypi-proxy verify``: check every stored file against the hash its index page records.

It walks the page records, not the file tree: each listed file the cache holds is hashed; a
file whose bytes do not match is dropped, and re-fetched when the mirror pinned it (the
prefetcher wants it) and the upstream is reachable; a pinned file that went missing is
re-fetched too. Partial downloads are swept first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from proxy.files import target_for
from proxy.fill import Target, wait_done
from proxy.runtime import Runtime

log = logging.getLogger(__name__)
READ = 1024 * 1024


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    corrupt: int = 0
    missing_pinned: int = 0
    repaired: int = 0
    dropped: int = 0
    swept_partials: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return not self.failed


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(READ):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _listed(runtime: Runtime) -> Iterator[Target]:
    storage = runtime.storage
    for project in storage.page_projects():
        record = storage.load_page(project)
        if record is None:
            continue
        for entry in record.page.files:
            for name in (entry.filename, entry.filename + ".metadata"):
                target = target_for(entry, name)
                if target is not None:
                    yield target


def _check(runtime: Runtime, target: Target) -> tuple[Target, str, Path | None]:
    """(target, outcome, path): outcome is ok, corrupt, missing-pinned or absent."""
    storage = runtime.storage
    sha = target.sha256 or storage.hash_for_url(target.url)
    if sha is None:
        return target, "absent", None
    path = storage.file_path(sha, target.filename)
    actual = _sha256(path)
    if actual is None:
        return target, "missing-pinned" if storage.is_pinned(sha) else "absent", path
    return target, "ok" if actual == sha else "corrupt", path


async def verify(runtime: Runtime, *, repair: bool = True) -> VerifyReport:
    report = VerifyReport()
    report.swept_partials = await anyio.to_thread.run_sync(runtime.storage.sweep_tmp)
    targets = await anyio.to_thread.run_sync(lambda: list(_listed(runtime)))

    def check_all() -> list[tuple[Target, str, Path | None]]:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda t: _check(runtime, t), targets))

    results = await anyio.to_thread.run_sync(check_all)
    for target, outcome, path in results:
        if outcome == "absent":
            continue
        report.checked += 1
        if outcome == "ok":
            report.ok += 1
            continue
        pinned = path is not None and runtime.storage.is_pinned(path.parent.name)
        if outcome == "corrupt":
            report.corrupt += 1
            log.warning("verify: %s does not match its sha256; dropping it", target.filename)
            assert path is not None
            await anyio.to_thread.run_sync(runtime.storage.remove_file, path)
            report.dropped += 1
        else:
            report.missing_pinned += 1
        if pinned and repair:
            if runtime.filler is None:
                report.failed.append(f"{target.filename}: offline, cannot re-fetch")
                continue
            progress = runtime.filler.start(target)
            await wait_done(progress)
            if progress.error:
                report.failed.append(f"{target.filename}: {progress.error}")
            else:
                report.repaired += 1
    await anyio.to_thread.run_sync(runtime.storage.recount)
    return report
