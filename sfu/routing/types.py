"""Values that cross the boundary between the media plane and its callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MediaError(Exception):
    """An error the caller should report to its client, with a stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """A published track as clients see it."""

    track_id: str
    identity: str
    kind: str  # "audio" | "video"
    label: str

    def to_json(self) -> dict[str, str]:
        return {
            "track_id": self.track_id,
            "identity": self.identity,
            "kind": self.kind,
            "label": self.label,
        }


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    identity: str
    name: str
    tracks: tuple[TrackInfo, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "identity": self.identity,
            "name": self.name,
            "tracks": [t.to_json() for t in self.tracks],
        }


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    identity: str
    reason: str


@dataclass(frozen=True, slots=True)
class TrackPublished:
    track: TrackInfo


@dataclass(frozen=True, slots=True)
class TrackUnpublished:
    track_id: str
    identity: str


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """Sent to the session itself when the media plane ends it (timeout, replaced, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class FilesDeleted:
    """Files the room kept for later members were deleted (for the audit only)."""

    reason: str  # "meeting ended" | "retention"
    files: tuple[dict[str, Any], ...]


RoomEvent = (
    ParticipantJoined
    | ParticipantLeft
    | TrackPublished
    | TrackUnpublished
    | SessionClosed
    | FilesDeleted
)


@dataclass(frozen=True, slots=True)
class MidIntent:
    """What the client means by one m-section: publish with a label, or subscribe to a track."""

    publish: str | None = None
    subscribe: str | None = None
    source: str = "camera"  # what a published video carries: "camera" or "screen"


@dataclass(slots=True)
class NegotiationResult:
    sdp: str
    published: list[TrackInfo] = field(default_factory=list)
    receiving: int = 0  # m-sections on which the client will receive media
    subscriptions: list[str] = field(default_factory=list)  # track ids being received
    # Per m-section problems that did not fail the whole offer: (code, message).
    warnings: list[tuple[str, str]] = field(default_factory=list)
