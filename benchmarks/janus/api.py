"""The Janus API over HTTP (long poll), as much of it as a videoroom client needs.

Requests are POSTed as JSON to /janus (create a session), /janus/<session> (attach,
keepalive, destroy) and /janus/<session>/<handle> (plugin messages, trickle). Janus
answers "success" at once (session, handle, synchronous plugin requests such as the
videoroom's "create") or "ack", in which case the plugin's "event" with the same
transaction arrives later on the long poll, GET /janus/<session>?maxev=N.

The parsing is pure (``reply_data``, ``plugin_event``) so it is tested without Janus.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from benchmarks.loadgen.whip import require_loopback

REQUEST_TIMEOUT_S = 15.0
EVENT_TIMEOUT_S = 15.0
POLL_MAX_EVENTS = 10
# Janus times a session out after 60 s without a request; browsers say hello every 25 s.
KEEPALIVE_INTERVAL_S = 25.0
POLL_RETRY_S = 0.2


class JanusError(Exception):
    """Janus or its plugin refused a request; ``code`` is Janus's error code."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"janus error {code}: {reason}" if code is not None else reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class PluginEvent:
    """A plugin's reply or notification: its data and, maybe, a JSEP offer or answer."""

    sender: int | None
    transaction: str | None
    data: dict[str, Any]
    jsep: dict[str, Any] | None


def reply_data(message: dict[str, Any]) -> dict[str, Any]:
    """The "data" of a "success" reply (e.g. the session or handle id); raise JanusError
    for an "error" reply and for anything that is not a success."""
    kind = message.get("janus")
    if kind == "error":
        error = message.get("error") or {}
        raise JanusError(error.get("code"), str(error.get("reason", "unknown error")))
    if kind != "success":
        raise JanusError(None, f"expected success, got {kind!r}")
    data = message.get("data")
    return data if isinstance(data, dict) else {}


def plugin_event(message: dict[str, Any]) -> PluginEvent | None:
    """A plugin "event" (or synchronous "success" with plugindata), None for other
    messages (ack, keepalive, webrtcup, media, trickle...). A plugin-level error (an
    "error_code" in the data) raises JanusError."""
    if message.get("janus") not in ("event", "success"):
        return None
    plugindata = message.get("plugindata")
    if not isinstance(plugindata, dict):
        return None
    data = plugindata.get("data")
    if not isinstance(data, dict):
        return None
    if "error_code" in data or "error" in data:
        raise JanusError(data.get("error_code"), str(data.get("error", "plugin error")))
    jsep = message.get("jsep")
    sender = message.get("sender")
    transaction = message.get("transaction")
    return PluginEvent(
        sender if isinstance(sender, int) else None,
        transaction if isinstance(transaction, str) else None,
        data,
        jsep if isinstance(jsep, dict) else None,
    )


def trickle_body(candidate: str | None, mid: str = "0", mline_index: int = 0) -> dict[str, Any]:
    """A "trickle" request's candidate: one candidate line, or None for "completed"."""
    if candidate is None:
        return {"completed": True}
    return {"sdpMid": mid, "sdpMLineIndex": mline_index, "candidate": candidate}


def _transaction() -> str:
    return secrets.token_hex(8)


class JanusHttp:
    """The HTTP connection pool every client of a generator process shares."""

    def __init__(self, base_url: str) -> None:
        require_loopback(urlsplit(base_url).hostname or "")
        self.base_url = base_url.rstrip("/")
        # No connection limit: every session holds one long poll open all the time.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or _transaction()}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with self._session.post(self.base_url + path, json=body, timeout=timeout) as resp:
            message: dict[str, Any] = await resp.json(content_type=None)
        return message

    async def poll(self, session_id: int) -> list[dict[str, Any]]:
        """One long poll: the events Janus had queued, or a keepalive after ~30 s."""
        timeout = aiohttp.ClientTimeout(total=60.0)
        url = f"{self.base_url}/{session_id}?maxev={POLL_MAX_EVENTS}&rid={time.time_ns()}"
        async with self._session.get(url, timeout=timeout) as resp:
            payload = await resp.json(content_type=None)
        if isinstance(payload, list):
            return [m for m in payload if isinstance(m, dict)]
        return [payload] if isinstance(payload, dict) else []

    async def close(self) -> None:
        await self._session.close()


class JanusSession:
    """One Janus session with one plugin handle, as one browser participant has."""

    def __init__(self, http: JanusHttp) -> None:
        self.http = http
        self.session_id = 0
        self.handle_id = 0
        self._waiting: dict[str, asyncio.Future[PluginEvent]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self.unsolicited: list[dict[str, Any]] = []  # webrtcup, media, hangup, ...

    async def open(self, plugin: str) -> None:
        """Create the session, start its long poll and keepalives, attach the plugin."""
        reply = await self.http.post("", {"janus": "create"})
        self.session_id = int(reply_data(reply)["id"])
        self._poller = asyncio.create_task(self._poll())
        self._keepalive = asyncio.create_task(self._keep_alive())
        reply = await self.http.post(f"/{self.session_id}", {"janus": "attach", "plugin": plugin})
        self.handle_id = int(reply_data(reply)["id"])

    async def request(
        self, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> PluginEvent:
        """A plugin message; its synchronous reply, or the event it leads to."""
        transaction = _transaction()
        future: asyncio.Future[PluginEvent] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = future
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            reply = await self.http.post(f"/{self.session_id}/{self.handle_id}", message)
            if reply.get("janus") == "ack":
                return await asyncio.wait_for(future, EVENT_TIMEOUT_S)
            event = plugin_event(reply)
            if event is None:
                reply_data(reply)  # raises with Janus's reason
                raise JanusError(None, f"unexpected reply {reply.get('janus')!r}")
            return event
        finally:
            self._waiting.pop(transaction, None)

    async def trickle(self, candidate: str | None, mid: str = "0", mline_index: int = 0) -> None:
        """Send one local candidate (or None: end of candidates)."""
        reply = await self.http.post(
            f"/{self.session_id}/{self.handle_id}",
            {"janus": "trickle", "candidate": trickle_body(candidate, mid, mline_index)},
        )
        if reply.get("janus") != "ack":
            reply_data(reply)

    def _dispatch(self, message: dict[str, Any]) -> None:
        transaction = message.get("transaction")
        future = self._waiting.get(transaction) if isinstance(transaction, str) else None
        if future is not None and not future.done():
            try:
                event = plugin_event(message)
            except JanusError as exc:
                future.set_exception(exc)
                return
            if event is not None:
                future.set_result(event)
                return
        if message.get("janus") != "keepalive":
            self.unsolicited.append(message)

    async def _poll(self) -> None:
        while True:
            try:
                messages = await self.http.poll(self.session_id)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.sleep(POLL_RETRY_S)
                continue
            for message in messages:
                self._dispatch(message)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL_S)
            try:
                await self.http.post(f"/{self.session_id}", {"janus": "keepalive"})
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue

    async def close(self) -> None:
        """Stop polling and destroy the session (Janus hangs its PeerConnection up)."""
        for task in (self._poller, self._keepalive):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in (self._poller, self._keepalive) if t is not None),
            return_exceptions=True,
        )
        if self.session_id:
            try:
                await self.http.post(f"/{self.session_id}", {"janus": "destroy"})
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass  # Janus times the session out by itself
