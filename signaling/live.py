"""Who is connected now: every WebSocket, WHIP and WHEP session, with its tenant, room,
identity, token id and effective grants; and what moderators changed per participant.

Pure bookkeeping: no media, no I/O. signaling/moderation.py applies changes to the
media plane and tells clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LiveRegistry", "LiveSession", "ParticipantOverride"]

CHANNELS = ("ws", "whip", "whep")


@dataclass(eq=False)
class LiveSession:
    """One connected session as signaling knows it."""

    session_id: str  # the media plane's session id
    channel: str  # "ws" | "whip" | "whep"
    tenant: str
    room: str
    identity: str
    name: str
    token_id: str
    issued_at: float
    expires_at: float
    token_grants: frozenset[str]
    grants: frozenset[str]  # effective: the token's, until a moderator replaces them
    # Ends the session as the server: (error code, reason). The code is the one a
    # WebSocket client gets ("unauthorized" closes with 4401, "session_closed" 4410).
    end: Callable[[str, str], None]
    # Sends a protocol message to a WebSocket client (None for WHIP/WHEP).
    send: Callable[[dict[str, Any]], None] | None = None
    connected_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "channel": self.channel,
            "token_id": self.token_id,
            "grants": sorted(self.grants),
            "connected_at": self.connected_at,
            "expires_at": self.expires_at,
        }


@dataclass
class ParticipantOverride:
    """A moderator's changes to one identity in one room; they also apply to sessions
    the identity opens later, until ``expires_at`` (its tokens' latest expiry) or
    until the room is closed."""

    expires_at: float
    grants: frozenset[str] | None = None
    muted: set[str] = field(default_factory=set)


RoomKey = tuple[str, str]  # (tenant, room)
ParticipantKey = tuple[str, str, str]  # (tenant, room, identity)


class LiveRegistry:
    """Live sessions by id, and per-participant overrides."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.sessions: dict[str, LiveSession] = {}
        self._overrides: dict[ParticipantKey, ParticipantOverride] = {}

    def add(self, session: LiveSession) -> None:
        if session.channel not in CHANNELS:
            raise ValueError(f"unknown channel {session.channel!r}")
        self.sessions[session.session_id] = session

    def remove(self, session_id: str) -> LiveSession | None:
        return self.sessions.pop(session_id, None)

    def get(self, session_id: str) -> LiveSession | None:
        return self.sessions.get(session_id)

    def rooms(self, tenant: str) -> dict[str, list[LiveSession]]:
        """The tenant's rooms that have sessions, each with its sessions."""
        rooms: dict[str, list[LiveSession]] = {}
        for session in self.sessions.values():
            if session.tenant == tenant:
                rooms.setdefault(session.room, []).append(session)
        return rooms

    def in_room(self, tenant: str, room: str) -> list[LiveSession]:
        return [s for s in self.sessions.values() if s.tenant == tenant and s.room == room]

    def of_participant(self, tenant: str, room: str, identity: str) -> list[LiveSession]:
        return [s for s in self.in_room(tenant, room) if s.identity == identity]

    def matching(
        self, tenant: str, *, jti: str | None = None, identity: str | None = None
    ) -> list[LiveSession]:
        """The tenant's sessions using token ``jti`` or belonging to ``identity``."""
        return [
            s
            for s in self.sessions.values()
            if s.tenant == tenant
            and (
                (jti is not None and s.token_id == jti)
                or (identity is not None and s.identity == identity)
            )
        ]

    # --- overrides ---

    def override(self, tenant: str, room: str, identity: str) -> ParticipantOverride | None:
        key = (tenant, room, identity)
        found = self._overrides.get(key)
        if found is not None and found.expires_at <= self._clock():
            del self._overrides[key]
            return None
        return found

    def ensure_override(
        self, tenant: str, room: str, identity: str, expires_at: float
    ) -> ParticipantOverride:
        """The participant's override, created if needed, lasting at least ``expires_at``."""
        found = self.override(tenant, room, identity)
        if found is None:
            found = self._overrides[(tenant, room, identity)] = ParticipantOverride(expires_at)
        found.expires_at = max(found.expires_at, expires_at)
        return found

    def clear_room(self, tenant: str, room: str) -> None:
        for key in [k for k in self._overrides if k[0] == tenant and k[1] == room]:
            del self._overrides[key]
