"""Bringing one project in the mirror up to date: its page, its files, and removals.

What the mirror holds is on the core's held list (``Mirror.hold``) before it is downloaded (the
page gives the sha256), so eviction in another process can never take a file between its
download and its hold. A file is deleted only when no project holds it any more (projects can
share a file), and a project leaves the mirror only when its page answers 404 *and* the
upstream's changelog or root index no longer lists it: one transient 404 never drops what the
mirror holds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

import anyio

from prefetch.filters import select
from prefetch.state import PrefetchState, plausible_listing
from proxy.cache import Mirror
from proxy.errors import NotFound, ProxyError, UpstreamError
from proxy.fill import Target
from proxy.heldfiles import HeldFile
from proxy.locate import target_for
from proxy.models import DistFile, PageRecord
from proxy.settings import PrefetchSettings

log = logging.getLogger(__name__)


class SyncFailed(ProxyError):
    pass


@dataclass(frozen=True, slots=True)
class Synced:
    files_added: int = 0
    bytes_added: int = 0
    files_removed: int = 0


@dataclass
class Syncer:
    settings: PrefetchSettings
    mirror: Mirror
    state: PrefetchState
    downloads: asyncio.Semaphore
    # Files a sync under way claimed (held, not yet downloaded), so that another project's
    # removal running at the same time does not take them (guarded by _lock).
    _claims: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listing: set[str] | None = None
    _mirrored: list[str] = field(default_factory=list)
    _listing_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def sync(self, name: str, serial: int | None) -> Synced:
        current = await self.mirror.stored_page(name)
        holding = (
            None if current is not None else await anyio.to_thread.run_sync(self._holding, name)
        )
        record = await self._page_or_gone(name, current, serial, holding)
        if record is None:
            removed = await self._release(name, keep=[])
            await self.mirror.remove(name)
            await anyio.to_thread.run_sync(partial(self.state.done, name, None, gone=True))
            log.info("%s is gone upstream; removed %d files", name, removed)
            return Synced(files_removed=removed)
        wanted = select(record.page.files, self.settings)
        claimed: list[tuple[str, str]] = []
        # The sizes recorded for what the mirror holds: a copy on disk of another size is
        # damaged (truncated, appended to) and fetched again rather than held as it is.
        sizes = {
            (h.filename, h.sha256): h.size
            for h in await anyio.to_thread.run_sync(self.mirror.held_files, name)
        }
        try:
            results = await asyncio.gather(
                *(self._fetch(name, entry, claimed, sizes) for entry in wanted),
                return_exceptions=True,
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                await anyio.to_thread.run_sync(self._unpin_unheld, name, claimed, set(sizes))
                raise failures[0]
            done = [r for r in results if not isinstance(r, BaseException)]
            held = [h for files, _added, _bytes in done for h in files]
            await anyio.to_thread.run_sync(self.mirror.hold, name, held)  # the sizes verified
            removed = await self._release(name, keep=held)
            changed = bool(removed or any(added for _f, added, _b in done))
            await anyio.to_thread.run_sync(self._done, name, record.page.serial, changed)
        finally:
            await anyio.to_thread.run_sync(self._unclaim, claimed)
        return Synced(
            files_added=sum(added for _f, added, _b in done),
            bytes_added=sum(size for _f, _a, size in done),
            files_removed=removed,
        )

    def _done(self, name: str, serial: int | None, changed: bool) -> None:
        self.state.done(name, serial)
        if changed:
            # Its files are in place now: servers rebuild their views of the page.
            self.mirror.files_changed(name)

    async def _page_or_gone(
        self,
        name: str,
        current: PageRecord | None,
        serial: int | None,
        holding: tuple[int | None, list[str]] | None,
    ) -> PageRecord | None:
        """The project's new page, or None when it is confirmed gone: its page answers 404
        (or 410), the changelog or a plausible root listing agrees, and a second look
        ``gone_recheck`` seconds later answers 404 again. A one-off 404 (a CDN hiccup) and a
        lying listing each happen; both at once, twice in a row, is what a removal looks like."""
        try:
            return await self.mirror.refresh(name, current, min_serial=serial, holding=holding)
        except NotFound as exc:
            if not await self._gone_confirmed(name):
                raise SyncFailed(
                    f"{exc}, but the upstream still lists {name}: kept, to try again"
                ) from None
        await asyncio.sleep(self.settings.gone_recheck)
        try:
            record = await self.mirror.refresh(name, current, min_serial=serial, holding=holding)
        except NotFound:
            return None
        log.warning(
            "%s answered 404, then its page %s later: kept", name, self.settings.gone_recheck
        )
        return record

    def _holding(self, name: str) -> tuple[int | None, list[str]]:
        """What the mirror holds of ``name`` (its serial, its distributions' file names): with
        its page gone, this is what a new page is checked against."""
        serial = self.state.project_serial(name) or None  # 0: synced without a serial
        files = self.mirror.held_files(name)
        return serial, [h.filename for h in files if not h.filename.endswith(".metadata")]

    async def _gone_confirmed(self, name: str) -> bool:
        """A 404 removes a project only if the upstream's listing agrees it is gone."""
        if await anyio.to_thread.run_sync(self.state.listed_gone, name):
            return True
        async with self._listing_lock:  # one root fetch per pass, however many 404s
            if self._listing is None:
                try:
                    listing = await self.mirror.upstream_listing()
                except (UpstreamError, NotFound) as exc:
                    log.warning("cannot confirm that %s is gone: %s", name, exc)
                    return False
                mirrored = await anyio.to_thread.run_sync(self.state.project_names)
                self._listing, self._mirrored = listing, mirrored
        others = [m for m in self._mirrored if m != name]
        listed = sum(1 for m in others if m in self._listing)
        if not plausible_listing(listed, len(others) + 1, total=len(self._listing)):
            # A maintenance page parses as a listing of (next to) nothing: it confirms nothing.
            log.warning(
                "the upstream's root index lists %d projects, too few of the %d the mirror "
                "holds to confirm that %s is gone",
                len(self._listing),
                len(self._mirrored),
                name,
            )
            return False
        return name not in self._listing

    def _targets(self, entry: DistFile) -> list[Target]:
        names = [entry.filename]
        if entry.has_metadata:
            names.append(entry.filename + ".metadata")
        return [t for n in names if (t := target_for(entry, n)) is not None]

    def _claim(
        self,
        name: str,
        sha: str,
        filename: str,
        claimed: list[tuple[str, str]],
        expected: int | None = None,
    ) -> int | None:
        """Claim a file for this sync and hold it for ``name``; its size if it is on disk
        already (and is ``expected`` bytes, when known: a copy of another size is dropped)."""
        with self._lock:
            self._claims[(sha, filename)] += 1
            claimed.append((sha, filename))
            self.mirror.hold(name, [HeldFile(filename, sha, None)])
            # A copy of another size than expected is dropped there, to be fetched again.
            stored = self.mirror.stored_copy(sha, filename, expected)
        return stored.size if stored is not None else None

    def _unclaim(self, claimed: list[tuple[str, str]]) -> None:
        with self._lock:
            self._claims.subtract(claimed)
            for key in claimed:
                if self._claims[key] <= 0:
                    del self._claims[key]

    def _unpin_unheld(
        self, name: str, claimed: list[tuple[str, str]], before: set[tuple[str, str]]
    ) -> None:
        """After a failed sync: release what it claimed that ``name`` did not hold ``before``
        (as (filename, sha256)); the files stay, for eviction to take."""
        with self._lock:
            added = {(f, sha) for sha, f in claimed} - before
            self.mirror.release(name, [HeldFile(f, sha, None) for f, sha in added])

    async def _fetch(
        self,
        name: str,
        entry: DistFile,
        claimed: list[tuple[str, str]],
        sizes: dict[tuple[str, str], int | None],
    ) -> tuple[list[HeldFile], int, int]:
        targets = self._targets(entry)
        if len(targets) == 2 and targets[1].sha256 is not None:
            # The wheel, then its .metadata read out of it (kept only if it hashes to what
            # the page says): a round trip less per project than asking the upstream.
            first = await self._fetch_one(name, targets[0], claimed, sizes)
            wheel = (first[0].sha256, first[0].filename)
            results = [first, await self._fetch_one(name, targets[1], claimed, sizes, wheel)]
        else:
            results = await asyncio.gather(
                *(self._fetch_one(name, t, claimed, sizes) for t in targets)
            )
        held = [h for h, _added in results]
        added = [h for h, was_added in results if was_added]
        return held, len(added), sum(h.size or 0 for h in added)

    async def _fetch_one(
        self,
        name: str,
        target: Target,
        claimed: list[tuple[str, str]],
        sizes: dict[tuple[str, str], int | None],
        wheel: tuple[str, str] | None = None,
    ) -> tuple[HeldFile, bool]:
        """One file held for this sync: claimed if on disk already, else made from ``wheel``
        (a .metadata) or downloaded; and whether it was added."""
        sha = target.sha256 or await anyio.to_thread.run_sync(self.mirror.hash_for_url, target.url)
        size = None
        if sha is not None:
            # What this mirror verified before, else what the page says.
            expected = sizes.get((target.filename, sha))
            if expected is None:
                expected = target.size
            size = await anyio.to_thread.run_sync(
                self._claim, name, sha, target.filename, claimed, expected
            )
        if size is not None:
            assert sha is not None
            return HeldFile(target.filename, sha, size), False
        if wheel is not None:
            made = await self.mirror.metadata_from_wheel(target, wheel, batched=True)
            if made is not None:
                assert sha is not None  # a .metadata is made only for a hash the page gives
                return HeldFile(target.filename, sha, made.size), True
        async with self.downloads:
            progress = await self.mirror.fetch(target, batched=True)
        if progress.error or progress.final is None or progress.sha256 is None:
            raise SyncFailed(f"{target.filename}: {progress.error or 'not stored'}")
        fetched_sha = progress.sha256
        if sha is None:  # no hash on the page: held only now, so check it stayed
            sha = fetched_sha
            on_disk = await anyio.to_thread.run_sync(
                self._claim, name, sha, target.filename, claimed
            )
            if on_disk is None:
                raise SyncFailed(f"{target.filename}: evicted before it was held")
        return HeldFile(target.filename, sha, progress.written), True

    async def _release(self, name: str, keep: list[HeldFile]) -> int:
        """Release and delete what the mirror held for ``name`` and no longer wants."""
        previous = await anyio.to_thread.run_sync(self.mirror.held_files, name)
        wanted = {(h.filename, h.sha256) for h in keep}
        removed = 0
        for old in previous:
            if (old.filename, old.sha256) in wanted:
                continue
            removed += await anyio.to_thread.run_sync(partial(self._remove, name, old))
        return removed

    def _remove(self, name: str, old: HeldFile) -> int:
        """Let go of one file ``name`` held: released, and deleted only if nothing else holds
        it (another project lists the same bytes, or a sync under way just claimed them)."""
        with self._lock:
            self.mirror.release(name, [old])
            if (old.sha256, old.filename) in self._claims or self.mirror.is_held(
                old.sha256, old.filename
            ):
                return 0
            return 1 if self.mirror.drop(old.sha256, old.filename) > 0 else 0

    def wanting(self) -> list[str]:
        """Projects the mirror holds that the disk does not bear out (blocking): a page gone
        (an admin forget, say), or a held file no longer there (evicted in a race, dropped by
        verify). One stat per held file: the price of an exit 0 that means it."""
        mirrored = set(self.state.project_names())
        found = {n for n in mirrored if not self.mirror.has_page(n)}
        for project, held in self.mirror.iter_held():
            # Rows of projects this prefetcher never synced (pins an earlier version left
            # with no project) are not its to fetch again.
            if project in mirrored and self._damaged(project, held):
                found.add(project)
        return sorted(found)

    def _damaged(self, project: str, held: HeldFile) -> bool:
        """Whether a held file is missing, or not the size the mirror recorded (a truncated
        or grown copy is dropped, so that the next sync fetches it whole)."""
        stored = self.mirror.stored_copy(held.sha256, held.filename)
        if stored is None:
            log.warning("prefetch: %s of %s is missing from disk", held.filename, project)
            return True
        if held.size is None or stored.size == held.size:
            return False
        log.warning(
            "prefetch: %s of %s is %d bytes on disk, %d held: dropped, to fetch again",
            held.filename,
            project,
            stored.size,
            held.size,
        )
        with self._lock:  # no sync under way may count on the damaged copy meanwhile
            self.mirror.drop(held.sha256, held.filename)
        return True
