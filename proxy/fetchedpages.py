"""An upstream answer read as a project's page or as the root listing (blocking, no I/O: the
callers run these in a thread). Entries that cannot be used are left out and said so."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from proxy.models import ProjectListing, ProjectPage
from proxy.origins import host_allowed
from proxy.parse import parse_project_html, parse_project_json, parse_root_html, parse_root_json
from proxy.upstreamtypes import Fetched

log = logging.getLogger(__name__)


def parse_project(
    fetched: Fetched, project: str, allowed: Sequence[str] = (), dropped: list[str] | None = None
) -> ProjectPage:
    """A project's page as the upstream sent it (JSON or HTML), without the files hosted
    outside ``allowed`` (when given); the answer's serial header wins over the page's."""
    if fetched.is_json:
        page = parse_project_json(fetched.body, fetched.url, dropped)
    else:
        page = parse_project_html(fetched.body, fetched.url, project, dropped)
    if allowed:
        kept = tuple(f for f in page.files if host_allowed(f.url, fetched.url, allowed))
        if len(kept) != len(page.files):
            log.warning(
                "%s: dropped %d files hosted outside allowed_file_hosts",
                project,
                len(page.files) - len(kept),
            )
            page = dataclasses.replace(page, files=kept)
    serial = fetched.serial if fetched.serial is not None else page.serial
    name = page.name or project
    if serial != page.serial or name != page.name:
        page = ProjectPage(
            name=name,
            files=page.files,
            api_version=page.api_version,
            serial=serial,
            versions=page.versions,
            project_status=page.project_status,
            extra=page.extra,
        )
    return page


def parse_root(fetched: Fetched) -> ProjectListing:
    """The root listing as the upstream sent it; the serial header stands in for none."""
    listing = parse_root_json(fetched.body) if fetched.is_json else parse_root_html(fetched.body)
    if listing.serial is None and fetched.serial is not None:
        listing = ProjectListing(listing.projects, listing.api_version, fetched.serial)
    return listing
