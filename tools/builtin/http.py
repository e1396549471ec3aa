"""http_fetch: a GET to hosts on an allow-list, with the response size capped.

Every hop is checked, redirects included: a redirect to a host that is not allowed is
refused, not followed. An IP address is a host like any other: reachable only if the
allow-list names it, so "http://169.254.169.254/" or "http://127.0.0.1:8000/" cannot be
reached by a model that found no name for them.

Its docstring is what the model reads about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx2

from tools.executor import PermissionDeniedError
from tools.registry import ToolRegistry

DEFAULT_MAX_BYTES = 1_000_000
MAX_REDIRECTS = 5
TIMEOUT_SECONDS = 20.0


class HttpTools:
    def __init__(self, allow_hosts: Sequence[str], max_bytes: int) -> None:
        self.allow_hosts = frozenset(_normal_host(host) for host in allow_hosts)
        self.max_bytes = max_bytes

    async def http_fetch(self, url: str) -> dict[str, Any]:
        """Fetch a URL with GET from a host on the operator's allow-list.

        Redirects are followed only to allowed hosts. Large responses are cut; the result
        says so.

        Args:
            url: An http or https URL.
        """
        # trust_env=False: no proxy or .netrc from the server's environment.
        async with httpx2.AsyncClient(timeout=TIMEOUT_SECONDS, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                self._check(url)
                # identity: a compressed body could inflate far past the cap in one chunk.
                request = client.stream(
                    "GET", url, headers={"accept-encoding": "identity"}, follow_redirects=False
                )
                async with request as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    body, truncated = await self._read_capped(response)
                    return {
                        "url": str(response.url),
                        "status": response.status_code,
                        "content_type": response.headers.get("content-type", ""),
                        "body": body.decode(response.encoding or "utf-8", errors="replace"),
                        "truncated": truncated,
                    }
        raise PermissionDeniedError(f"more than {MAX_REDIRECTS} redirects; stopped at {url}")

    def _check(self, url: str) -> None:
        try:
            parsed = httpx2.URL(url)
        except httpx2.InvalidURL as invalid:
            raise ValueError(f"not a valid URL: {invalid}") from None
        if parsed.scheme not in ("http", "https"):
            raise PermissionDeniedError(f"only http and https URLs are fetched, not {url!r}")
        host = _normal_host(parsed.host)
        if host not in self.allow_hosts:
            allowed = ", ".join(sorted(self.allow_hosts)) or "none"
            raise PermissionDeniedError(
                f"{host!r} is not an allowed host (allowed: {allowed}); {url} was not fetched"
            )

    async def _read_capped(self, response: httpx2.Response) -> tuple[bytes, bool]:
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_bytes:
                return bytes(body[: self.max_bytes]), True
        return bytes(body), False

    def preview(self, arguments: dict[str, Any]) -> str:
        return f"GET {arguments['url']}"


def _normal_host(host: str) -> str:
    """Hosts compare case-insensitively and without a trailing dot or IPv6 brackets."""
    return host.strip().strip("[]").rstrip(".").lower()


def register_http_tools(
    registry: ToolRegistry, allow_hosts: Sequence[str], max_bytes: int = DEFAULT_MAX_BYTES
) -> None:
    """Register http_fetch, allowed to reach exactly `allow_hosts` (names or IP addresses)."""
    tools = HttpTools(allow_hosts, max_bytes)
    registry.register(
        tags=("http",),
        requires_confirmation=True,
        open_world=True,
        read_only=True,
        destructive=False,
        idempotent=True,
        timeout=TIMEOUT_SECONDS * (MAX_REDIRECTS + 1),
        preview=tools.preview,
    )(tools.http_fetch)
