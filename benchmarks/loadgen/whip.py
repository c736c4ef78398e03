"""WHIP/WHEP over HTTPS with the SFU's certificate pinned as the only trust anchor."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

HTTP_TIMEOUT_S = 15.0


class SignalingError(Exception):
    """The server refused or failed an offer (status and its text)."""


def require_loopback(host: str) -> None:
    """Refuse any address but loopback: the load generator must not leave the machine."""
    name = host.strip("[]")
    if name == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"{host!r} is not a loopback address; the load generator stays local")


def pinned_context(cert_path: Path) -> ssl.SSLContext:
    """TLS client context that trusts only the SFU's (development) certificate."""
    context = ssl.create_default_context(cafile=str(cert_path))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


class WhipClient:
    """POSTs offers to /whip and /whep, DELETEs the sessions it created."""

    def __init__(self, base_url: str, cert_path: Path, concurrency: int = 16) -> None:
        require_loopback(urlsplit(base_url).hostname or "")
        self.base_url = base_url.rstrip("/")
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=pinned_context(cert_path), limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
        )

    async def post_offer(self, path: str, token: str, offer: str) -> tuple[str, str]:
        """Send an offer; return (answer SDP, absolute resource URL)."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
        async with self._session.post(self.base_url + path, data=offer, headers=headers) as resp:
            text = await resp.text()
            if resp.status != 201:
                raise SignalingError(f"POST {path} -> {resp.status}: {text.strip()[:200]}")
            location = resp.headers.get("Location", "")
        return text, urljoin(self.base_url + "/", location) if location else ""

    async def delete(self, resource_url: str) -> int:
        async with self._session.delete(resource_url) as resp:
            return resp.status

    async def close(self) -> None:
        await self._session.close()
