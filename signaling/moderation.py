"""Live moderation and revocation: grant changes, mutes, removals, room closes and
revoked tokens take effect on live sessions (WebSocket, WHIP, WHEP) before the call
returns, are audited, and WebSocket clients are told.

The media plane does the stopping (sfu.control.MediaService.set_muted / set_receiving /
end_session); this module decides what to stop from the live registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sfu.control import MEDIA_CLASSES, MediaService, TrackInfo
from signaling.audit import AuditLog
from signaling.live import LiveRegistry, LiveSession
from signaling.revocations import RELOAD_INTERVAL_S, Revocation, RevocationStore
from signaling.tokens import AccessToken

__all__ = ["GRANT_OF_CLASS", "MODERATION", "Moderator", "NotFound"]

log = logging.getLogger(__name__)

# The publish grant each media class needs.
GRANT_OF_CLASS = {"audio": "publish:audio", "video": "publish:video", "screen": "publish:screen"}
assert tuple(GRANT_OF_CLASS) == MEDIA_CLASSES
REMOVED = "removed by a moderator"
ROOM_CLOSED = "room closed by a moderator"
REVOKED = "token revoked"
# Moderation's own mutes in the media plane: the policy engine's are separate.
BY = "moderation"


class NotFound(LookupError):
    """No such room or participant in the caller's tenant."""


class Moderator:
    """Applies moderators' changes and revocations to live sessions."""

    def __init__(self, media: MediaService, audit: AuditLog, revocations: RevocationStore) -> None:
        self.media = media
        self.audit = audit
        self.revocations = revocations
        self.registry = LiveRegistry()
        self._watcher: asyncio.Task[None] | None = None
        media.session_observer = self._on_session_closed

    # --- sessions come and go ---

    def effective_grants(self, access: AccessToken) -> frozenset[str]:
        """The token's grants, unless a moderator replaced this participant's."""
        override = self.registry.override(access.tenant, access.room, access.identity)
        if override is not None and override.grants is not None:
            return override.grants
        return access.grants

    def register(
        self,
        session_id: str,
        channel: str,
        access: AccessToken,
        end: Callable[[str, str], None],
        send: Callable[[dict[str, Any]], None] | None = None,
    ) -> LiveSession:
        """Track a new session and apply what moderators decided for its identity."""
        live = LiveSession(
            session_id=session_id,
            channel=channel,
            tenant=access.tenant,
            room=access.room,
            identity=access.identity,
            name=access.name,
            token_id=access.token_id,
            issued_at=access.issued_at,
            expires_at=access.expires_at,
            token_grants=access.grants,
            grants=self.effective_grants(access),
            end=end,
            send=send,
        )
        self.registry.add(live)
        self._apply(live)
        return live

    def _on_session_closed(self, session_id: str) -> None:
        self.registry.remove(session_id)

    def _apply(self, live: LiveSession) -> list[tuple[TrackInfo, bool]]:
        """Make the media plane match the session's grants and mutes; tell the room
        about tracks that changed."""
        override = self.registry.override(live.tenant, live.room, live.identity)
        muted_by_moderator = override.muted if override is not None else set()
        changed: list[tuple[TrackInfo, bool]] = []
        for media_class, grant in GRANT_OF_CLASS.items():
            muted = media_class in muted_by_moderator or grant not in live.grants
            for track in self.media.set_muted(live.session_id, media_class, muted, BY):
                changed.append((track, muted))
        self.media.set_receiving(live.session_id, "subscribe" in live.grants, BY)
        for track, muted in changed:
            self._tell_room(
                live.tenant,
                live.room,
                {
                    "type": "track_muted",
                    "track_id": track.track_id,
                    "identity": track.identity,
                    "kind": track.kind,
                    "muted": muted,
                },
            )
        return changed

    def _tell_room(self, tenant: str, room: str, message: dict[str, Any]) -> None:
        for session in self.registry.in_room(tenant, room):
            if session.send is not None:
                session.send(message)

    def _participant(self, tenant: str, room: str, identity: str) -> list[LiveSession]:
        sessions = self.registry.of_participant(tenant, room, identity)
        if not sessions:
            raise NotFound(f"no participant {identity[:128]!r} in room {room[:128]!r}")
        return sessions

    # --- what moderators do ---

    def set_grants(
        self, tenant: str, room: str, identity: str, grants: frozenset[str], actor: str
    ) -> list[LiveSession]:
        """Replace a participant's grants on every session it has, and on later ones."""
        sessions = self._participant(tenant, room, identity)
        previous = sorted(sessions[0].grants)
        override = self.registry.ensure_override(
            tenant, room, identity, max(s.expires_at for s in sessions)
        )
        override.grants = grants
        for session in sessions:
            session.grants = grants
            self._apply(session)
        for session in sessions:
            if session.send is not None:
                session.send(
                    {
                        "type": "grants_changed",
                        "grants": sorted(grants),
                        "can_publish": any(g.startswith("publish:") for g in grants),
                    }
                )
        self.media.notice(f"{tenant}/{room}", f"a moderator changed what {identity} may do")
        self.audit.record(
            "admin_grants", actor, room, tenant=tenant, target=identity,
            grants=sorted(grants), previous=previous,
        )  # fmt: skip
        return sessions

    def mute(
        self, tenant: str, room: str, identity: str, media_class: str, muted: bool, actor: str
    ) -> list[LiveSession]:
        """Mute (or unmute) a participant's audio, camera or screen share. Unmuting
        does not bring back a track whose publish grant is missing."""
        sessions = self._participant(tenant, room, identity)
        override = self.registry.ensure_override(
            tenant, room, identity, max(s.expires_at for s in sessions)
        )
        if muted:
            override.muted.add(media_class)
        else:
            override.muted.discard(media_class)
        for session in sessions:
            self._apply(session)
        what = "muted" if muted else "unmuted"
        self.media.notice(f"{tenant}/{room}", f"a moderator {what} {identity}'s {media_class}")
        self.audit.record(
            "admin_mute", actor, room, tenant=tenant, target=identity, media_class=media_class,
            muted=muted,
        )  # fmt: skip
        return sessions

    def remove(self, tenant: str, room: str, identity: str, actor: str) -> int:
        """End every session of a participant; the room is told it left."""
        sessions = self._participant(tenant, room, identity)
        for session in sessions:
            session.end("session_closed", REMOVED)
        self.media.notice(f"{tenant}/{room}", f"a moderator removed {identity}")
        self.audit.record(
            "admin_remove", actor, room, tenant=tenant, target=identity, sessions=len(sessions)
        )
        return len(sessions)

    def close_room(self, tenant: str, room: str, actor: str) -> int:
        """End every session in the room and forget its participants' overrides."""
        sessions = self.registry.in_room(tenant, room)
        if not sessions:
            raise NotFound(f"no room {room[:128]!r}")
        self.media.notice(f"{tenant}/{room}", "a moderator closed the room")
        for session in sessions:
            session.end("session_closed", ROOM_CLOSED)
        self.registry.clear_room(tenant, room)
        self.audit.record("admin_close_room", actor, room, tenant=tenant, sessions=len(sessions))
        return len(sessions)

    def revoke(self, entry: Revocation) -> int:
        """Persist a revocation and end the live sessions it covers (audited)."""
        self.revocations.add(entry)
        closed = self.apply_revocations()
        self.audit.record(
            "admin_revoke", entry.actor, "", tenant=entry.tenant, jti=entry.jti,
            target=entry.identity, expires_at=entry.expires_at, sessions=closed,
        )  # fmt: skip
        return closed

    def apply_revocations(self) -> int:
        """End every live session whose token is now revoked; returns how many."""
        closed = 0
        for session in list(self.registry.sessions.values()):
            entry = self.revocations.check(
                session.tenant, session.token_id, session.identity, session.issued_at
            )
            if entry is None:
                continue
            closed += 1
            self.audit.record(
                "session_revoked", session.identity, session.room, tenant=session.tenant,
                channel=session.channel, token_id=session.token_id,
            )  # fmt: skip
            session.end("unauthorized", REVOKED)
        return closed

    # --- `sfu revoke` against a running server ---

    def start(self) -> None:
        """Watch the revocation file: entries written by `sfu revoke` apply within 1 s."""
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                if not self.revocations.changed():
                    continue  # the usual case: no need to list every entry in force
                known = set(self.revocations.entries())
                if self.revocations.refresh():
                    # Written by `sfu revoke`, which cannot append to the audit chain.
                    for entry in set(self.revocations.entries()) - known:
                        self.audit.record(
                            "admin_revoke", entry.actor, "", tenant=entry.tenant,
                            jti=entry.jti, target=entry.identity, expires_at=entry.expires_at,
                            source="file",
                        )  # fmt: skip
                    self.apply_revocations()
            except Exception:
                log.exception("applying revocations failed")


MODERATION: web.AppKey[Moderator] = web.AppKey("moderation", Moderator)
