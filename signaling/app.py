"""The HTTPS application: demo page, WebSocket signaling, WHIP/WHEP, health."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

from aiohttp import web

from sfu.control import (
    FilesDeleted,
    MediaService,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    TrackPublished,
    TrackUnpublished,
)
from signaling import admin, whip
from signaling.audit import AuditLog
from signaling.context import AUDIT, GUARD, KEYS, MEDIA, ROOMS, client_address
from signaling.ratelimit import SignalingLimits, SourceGuard
from signaling.rooms import RoomSettingsFile
from signaling.tokens import SigningKeys
from signaling.ws import handle_websocket

STATIC_DIR = Path(__file__).parent / "static"
READY: web.AppKey[bool] = web.AppKey("ready", bool)

# The page loads only its own scripts; media and signaling go to this origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self' wss:; media-src 'self' blob: mediastream:; "
        "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def _security_headers(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    response = await handler(request)
    for key, value in _PAGE_HEADERS.items():
        response.headers.setdefault(key, value)
    response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


# Paths whose requests cost real work (token checks, SDP, sessions): rate-limited per
# source IP. The page, its scripts and /healthz are not.
_GUARDED_PREFIXES = ("/ws", "/whip/", "/whep/", "/resource/", "/admin/")


@web.middleware
async def _rate_limit(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    if request.method != "OPTIONS" and request.path.startswith(_GUARDED_PREFIXES):
        wait_s = request.app[GUARD].check_request(client_address(request), time.monotonic())
        if wait_s:
            return web.Response(
                status=429,
                text="rate_limited: too many requests from this address; retry later\n",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
    return await handler(request)


def audit_trip(audit: AuditLog, limit: str, source: str, retry_after_s: float) -> None:
    audit.record("rate_limit", limit=limit, remote=source, retry_after_s=round(retry_after_s, 3))


def audit_room_event(audit: AuditLog, room_key: str, event: RoomEvent) -> None:
    # Signaling names media-plane rooms "tenant/room" (AccessToken.room_key).
    tenant, _, room = room_key.partition("/")
    if isinstance(event, ParticipantJoined):
        audit.record("join", event.participant.identity, room, tenant=tenant)
    elif isinstance(event, ParticipantLeft):
        audit.record("leave", event.identity, room, tenant=tenant, reason=event.reason)
    elif isinstance(event, TrackPublished):
        track = event.track
        audit.record(
            "publish", track.identity, room, tenant=tenant, track_id=track.track_id,
            kind=track.kind,
        )  # fmt: skip
    elif isinstance(event, TrackUnpublished):
        audit.record("unpublish", event.identity, room, tenant=tenant, track_id=event.track_id)
    elif isinstance(event, FilesDeleted):
        files = list(event.files)
        audit.record("files_deleted", "sfu", room, tenant=tenant, reason=event.reason, files=files)


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _healthz(request: web.Request) -> web.Response:
    if not request.app[READY]:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ok", **request.app[MEDIA].stats()})


def create_app(
    media: MediaService,
    keys: SigningKeys,
    rooms: RoomSettingsFile,
    audit: AuditLog,
    limits: SignalingLimits | None = None,
) -> web.Application:
    app = web.Application(middlewares=[_security_headers, _rate_limit], client_max_size=256 * 1024)
    app[MEDIA] = media
    app[KEYS] = keys
    app[ROOMS] = rooms
    app[AUDIT] = audit
    app[GUARD] = SourceGuard(limits or SignalingLimits(), partial(audit_trip, audit))
    media.event_observer = partial(audit_room_event, audit)
    app[READY] = False

    async def on_startup(app: web.Application) -> None:
        await media.start()
        audit.record("server_start", "sfu", media_port=media.media_port, data_port=media.data_port)
        app[READY] = True

    async def on_cleanup(app: web.Application) -> None:
        app[READY] = False
        await media.stop()
        audit.record("server_stop", "sfu")
        audit.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/ws", handle_websocket)
    app.router.add_static("/static/", STATIC_DIR)
    whip.add_routes(app)
    # The revocation list lives in the data directory, beside the audit log's.
    admin.setup(app, audit.paths.database.parent.parent)
    return app
