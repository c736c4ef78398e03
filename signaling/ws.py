"""The WebSocket signaling protocol, version 1 (docs/PROTOCOL.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
import time
from typing import Any

from aiohttp import WSMsgType, web

from sfu.control import (
    FileLimits,
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
from signaling.context import AUDIT, GUARD, KEYS, MEDIA, ROOMS, client_address
from signaling.live import LiveSession
from signaling.moderation import MODERATION, Moderator
from signaling.policy.engine import POLICY, PolicyEngine, enforce_on_media
from signaling.policy.evaluator import Decision
from signaling.ratelimit import SourceGuard, TokenBucket
from signaling.rooms import RoomSettingsFile
from signaling.tokens import AccessToken, SigningKeys, TokenError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024
MAX_MIDS = 128
JOIN_TIMEOUT_S = 10.0
HEARTBEAT_S = 10.0
# Messages over the rate in a row before the connection is closed as a flood.
MAX_REFUSED_IN_ROW = 200
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_JOIN_TIMEOUT = 4408
CLOSE_SESSION_ENDED = 4410
CLOSE_TOO_SLOW = 4429
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
# The grant each data-channel action needs before the policy is asked.
DATA_GRANTS = {"publish:control": "publish:control", "send_file": "publish:file",
               "receive_file": "subscribe"}  # fmt: skip
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


def signaling_tls(request: web.Request) -> dict[str, Any]:
    """The TLS under this WebSocket as the server negotiated it (nulls over plain TCP,
    e.g. behind a TLS-terminating proxy)."""
    transport = request.transport
    tls = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(tls, ssl.SSLObject | ssl.SSLSocket):
        return {"tls_version": None, "tls_cipher": None, "alpn": None}
    cipher = tls.cipher()
    return {
        "tls_version": tls.version(),
        "tls_cipher": cipher[0] if cipher else None,
        "alpn": tls.selected_alpn_protocol(),
    }


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
    if isinstance(event, SessionClosed):
        return {"type": "error", "code": "session_closed", "message": event.reason}
    raise ValueError(f"{type(event).__name__} is not for members")  # FilesDeleted: audit only


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
        intents[str(mid)] = MidIntent(publish=publish, subscribe=subscribe, source=source)
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


def _denied(decision: Decision) -> str:
    if decision.rule is None:
        return f"denied by policy: {decision.reason}"
    return f"denied by policy rule {decision.rule!r} ({decision.source}): {decision.reason}"


def _actions_in_use(
    sections: list[OfferedSection],
    intents: dict[str, MidIntent],
    sources: dict[str, str],
    refused: dict[str, str],
) -> set[str]:
    """The policy actions an answered offer performs (rechecked while they last)."""
    actions = set()
    for section in sections:
        if section.mid in refused:
            continue
        needed = required_grant(
            section, intents.get(section.mid), sources.get(section.mid, "camera")
        )
        if needed is not None:
            actions.add(needed[0])
    return actions


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
        # Live moderation (signaling/moderation.py); handle_websocket sets it.
        self.moderation: Moderator | None = None
        self.live: LiveSession | None = None
        self._reading: asyncio.Task[None] | None = None
        # Access policy (signaling/policy/); handle_websocket sets it.
        self.policy: PolicyEngine | None = None
        # Rate limits (signaling/ratelimit.py); handle_websocket sets the guard.
        self.guard: SourceGuard | None = None
        self._messages: TokenBucket | None = None
        self._refused_in_row = 0
        # This socket's TLS (signaling_tls), for connection_stats; handle_websocket sets it.
        self.tls: dict[str, Any] = {"tls_version": None, "tls_cipher": None, "alpn": None}

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
            # The server ends the session (moderator, revocation, replaced): stop the
            # reader first, or aiohttp's close from another task may drop the close frame.
            reading = self._reading
            if reading is not None and not reading.done():
                reading.cancel()
                await asyncio.wait([reading])
            await self.ws.close(code=self.close_code)

    def send(self, message: dict[str, Any]) -> None:
        if self.outbox.qsize() >= MAX_OUTBOX:
            if self.close_code is None:
                log.warning("signaling client too slow, closing identity=%s", self._identity())
                self.close_code = CLOSE_TOO_SLOW
                self.outbox.put_nowait(None)
            return
        self.outbox.put_nowait(message)

    def end(self, code: str, reason: str) -> None:
        """The server ends this session now (moderator, revocation): its media stops
        before this returns; the client gets an error, then the close code."""
        if self.close_code is not None and self.session_id is None:
            return
        self.error(code, reason)
        self.close_code = CLOSE_UNAUTHORIZED if code == "unauthorized" else CLOSE_SESSION_ENDED
        self.close_reason = reason
        if self.session_id is not None:
            session_id, self.session_id = self.session_id, None
            self.media.close_session(session_id, reason)
        self.outbox.put_nowait(None)

    def grants(self) -> frozenset[str]:
        """The effective grants: the token's until a moderator changes them."""
        if self.live is not None:
            return self.live.grants
        return self.token.grants if self.token is not None else frozenset()

    def _identity(self) -> str:
        return self.token.identity if self.token is not None else "-"

    def error(self, code: str, message: str, request: str | None = None) -> None:
        body: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if request:
            body["request"] = request
        self.send(body)

    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        self._reading = asyncio.create_task(self._read_loop())
        try:
            await asyncio.wait([self._reading])
            error = None if self._reading.cancelled() else self._reading.exception()
            if error is not None:
                raise error
        finally:
            self._reading.cancel()
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
            if not self._within_message_rate():
                if self.close_code is not None:
                    return
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

    def _within_message_rate(self) -> bool:
        """False for a message over this connection's rate: it is not applied. The
        first of a run gets a `rate_limited` error; a run of MAX_REFUSED_IN_ROW
        closes the connection (4429)."""
        if self.guard is None:
            return True
        now = time.monotonic()
        if self._messages is None:
            self._messages = self.guard.message_bucket(now)
        if not self._messages.take(now):
            self._refused_in_row = 0
            return True
        self.guard.message_refused(self.remote, now)
        self._refused_in_row += 1
        if self._refused_in_row >= MAX_REFUSED_IN_ROW:
            self.error("rate_limited", "too many messages; closing")
            self.close_code = CLOSE_TOO_SLOW
            self.close_reason = "message flood"
        elif self._refused_in_row == 1:
            self.error("rate_limited", "too many messages; those over the limit are not applied")
        return False

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
            "connection_stats": self._on_connection_stats,
            "e2ee_hello": self._on_e2ee,
            "e2ee_key": self._on_e2ee,
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
            if self.guard is not None:
                self.guard.auth_failed(self.remote, time.monotonic())
            raise ProtocolError("unauthorized", exc.message, CLOSE_UNAUTHORIZED) from exc
        if self.guard is not None:
            self.guard.auth_succeeded(self.remote)
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
        join_decision = self._policy_check(access, "join")
        if join_decision is not None and not join_decision.allowed:
            raise ProtocolError("forbidden", f"join {_denied(join_decision)}", CLOSE_FORBIDDEN)
        self.token = access
        grants = self.moderation.effective_grants(access) if self.moderation else access.grants
        settings = self.rooms.for_room(access.room, access.tenant)
        policy = SessionPolicy(
            can_publish=any(g.startswith("publish:") for g in grants),
            can_subscribe="subscribe" in grants,
            allow_bundle=settings.allow_bundle,
            data_channels=True,
        )
        session = self.media.open_session(
            access.room_key, access.identity, access.name, policy, self.on_event
        )
        self.session_id = session.session_id
        self.media.set_file_limits(
            access.room_key,
            FileLimits(
                settings.max_file_bytes,
                settings.file_types,
                settings.file_kbps * 1000,
                keep=settings.keep_files,
                retention_s=settings.file_retention_s or None,
            ),
        )
        self.media.set_data_access(session.session_id, self._authorize_data, self._report_data)
        if self.moderation is not None:
            self.live = self.moderation.register(
                session.session_id, "ws", access, self.end, self.send
            )
        others = self.media.participants(access.room_key, session.session_id)
        if self.policy is not None:
            self.policy.watch(session.session_id, access, "ws", self._on_policy_change, self.grants)
            if join_decision is not None:
                self.policy.fulfil(access, "join", join_decision, [p.identity for p in others])
        self.send(
            {
                "type": "joined",
                "version": PROTOCOL_VERSION,
                "tenant": access.tenant,
                "room": access.room,
                "identity": access.identity,
                "name": access.name,
                "role": access.role,
                "grants": sorted(grants),
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
        if self.policy is not None:
            self.policy.set_active(session_id, _actions_in_use(sections, intents, sources, refused))
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
        if self.policy is not None and self.session_id is not None:
            # Rules may ask whether the camera is on (context.camera_on, ..._for).
            camera = any(
                s.sending and s.kind == "video" and sources.get(s.mid, "camera") == "camera"
                for s in sections
            )
            self.policy.set_camera(self.session_id, camera and "publish:video" in self.grants())
        for section in sections:
            needed = required_grant(
                section, intents.get(section.mid), sources.get(section.mid, "camera")
            )
            if needed is None:
                continue
            if needed[0] in self.grants():
                decision = self._policy_check(self.token, needed[0])
                if decision is not None and not decision.allowed:
                    refused[section.mid] = f"mid {section.mid}: {needed[1]} {_denied(decision)}"
                continue
            grant, action = needed
            reason = f"mid {section.mid}: {action} needs grant {grant}"
            refused[section.mid] = reason
            self.audit.record(
                "auth_failure", self.token.identity, self.token.room, tenant=self.token.tenant,
                channel="ws", reason=reason, grant=grant, remote=self.remote,
            )  # fmt: skip
        return refused

    def _policy_check(self, access: AccessToken, action: str) -> Decision | None:
        """The policy's decision (a denial audited), or None without a policy engine."""
        if self.policy is None:
            return None
        return self.policy.check(
            access, action, channel="ws", session_id=self.session_id, remote=self.remote
        )

    def _authorize_data(self, action: str, counterparties: list[str]) -> str | None:
        """The media plane asks before a control message or a file moves: None, or why not.

        Grants first (a moderator's change applies to the next message), then the
        policy: once for a control message, per counterparty for a file (rules may
        look at context.counterparty), denials audited; a file send's obligations
        (audit_counterparty) are carried out when it is allowed."""
        access, session_id = self.token, self.session_id
        if access is None or session_id is None:
            return "not joined"
        grant = DATA_GRANTS.get(action)
        if grant is None:
            return f"unknown action {action}"
        if grant not in self.grants():
            return f"{action} needs grant {grant}"
        if self.policy is None:
            return None
        if action == "publish:control":
            decision = self.policy.decide(access, action, session_id=session_id)
            return None if decision.allowed else f"{action} {_denied(decision)}"
        allowing: Decision | None = None
        for identity in counterparties or [""]:
            decision = self.policy.check(
                access, action, channel="ws", session_id=session_id, remote=self.remote,
                counterparty=(identity, access.tenant) if identity else None,
            )  # fmt: skip
            if not decision.allowed:
                return f"{action} {_denied(decision)}"
            allowing = decision
        if allowing is not None and action == "send_file":
            self.policy.fulfil(access, action, allowing, counterparties)
        return None

    def _report_data(self, event: str, detail: dict[str, Any]) -> None:
        """How a file transfer ended, for the audit (with its recipients)."""
        if self.token is None:
            return
        self.audit.record(
            event, self.token.identity, self.token.room, tenant=self.token.tenant, **detail
        )

    def _on_policy_change(self, action: str, decision: Decision) -> None:
        """A recheck flipped a decision: stop (or resume) what it is about."""
        if self.session_id is None:
            return
        if not decision.allowed:
            self.error("forbidden", f"{action} {_denied(decision)}", "policy")
        if not enforce_on_media(self.media, self.session_id, action, decision):
            if not decision.allowed:
                self.end("forbidden", f"{action} {_denied(decision)}")

    def _on_leave(self, message: dict[str, Any]) -> None:
        self.close_reason = "left"
        self.close_code = 1000

    def _on_ping(self, message: dict[str, Any]) -> None:
        self.send({"type": "pong"})

    def _on_connection_stats(self, message: dict[str, Any]) -> None:
        """This participant's own connection as the server sees it: the signaling TLS,
        and per transport the ICE pair, DTLS, SRTP profile and per-track counters.
        Only ever the requester's own session (no other member's addresses); the
        message rate limit bounds how often it is asked."""
        session_id = self._require_session()
        try:
            stats = self.media.connection_stats(session_id)
        except MediaError as exc:
            raise ProtocolError("not_joined", f"no media session ({exc.message})") from exc
        self.send(
            {
                "type": "connection_stats",
                "signaling": {**self.tls, "remote": self.remote},
                **stats.to_json(),
            }
        )

    def _on_e2ee(self, message: dict[str, Any]) -> None:
        """Relay an end-to-end encryption message (docs/E2EE.md): an identity public key
        to the room (or one member), or a sender key wrapped for one member. The
        server only passes opaque base64url blobs on, stamped with the sender."""
        self._require_session()
        assert self.token is not None and self.session_id is not None
        kind = message["type"]
        field, limit = ("public_key", 64) if kind == "e2ee_hello" else ("blob", 512)
        value = message.get(field)
        if (
            not isinstance(value, str)
            or not 0 < len(value) <= limit
            or not _B64URL.fullmatch(value)
        ):
            raise ProtocolError(
                "bad_message", f"field {field!r} must be base64url, {limit} at most"
            )
        to = message.get("to")
        if to is None and kind == "e2ee_key":
            raise ProtocolError("bad_message", "e2ee_key needs 'to'")
        if to is not None and (not isinstance(to, str) or not 0 < len(to) <= 128):
            raise ProtocolError("bad_message", "field 'to' must be an identity")
        if self.moderation is None:
            raise ProtocolError("unsupported", "this server relays no E2EE messages")
        access = self.token
        targets = [
            live
            for live in self.moderation.registry.in_room(access.tenant, access.room)
            if live.send is not None
            and live.session_id != self.session_id
            and (to is None or live.identity == to)
        ]
        if to is not None and not targets:
            raise ProtocolError("not_found", f"{to[:128]!r} is not in this room")
        relayed = {"type": kind, "from": access.identity, field: value}
        for live in targets:
            assert live.send is not None
            live.send(relayed)


async def handle_websocket(request: web.Request) -> web.StreamResponse:
    app = request.app
    guard, remote = app[GUARD], client_address(request)
    if not guard.open_connection(remote, time.monotonic()):
        return web.Response(
            status=429,
            text="rate_limited: too many WebSocket connections from this address\n",
            headers={"Retry-After": "1"},
        )
    try:
        # aiohttp's own limit is above ours so that an oversized message gets our error,
        # not a dropped connection.
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=4 * MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        connection = Connection(ws, app[MEDIA], app[KEYS], app[ROOMS], app[AUDIT], remote)
        connection.guard = guard
        connection.tls = signaling_tls(request)
        connection.moderation = app.get(MODERATION)
        connection.policy = app[POLICY]  # required: no engine fails closed
        await connection.run()
        if not ws.closed:
            await ws.close(code=connection.close_code or 1000)
        return ws
    finally:
        guard.close_connection(remote)
