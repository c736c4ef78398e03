"""The WebSocket signaling protocol, version 1 (docs/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from sfu.control import (
    MediaError,
    MediaService,
    MidIntent,
    OfferedSection,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    SessionClosed,
    SessionPolicy,
    TrackPublished,
    TrackUnpublished,
    describe_offer,
)
from signaling.audit import AuditLog
from signaling.context import AUDIT, KEYS, MEDIA, ROOMS, client_address
from signaling.rooms import RoomSettingsFile
from signaling.tokens import AccessToken, SigningKeys, TokenError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
MAX_MIDS = 128
JOIN_TIMEOUT_S = 10.0
HEARTBEAT_S = 10.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_JOIN_TIMEOUT = 4408
CLOSE_SESSION_ENDED = 4410
CLOSE_TOO_SLOW = 4429
# Messages waiting for a client that does not read; past this it is cut off.
MAX_OUTBOX = 1000
# What a published m-section carries; screen shares need their own grant.
SOURCES = ("camera", "screen")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code


def _event_json(event: RoomEvent) -> dict[str, Any]:
    if isinstance(event, ParticipantJoined):
        return {"type": "participant_joined", "participant": event.participant.to_json()}
    if isinstance(event, ParticipantLeft):
        return {"type": "participant_left", "identity": event.identity, "reason": event.reason}
    if isinstance(event, TrackPublished):
        return {"type": "track_published", "track": event.track.to_json()}
    if isinstance(event, TrackUnpublished):
        return {
            "type": "track_unpublished",
            "track_id": event.track_id,
            "identity": event.identity,
        }
    return {"type": "error", "code": "session_closed", "message": event.reason}


def _parse_intents(raw: object) -> tuple[dict[str, MidIntent], dict[str, str]]:
    """The offer's ``mids``: what each m-section is for, and each publication's source."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, dict) or len(raw) > MAX_MIDS:
        raise ProtocolError("bad_message", f"mids must be an object of at most {MAX_MIDS} entries")
    intents: dict[str, MidIntent] = {}
    sources: dict[str, str] = {}
    for mid, value in raw.items():
        if not isinstance(value, dict):
            raise ProtocolError("bad_message", f"mids[{mid!r}] must be an object")
        publish, subscribe = value.get("publish"), value.get("subscribe")
        if (publish is None) == (subscribe is None):
            raise ProtocolError("bad_message", f"mids[{mid!r}] needs publish or subscribe")
        if not isinstance(publish or subscribe, str):
            raise ProtocolError("bad_message", f"mids[{mid!r}] values must be strings")
        source = value.get("source", "camera")
        if source not in SOURCES:
            raise ProtocolError(
                "bad_message", f"mids[{mid!r}].source must be one of {', '.join(SOURCES)}"
            )
        if publish is None and "source" in value:
            raise ProtocolError("bad_message", f"mids[{mid!r}]: source goes with publish")
        intents[str(mid)] = MidIntent(publish=publish, subscribe=subscribe)
        sources[str(mid)] = source
    return intents, sources


def required_grant(
    section: OfferedSection, intent: MidIntent | None, source: str
) -> tuple[str, str] | None:
    """The grant an m-section needs, with what it does in words; None if it needs none."""
    if section.sending and section.kind == "audio":
        return "publish:audio", "publishing audio"
    if section.sending and section.kind == "video":
        if source == "screen":
            return "publish:screen", "sharing the screen"
        return "publish:video", "publishing video"
    if section.receiving and intent is not None and intent.subscribe is not None:
        return "subscribe", "subscribing"
    return None


class Connection:
    """One client's WebSocket: parses messages, drives its media session."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        media: MediaService,
        keys: SigningKeys,
        rooms: RoomSettingsFile,
        audit: AuditLog,
        remote: str,
    ) -> None:
        self.ws = ws
        self.media = media
        self.keys = keys
        self.rooms = rooms
        self.audit = audit
        self.remote = remote
        self.subscribed: set[str] = set()
        self.token: AccessToken | None = None
        self.session_id: str | None = None
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.close_code: int | None = None
        self.close_reason = "connection lost"

    # Room events arrive synchronously from the media plane; the writer task sends them.
    def on_event(self, event: RoomEvent) -> None:
        self.send(_event_json(event))
        if isinstance(event, SessionClosed):
            self.session_id = None
            self.close_code = CLOSE_SESSION_ENDED
            self.outbox.put_nowait(None)

    async def _writer(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                break
            try:
                await self.ws.send_json(message)
            except (ConnectionError, RuntimeError):
                break
        if self.close_code is not None and not self.ws.closed:
            await self.ws.close(code=self.close_code)

    def send(self, message: dict[str, Any]) -> None:
        if self.outbox.qsize() >= MAX_OUTBOX:
            if self.close_code is None:
                log.warning("signaling client too slow, closing identity=%s", self._identity())
                self.close_code = CLOSE_TOO_SLOW
                self.outbox.put_nowait(None)
            return
        self.outbox.put_nowait(message)

    def _identity(self) -> str:
        return self.token.identity if self.token is not None else "-"

    def error(self, code: str, message: str, request: str | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if request:
            body["request"] = request
        self.send(body)

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        try:
            await self._read_loop()
        finally:
            if self.session_id is not None:
                self.media.close_session(self.session_id, self.close_reason)
                self.session_id = None
            self.outbox.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_TIMEOUT_S
        while self.close_code is None:
            timeout = None if self.token is not None else max(0.0, deadline - loop.time())
            try:
                msg = await self.ws.receive(timeout=timeout)
            except TimeoutError:
                self.error("join_timeout", f"no join within {JOIN_TIMEOUT_S:.0f} s")
                self.close_code = CLOSE_JOIN_TIMEOUT
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type != WSMsgType.TEXT:
                self.error("bad_message", "only JSON text messages are accepted")
                continue
            try:
                self._handle_text(msg.data)
            except ProtocolError as exc:
                self.error(exc.code, exc.message, self._request_type(msg.data))
                if exc.close_code is not None:
                    self.close_code = exc.close_code
                    return
            except Exception:
                log.exception("signaling handler failed")
                self.error("internal", "internal error; the request was not applied")

    @staticmethod
    def _request_type(text: str) -> str | None:
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return (
            value.get("type")
            if isinstance(value, dict) and isinstance(value.get("type"), str)
            else None
        )

    def _handle_text(self, text: str) -> None:
        if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
            raise ProtocolError("too_large", f"message larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise ProtocolError("bad_json", f"invalid JSON: {exc}") from exc
        if not isinstance(message, dict):
            raise ProtocolError("bad_message", "a message must be a JSON object")
        kind = message.get("type")
        if not isinstance(kind, str):
            raise ProtocolError("bad_message", "missing string field 'type'")
        handler = {
            "join": self._on_join,
            "offer": self._on_offer,
            "leave": self._on_leave,
            "ping": self._on_ping,
        }.get(kind)
        if handler is None:
            raise ProtocolError("unknown_type", f"unknown message type {kind[:40]!r}")
        handler(message)

    def _on_join(self, message: dict[str, Any]) -> None:
        if self.token is not None:
            raise ProtocolError("already_joined", "this connection has already joined")
        version = message.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ProtocolError("bad_message", "missing integer field 'version'")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                "unsupported_version", f"protocol version {version} unsupported; use 1"
            )
        token = message.get("token")
        if not isinstance(token, str):
            raise ProtocolError("unauthorized", "missing token", CLOSE_UNAUTHORIZED)
        try:
            access = self.keys.verify(token)
        except TokenError as exc:
            self.audit.record("auth_failure", channel="ws", reason=exc.message, remote=self.remote)
            raise ProtocolError("unauthorized", exc.message, CLOSE_UNAUTHORIZED) from exc
        room = message.get("room", access.room)
        if not isinstance(room, str):
            raise ProtocolError("bad_message", "field 'room' must be a string")
        try:
            access.require(room)
        except TokenError as exc:
            self.audit.record(
                "auth_failure", access.identity, room[:128], tenant=access.tenant, channel="ws",
                reason=exc.message, remote=self.remote,
            )  # fmt: skip
            raise ProtocolError("forbidden", exc.message, CLOSE_FORBIDDEN) from exc
        self.audit.record(
            "auth_success", access.identity, access.room, tenant=access.tenant, channel="ws",
            role=access.role, grants=sorted(access.grants), token_id=access.token_id,
            kid=access.kid, remote=self.remote,
        )  # fmt: skip
        self.token = access
        policy = SessionPolicy(
            can_publish=access.can_publish,
            can_subscribe="subscribe" in access.grants,
            allow_bundle=self.rooms.for_room(access.room, access.tenant).allow_bundle,
        )
        session = self.media.open_session(
            access.room_key, access.identity, access.name, policy, self.on_event
        )
        self.session_id = session.session_id
        others = self.media.participants(access.room_key, session.session_id)
        self.send(
            {
                "type": "joined",
                "version": PROTOCOL_VERSION,
                "tenant": access.tenant,
                "room": access.room,
                "identity": access.identity,
                "name": access.name,
                "role": access.role,
                "grants": sorted(access.grants),
                "can_publish": policy.can_publish,
                "participants": [p.to_json() for p in others],
            }
        )

    def _require_session(self) -> str:
        if self.session_id is None:
            raise ProtocolError("not_joined", "send join first")
        return self.session_id

    def _on_offer(self, message: dict[str, Any]) -> None:
        session_id = self._require_session()
        assert self.token is not None
        sdp = message.get("sdp")
        if not isinstance(sdp, str):
            raise ProtocolError("bad_message", "missing string field 'sdp'")
        intents, sources = _parse_intents(message.get("mids"))
        try:
            sections = describe_offer(sdp)
        except MediaError as exc:
            raise ProtocolError(exc.code, exc.message) from exc
        refused = self._refused_sections(sections, intents, sources)
        try:
            result = self.media.negotiate(session_id, sdp, intents, refused)
        except MediaError as exc:
            raise ProtocolError(exc.code, exc.message) from exc
        for code, text in result.warnings:
            self.error(code, text, "offer")
        for track_id in set(result.subscriptions) - self.subscribed:
            self.audit.record(
                "subscribe", self.token.identity, self.token.room, tenant=self.token.tenant,
                track_id=track_id,
            )  # fmt: skip
        self.subscribed = set(result.subscriptions)
        self.send(
            {
                "type": "answer",
                "sdp": result.sdp,
                "published": [t.to_json() for t in result.published],
            }
        )

    def _refused_sections(
        self,
        sections: list[OfferedSection],
        intents: dict[str, MidIntent],
        sources: dict[str, str],
    ) -> dict[str, str]:
        """mid -> why, for each m-section the token does not authorize (each audited)."""
        assert self.token is not None
        refused: dict[str, str] = {}
        for section in sections:
            needed = required_grant(
                section, intents.get(section.mid), sources.get(section.mid, "camera")
            )
            if needed is None or needed[0] in self.token.grants:
                continue
            grant, action = needed
            reason = f"mid {section.mid}: {action} needs grant {grant}"
            refused[section.mid] = reason
            self.audit.record(
                "auth_failure", self.token.identity, self.token.room, tenant=self.token.tenant,
                channel="ws", reason=reason, grant=grant, remote=self.remote,
            )  # fmt: skip
        return refused

    def _on_leave(self, message: dict[str, Any]) -> None:
        self.close_reason = "left"
        self.close_code = 1000

    def _on_ping(self, message: dict[str, Any]) -> None:
        self.send({"type": "pong"})


async def handle_websocket(request: web.Request) -> web.WebSocketResponse:
    # aiohttp's own limit is above ours so that an oversized message gets our error,
    # not a dropped connection.
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=4 * MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    app = request.app
    connection = Connection(
        ws, app[MEDIA], app[KEYS], app[ROOMS], app[AUDIT], client_address(request)
    )
    await connection.run()
    if not ws.closed:
        await ws.close(code=connection.close_code or 1000)
    return ws
