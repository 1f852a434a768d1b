"""Which upstream answer may replace what the cache holds: pure rules, no I/O.

A page with an older serial is a lagging copy; a page without a serial where ours has one, or a
page that keeps none of a project's files without a newer serial to vouch for it, is most
likely a maintenance or error page answered 200; a page that lost some files at the same
serial was cut short on the wire: the stored page stays in each case. (Between pages without
serials only the "kept none" rule can apply: such an upstream gives nothing to vouch with.)
"""

from __future__ import annotations

from collections.abc import Collection

from proxy.models import PageRecord, ProjectListing, ProjectPage


def distrust(current: PageRecord, page: ProjectPage, allowed: tuple[str, ...]) -> str | None:
    """Why ``page`` must not replace ``current`` (None when it may): a maintenance or error
    page served as 200, or a CDN's odd copy, must never empty a project the cache holds."""
    # Under another allowed_file_hosts the page is filtered differently: compare serials only.
    same_filter = current.allowed_hosts == allowed
    names = [f.filename for f in current.page.files] if same_filter else []
    return distrust_held(current.page.serial, names, page)


def distrust_held(serial: int | None, filenames: Collection[str], page: ProjectPage) -> str | None:
    """The same rules against what is held of a project (its serial and file names), for when
    no page is stored but the mirror still holds its files."""
    if serial is not None and page.serial is None:
        return f"the new page has no serial, the stored one has {serial}"
    if filenames:
        names = {f.filename for f in page.files}
        lost = [name for name in filenames if name not in names]
        newer = page.serial is not None and serial is not None and page.serial > serial
        if lost and not newer:
            # A real index bumps the serial when files go; without that, do not believe it.
            if len(lost) == len(filenames):
                return f"the new page keeps none of its {len(filenames)} files and no newer serial"
            if serial is not None and page.serial is not None:
                # Same serial, fewer files: a page cut short on the wire (a close-delimited
                # body parses fine up to where it stopped), not a removal.
                return (
                    f"the new page lost {len(lost)} of its {len(filenames)} files "
                    f"({lost[0]}, ...) and no newer serial"
                )
    return None


def distrust_root(held: ProjectListing, listing: ProjectListing) -> str | None:
    if held.serial is not None and listing.serial is None:
        return f"the new root index has no serial, the stored one has {held.serial}"
    if held.projects and not listing.projects:
        return f"the new root index lists no projects, the stored one {len(held.projects)}"
    return None


def older(new: int | None, old: int | None) -> bool:
    return new is not None and old is not None and new < old
