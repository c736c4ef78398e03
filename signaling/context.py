"""What every signaling handler reaches through the aiohttp application."""

from __future__ import annotations

from aiohttp import web

from sfu.control import MediaService
from signaling.audit import AuditLog
from signaling.ratelimit import SourceGuard
from signaling.rooms import RoomSettingsFile
from signaling.tokens import SigningKeys

MEDIA: web.AppKey[MediaService] = web.AppKey("media", MediaService)
KEYS: web.AppKey[SigningKeys] = web.AppKey("keys", SigningKeys)
ROOMS: web.AppKey[RoomSettingsFile] = web.AppKey("rooms", RoomSettingsFile)
AUDIT: web.AppKey[AuditLog] = web.AppKey("audit", AuditLog)
GUARD: web.AppKey[SourceGuard] = web.AppKey("guard", SourceGuard)


def client_address(request: web.Request) -> str:
    return request.remote or "-"
