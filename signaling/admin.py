"""The admin/moderator HTTP API (docs/ADMIN.md): list rooms and participants, change
grants, mute, remove, close rooms, revoke tokens, all on live sessions.

A Bearer access token with grant ``admin`` acts on every room of its tenant; one with
``moderate`` only on its own room. The token's tenant scopes everything: a room of
another tenant answers exactly like a room that does not exist (404).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from sfu.control import MEDIA_CLASSES
from signaling.audit import export
from signaling.context import AUDIT, KEYS, MEDIA, client_address
from signaling.live import LiveSession
from signaling.moderation import MODERATION, Moderator, NotFound
from signaling.policy.engine import POLICY
from signaling.revocations import (
    DEFAULT_LIFETIME_S,
    Revocation,
    RevocationError,
    RevocationStore,
)
from signaling.tokens import GRANTS, LEEWAY_S, AccessToken, TokenError

__all__ = ["setup"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
# Audit records one export returns at most (page on with ?after=<last seq>).
MAX_EXPORT_RECORDS = 5000
MAX_NAME_LEN = 128
# Revocations may be kept at most this long (an explicit expires_at beyond is refused).
MAX_REVOCATION_S = 366 * 24 * 3600
# Grants only an admin may hand out: a moderator must not create moderators.
ADMIN_ONLY_GRANTS = frozenset({"admin", "moderate"})

Handler = Callable[[web.Request, AccessToken], Awaitable[web.Response]]


class AdminError(Exception):
    """An error the caller gets as ``{"error": code, "message": ...}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="sfu-admin"'} if status == 401 else None
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def _authenticate(request: web.Request) -> AccessToken:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    audit, remote = request.app[AUDIT], client_address(request)
    if scheme.lower() != "bearer" or not token.strip():
        raise AdminError(401, "unauthorized", "missing bearer token")
    try:
        access = request.app[KEYS].verify(token.strip())
    except TokenError as exc:
        audit.record("auth_failure", channel="admin", reason=exc.message, remote=remote)
        raise AdminError(401, "unauthorized", exc.message) from exc
    if not access.grants & {"admin", "moderate"}:
        audit.record(
            "auth_failure", access.identity, access.room, tenant=access.tenant, channel="admin",
            reason="token grants neither admin nor moderate", grant="admin", remote=remote,
        )  # fmt: skip
        raise AdminError(403, "forbidden", "token grants neither admin nor moderate")
    return access


def _check_name(value: str, what: str) -> str:
    if not 0 < len(value) <= MAX_NAME_LEN or not value.isprintable():
        raise AdminError(
            400, "bad_request", f"{what} must be 1-{MAX_NAME_LEN} printable characters"
        )
    return value


def _room(request: web.Request, actor: AccessToken) -> str:
    """The room in the URL, if the actor may act on it (moderators: their own only)."""
    room = _check_name(request.match_info["room"], "room")
    if "admin" not in actor.grants and room != actor.room:
        # Same answer whether or not the room exists: nothing is learnt.
        raise AdminError(403, "forbidden", "grant moderate covers the token's own room only")
    return room


def _identity(request: web.Request) -> str:
    return _check_name(request.match_info["identity"], "identity")


async def _json_body(
    request: web.Request, fields: dict[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """A JSON object of at most MAX_BODY_BYTES with only ``fields`` (typed)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise AdminError(413, "too_large", f"body larger than {MAX_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        raise AdminError(413, "too_large", f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminError(400, "bad_json", "body is not JSON") from exc
    if not isinstance(body, dict):
        raise AdminError(400, "bad_request", "body must be a JSON object")
    for key, value in body.items():
        expected = fields.get(key)
        if expected is None:
            raise AdminError(400, "bad_request", f"unknown field {key[:40]!r}")
        # JSON true/false must not pass as numbers.
        if not isinstance(value, expected) or (
            isinstance(value, bool) and bool not in _types(expected)
        ):
            raise AdminError(400, "bad_request", f"field {key!r} has the wrong type")
    return body


def _types(expected: type | tuple[type, ...]) -> tuple[type, ...]:
    return expected if isinstance(expected, tuple) else (expected,)


def _participants_json(moderator: Moderator, sessions: list[LiveSession]) -> list[dict[str, Any]]:
    by_identity: dict[str, list[LiveSession]] = {}
    for session in sessions:
        by_identity.setdefault(session.identity, []).append(session)
    media = moderator.media
    result: list[dict[str, Any]] = []
    for identity, own in sorted(by_identity.items()):
        first = own[0]
        override = moderator.registry.override(first.tenant, first.room, identity)
        result.append(
            {
                "identity": identity,
                "name": first.name,
                "grants": sorted(first.grants),
                "muted": sorted(override.muted) if override is not None else [],
                "sessions": [
                    {
                        **s.to_json(),
                        "tracks": [t.to_json() for t in media.session_tracks(s.session_id)],
                    }
                    for s in own
                ],
            }
        )
    return result


def _room_sessions(moderator: Moderator, actor: AccessToken, room: str) -> list[LiveSession]:
    sessions = moderator.registry.in_room(actor.tenant, room)
    if not sessions:
        raise AdminError(404, "not_found", f"no room {room!r}")
    return sessions


# --- handlers ---


async def list_rooms(request: web.Request, actor: AccessToken) -> web.Response:
    moderator = request.app[MODERATION]
    rooms = moderator.registry.rooms(actor.tenant)
    if "admin" not in actor.grants:
        rooms = {name: s for name, s in rooms.items() if name == actor.room}
    body = [
        {
            "room": name,
            "participants": len({s.identity for s in sessions}),
            "sessions": len(sessions),
        }
        for name, sessions in sorted(rooms.items())
    ]
    return web.json_response({"tenant": actor.tenant, "rooms": body})


async def list_participants(request: web.Request, actor: AccessToken) -> web.Response:
    room = _room(request, actor)
    moderator = request.app[MODERATION]
    sessions = _room_sessions(moderator, actor, room)
    return web.json_response(
        {"room": room, "participants": _participants_json(moderator, sessions)}
    )


async def _one_participant(
    moderator: Moderator, actor: AccessToken, room: str, identity: str
) -> dict[str, Any]:
    sessions = moderator.registry.of_participant(actor.tenant, room, identity)
    found = _participants_json(moderator, sessions)
    return found[0] if found else {"identity": identity, "sessions": []}


async def patch_participant(request: web.Request, actor: AccessToken) -> web.Response:
    room, identity = _room(request, actor), _identity(request)
    body = await _json_body(request, {"grants": list})
    if "grants" not in body:
        raise AdminError(400, "bad_request", "missing field 'grants'")
    raw = body["grants"]
    if len(raw) > len(GRANTS) or not all(isinstance(g, str) for g in raw):
        raise AdminError(400, "bad_request", f"grants must be at most {len(GRANTS)} strings")
    unknown = [g for g in raw if g not in GRANTS]
    if unknown:
        raise AdminError(400, "bad_request", f"unknown grant {unknown[0][:40]!r}")
    if len(set(raw)) != len(raw):
        raise AdminError(400, "bad_request", "grants repeat a grant")
    grants = frozenset(raw)
    if grants & ADMIN_ONLY_GRANTS and "admin" not in actor.grants:
        raise AdminError(403, "forbidden", "only an admin may grant admin or moderate")
    moderator = request.app[MODERATION]
    moderator.set_grants(actor.tenant, room, identity, grants, actor.identity)
    return web.json_response(await _one_participant(moderator, actor, room, identity))


async def mute_participant(request: web.Request, actor: AccessToken) -> web.Response:
    room, identity = _room(request, actor), _identity(request)
    body = await _json_body(request, {"kind": str, "muted": bool})
    if "kind" not in body or body["kind"] not in MEDIA_CLASSES:
        raise AdminError(400, "bad_request", f"kind must be one of {', '.join(MEDIA_CLASSES)}")
    muted = body.get("muted", True)
    moderator = request.app[MODERATION]
    moderator.mute(actor.tenant, room, identity, body["kind"], muted, actor.identity)
    return web.json_response(await _one_participant(moderator, actor, room, identity))


async def remove_participant(request: web.Request, actor: AccessToken) -> web.Response:
    room, identity = _room(request, actor), _identity(request)
    closed = request.app[MODERATION].remove(actor.tenant, room, identity, actor.identity)
    return web.json_response({"room": room, "identity": identity, "sessions_closed": closed})


async def close_room(request: web.Request, actor: AccessToken) -> web.Response:
    room = _room(request, actor)
    closed = request.app[MODERATION].close_room(actor.tenant, room, actor.identity)
    return web.json_response({"room": room, "sessions_closed": closed})


async def revoke(request: web.Request, actor: AccessToken) -> web.Response:
    if "admin" not in actor.grants:
        raise AdminError(403, "forbidden", "revoking tokens needs grant admin")
    body = await _json_body(request, {"jti": str, "identity": str, "expires_at": (int, float)})
    jti, identity = body.get("jti"), body.get("identity")
    if (jti is None) == (identity is None):
        raise AdminError(400, "bad_request", "give exactly one of 'jti' and 'identity'")
    moderator = request.app[MODERATION]
    now = time.time()
    expires_at = body.get("expires_at")
    if expires_at is None:
        # Known tokens: until the latest of them expires; otherwise the default.
        live = moderator.registry.matching(actor.tenant, jti=jti, identity=identity)
        expires_at = now + DEFAULT_LIFETIME_S
        if jti is not None and live:
            expires_at = max(s.expires_at for s in live) + LEEWAY_S
    elif not now < expires_at <= now + MAX_REVOCATION_S:
        raise AdminError(400, "bad_request", "expires_at must be in the next 366 days")
    try:
        entry = Revocation(actor.tenant, jti, identity, now, float(expires_at), actor.identity)
        closed = moderator.revoke(entry)
    except RevocationError as exc:
        raise AdminError(400, "bad_request", str(exc)) from exc
    return web.json_response({"revocation": entry.to_json(), "sessions_closed": closed}, status=201)


async def list_revocations(request: web.Request, actor: AccessToken) -> web.Response:
    if "admin" not in actor.grants:
        raise AdminError(403, "forbidden", "listing revocations needs grant admin")
    entries = request.app[MODERATION].revocations.entries()
    return web.json_response(
        {"revocations": [e.to_json() for e in entries if e.tenant == actor.tenant]}
    )


def _authorize(request: web.Request, actor: AccessToken, action: str) -> None:
    """The policy's word on ``action`` (denials audited), after the grant checks."""
    engine, remote = request.app[POLICY], client_address(request)
    decision = engine.check(actor, action, channel="admin", remote=remote)
    if not decision.allowed:
        raise AdminError(403, "forbidden", f"denied by policy: {decision.reason}")


def _endpoint(
    handler: Handler, action: str = "moderate"
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def endpoint(request: web.Request) -> web.Response:
        try:
            actor = _authenticate(request)
            _authorize(request, actor, action)
            return await handler(request, actor)
        except AdminError as exc:
            return _error(exc.status, exc.code, exc.message)
        except NotFound as exc:
            return _error(404, "not_found", str(exc))

    return endpoint


async def export_audit(request: web.Request, actor: AccessToken) -> web.Response:
    """The tenant's own audit records (admin only), oldest first, a page at a time."""
    if "admin" not in actor.grants:
        raise AdminError(403, "forbidden", "exporting the audit log needs grant admin")
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", str(MAX_EXPORT_RECORDS)))
    except ValueError as exc:
        raise AdminError(400, "bad_request", "after and limit must be integers") from exc
    if after < 0 or not 0 < limit <= MAX_EXPORT_RECORDS:
        raise AdminError(400, "bad_request", f"limit must be 1-{MAX_EXPORT_RECORDS}")
    audit = request.app[AUDIT]

    def read() -> list[dict[str, Any]]:
        # Server-wide records (no tenant) and other tenants' never leave this server here.
        out: list[dict[str, Any]] = []
        # Paging starts at the seq (the primary key), not at the start of the log.
        for record in export(audit.paths, after_seq=after):
            if record["detail"].get("tenant") == actor.tenant:
                out.append(record)
                if len(out) == limit:
                    break
        return out

    records = await asyncio.to_thread(read)
    audit.record(
        "audit_export", actor.identity, actor.room, tenant=actor.tenant, after=after,
        records=len(records), remote=client_address(request),
    )  # fmt: skip
    return web.json_response(
        {
            "tenant": actor.tenant,
            "records": records,
            "next_after": records[-1]["seq"] if records else after,
        }
    )


def setup(app: web.Application, data_dir: Path) -> Moderator:
    """Live moderation, revocations (checked at every token verification) and routes."""
    store = RevocationStore(data_dir)
    app[KEYS].revoked = store.reason
    moderator = Moderator(app[MEDIA], app[AUDIT], store)
    app[MODERATION] = moderator

    async def on_startup(app: web.Application) -> None:
        moderator.start()

    async def on_cleanup(app: web.Application) -> None:
        await moderator.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    router = app.router
    router.add_get("/admin/rooms", _endpoint(list_rooms))
    router.add_delete("/admin/rooms/{room}", _endpoint(close_room))
    router.add_get("/admin/rooms/{room}/participants", _endpoint(list_participants))
    participant = "/admin/rooms/{room}/participants/{identity}"
    router.add_patch(participant, _endpoint(patch_participant))
    router.add_delete(participant, _endpoint(remove_participant))
    router.add_post(participant + "/mute", _endpoint(mute_participant))
    router.add_post("/admin/revocations", _endpoint(revoke))
    router.add_get("/admin/revocations", _endpoint(list_revocations))
    router.add_get("/admin/audit", _endpoint(export_audit, "export_audit"))
    return moderator
