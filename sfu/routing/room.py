"""A Room (mediasoup's Router): the sessions and tracks that can see each other."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sfu.routing.datachannel import DataRelay
from sfu.routing.types import (
    FilesDeleted,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    TrackPublished,
    TrackUnpublished,
)

if TYPE_CHECKING:
    from sfu.routing.producer import Producer
    from sfu.routing.session import Session


class Room:
    """Sessions and published tracks of one room; tells members what changes."""

    def __init__(self, name: str, observer: Callable[[str, RoomEvent], None] | None = None) -> None:
        self.name = name
        self.observer = observer  # sees every event of the room (audit)
        self.sessions: dict[str, Session] = {}
        self.producers: dict[str, Producer] = {}
        self.data = DataRelay(name)  # control and file channels
        self.data.kept.report_room = self._report_files

    def _report_files(self, event: str, detail: dict[str, Any]) -> None:
        if self.observer is not None and event == "files_deleted":
            self.observer(self.name, FilesDeleted(str(detail["reason"]), tuple(detail["files"])))

    def members(self) -> list[Session]:
        """Sessions that others see as participants (WHEP viewers are not announced)."""
        return [s for s in self.sessions.values() if s.announce]

    def find_member(self, identity: str) -> Session | None:
        for session in self.members():
            if session.identity == identity:
                return session
        return None

    def participants(self, exclude: Session | None = None) -> list[ParticipantInfo]:
        return [s.participant_info() for s in self.members() if s is not exclude]

    def broadcast(self, event: RoomEvent, exclude: Session | None = None) -> None:
        if self.observer is not None:
            self.observer(self.name, event)
        for session in list(self.sessions.values()):
            if session is not exclude and not session.closed:
                session.notify(event)

    def join(self, session: Session) -> None:
        self.sessions[session.session_id] = session
        if session.announce:
            self.broadcast(ParticipantJoined(session.participant_info()), exclude=session)

    def leave(self, session: Session, reason: str) -> None:
        if self.sessions.pop(session.session_id, None) is None:
            return
        if session.announce:
            self.broadcast(ParticipantLeft(session.identity, reason), exclude=session)

    def publish(self, producer: Producer, session: Session, now: float) -> None:
        self.producers[producer.track_id] = producer
        self.broadcast(TrackPublished(producer.info), exclude=session)
        for other in list(self.sessions.values()):
            if other is not session:
                other.on_source_available(producer, now)

    def unpublish(self, producer: Producer, session: Session, now: float) -> None:
        if self.producers.pop(producer.track_id, None) is None:
            return
        followers = [c.transport.owner_id for c in producer.consumers]
        producer.close()
        self.broadcast(TrackUnpublished(producer.track_id, session.identity), exclude=session)
        for other in list(self.sessions.values()):
            if other.session_id in followers:
                other.on_source_gone(now)

    def pick_source(self, kind: str, identity: str | None, codec_name: str) -> Producer | None:
        """The newest matching track: a WHEP viewer follows whoever publishes last."""
        for producer in reversed(list(self.producers.values())):
            if (
                producer.kind == kind
                and producer.codec.name == codec_name
                and (identity is None or producer.info.identity == identity)
            ):
                return producer
        return None

    @property
    def empty(self) -> bool:
        return not self.sessions
