"""The upstream's XML-RPC changelog API, over the proxy's one HTTP client."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from proxy.errors import UpstreamError
from proxy.redact import redact
from proxy.upstream import Upstream


class XmlRpcRefused(UpstreamError):
    """The upstream will not answer XML-RPC (405, 404, 429, a fault, a bad body)."""


class ChangelogClient:
    def __init__(self, upstream: Upstream, url: str) -> None:
        self._upstream = upstream
        self._url = url

    async def call(self, method: str, *params: Any) -> Any:
        body = xmlrpc.client.dumps(params, method, allow_none=True).encode()
        response = await self._upstream.post(self._url, body, {"Content-Type": "text/xml"})
        if response.status_code != 200:
            raise XmlRpcRefused(f"{redact(self._url)} answered {response.status_code} to {method}")
        try:
            (result,), _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            raise XmlRpcRefused(f"{method} failed: {fault.faultString}") from None
        except Exception as exc:
            raise XmlRpcRefused(f"unreadable XML-RPC answer to {method}: {exc}") from None
        return result

    async def last_serial(self) -> int:
        return int(await self.call("changelog_last_serial"))

    async def all_projects(self) -> dict[str, int]:
        data = await self.call("list_packages_with_serial")
        if not isinstance(data, dict):
            raise XmlRpcRefused("list_packages_with_serial did not return a mapping")
        return {str(k): int(v) for k, v in data.items()}

    async def changes_since(self, serial: int) -> list[tuple[str, int, str]]:
        """One page of (project, serial, action) changes after ``serial``, oldest first."""
        rows = await self.call("changelog_since_serial", serial)
        if not isinstance(rows, list):
            raise XmlRpcRefused("changelog_since_serial did not return a list")
        return [(str(row[0]), int(row[4]), str(row[3])) for row in rows if len(row) >= 5]
