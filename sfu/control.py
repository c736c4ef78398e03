"""The typed command surface of the media plane: what signaling/ may ask of it.

signaling/ imports this module and nothing deeper in sfu/.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sfu.io.datalink import DataLink
from sfu.io.datapath import DatapathUnavailable
from sfu.io.filestore import FileStore
from sfu.io.udp import MediaPort
from sfu.routing.connection_stats import (
    ConnectionStats,
    IceEndpoint,
    PublishedTrackStats,
    ReceivedTrackStats,
    TransportStats,
    describe_connection,
)
from sfu.routing.datachannel import Authorizer, FileLimits, Reporter
from sfu.routing.room import Room
from sfu.routing.session import MediaAddress, Session, SessionPolicy, media_class, parse_offer
from sfu.routing.stats import (
    DROP_REASONS,
    SRTP_ERRORS,
    HistogramSnapshot,
    MetricsSnapshot,
    snapshot_histogram,
)
from sfu.routing.transport import PEER_CLOSED, Transport
from sfu.routing.types import (
    FilesDeleted,
    MediaError,
    MidIntent,
    NegotiationResult,
    ParticipantInfo,
    ParticipantJoined,
    ParticipantLeft,
    RoomEvent,
    SessionClosed,
    TrackInfo,
    TrackPublished,
    TrackUnpublished,
)

__all__ = [
    "Authorizer",
    "ConnectionStats",
    "DatapathUnavailable",
    "FileLimits",
    "FilesDeleted",
    "HistogramSnapshot",
    "IceEndpoint",
    "MetricsSnapshot",
    "MediaError",
    "MediaService",
    "MidIntent",
    "NegotiationResult",
    "OfferedSection",
    "ParticipantInfo",
    "ParticipantJoined",
    "ParticipantLeft",
    "PublishedTrackStats",
    "ReceivedTrackStats",
    "Reporter",
    "RoomEvent",
    "SessionClosed",
    "SessionPolicy",
    "TrackInfo",
    "TrackPublished",
    "TrackState",
    "TrackUnpublished",
    "TransportStats",
]

# What a mute (and a publish grant) names: audio, camera video, screen share.
MEDIA_CLASSES = ("audio", "video", "screen")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OfferedSection:
    """What one m-section of an offer asks for: enough for signaling to authorize it."""

    mid: str
    kind: str  # "audio" | "video" | "application"
    direction: str  # "sendrecv" | "sendonly" | "recvonly" | "inactive"
    active: bool  # False for a stopped (port 0) m-section

    @property
    def sending(self) -> bool:
        """The client sends media here: it publishes a track."""
        return self.active and self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        """The client only receives here: it subscribes."""
        return self.active and self.direction == "recvonly"


@dataclass(frozen=True, slots=True)
class TrackState:
    """A published track as moderators see it: what it carries and whether it flows."""

    track_id: str
    kind: str  # "audio" | "video"
    media_class: str  # "audio" | "video" | "screen"
    label: str
    muted: bool

    def to_json(self) -> dict[str, object]:
        return {
            "track_id": self.track_id,
            "kind": self.kind,
            "source": self.media_class,
            "label": self.label,
            "muted": self.muted,
        }


def _prefixed(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    """The counters named ``prefix + label``, by label."""
    return {k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)}


def describe_offer(offer: str) -> list[OfferedSection]:
    """The m-sections of a valid offer (MediaError "bad_sdp" for an invalid one)."""
    parsed = parse_offer(offer)
    return [
        OfferedSection(
            section.mid or str(index),
            section.kind,
            section.direction,
            section.port != 0 or section.bundle_only,
        )
        for index, section in enumerate(parsed.media)
    ]


class MediaService:
    """Rooms and sessions on one media port."""

    def __init__(
        self,
        bind_host: str,
        media_port: int,
        announced_ip: str,
        silence_timeout_s: float = 30.0,
        datapath: str = "auto",
        data_channels: str = "inline",
        data_port: int = 0,
        files_dir: Path | None = None,
        files_budget: int = 1 << 30,
        data_cpus: str = "",
    ) -> None:
        """``data_channels``: "process" serves them from a process of their own on
        ``data_port`` (sfu/io/datalink.py), "inline" on the media port."""
        if data_channels not in ("inline", "process"):
            raise ValueError(f"data_channels must be inline or process, not {data_channels!r}")
        self.media = MediaPort(bind_host, media_port, silence_timeout_s, datapath)
        # Files rooms keep for later members (rooms.toml keep_files), under files_dir.
        self.file_store: FileStore | None = None
        self.data_link: DataLink | None = None
        if data_channels == "process":
            self.data_link = DataLink(
                bind_host, data_port, silence_timeout_s, files_dir=files_dir,
                files_budget=files_budget, cpus=data_cpus,
            )  # fmt: skip
            self.data_link.on_room_event = self._observe
        elif files_dir is not None:
            self.file_store = FileStore(files_dir, files_budget)
        self.announced_ip = announced_ip
        self.rooms: dict[str, Room] = {}
        self.sessions: dict[str, Session] = {}
        # Sees every room event (joins, leaves, tracks); signaling audits them.
        self.event_observer: Callable[[str, RoomEvent], None] | None = None
        # Told the id of every session that ends, however it ends.
        self.session_observer: Callable[[str], None] | None = None
        self.media.worker.on_transport_closed = self._on_transport_closed

    async def start(self) -> None:
        await self.media.start()
        if self.data_link is not None:
            await self.data_link.start()
            self.data_link.on_closed = self._on_media_ended
            self.media.worker.data_host = self.data_link

    async def stop(self) -> None:
        for session in list(self.sessions.values()):
            self.close_session(session.session_id, "server shutting down")
        if self.data_link is not None:
            await self.data_link.stop()
        if self.file_store is not None:
            self.file_store.close()
        await self.media.stop()

    @property
    def data_port(self) -> int:
        """The UDP port of the data channels (the media port when they run inline)."""
        return self.data_link.port if self.data_link is not None else self.media.port

    @property
    def media_port(self) -> int:
        return self.media.port

    def open_session(
        self,
        room: str,
        identity: str,
        name: str,
        policy: SessionPolicy,
        listener: Callable[[RoomEvent], None],
    ) -> Session:
        """Create a session in a room (the room is created on first use).

        An announced session replaces an earlier one with the same identity: a
        reconnecting client must not leave a ghost behind.
        """
        room_obj = self.rooms.get(room)
        if room_obj is None:
            room_obj = self.rooms[room] = Room(room, self._observe)
            room_obj.data.kept.store = self.file_store
        if policy.announce:
            previous = room_obj.find_member(identity)
            if previous is not None:
                previous.notify(SessionClosed("replaced by a new session of the same identity"))
                self.close_session(previous.session_id, "replaced")
        session = Session(
            self.media.worker,
            room_obj,
            identity,
            name,
            policy,
            MediaAddress(self.announced_ip, self.media.port),
            listener,
        )
        self.sessions[session.session_id] = session
        room_obj.join(session)
        log.info(
            "session opened room=%s identity=%s session=%s", room, identity, session.session_id
        )
        return session

    @staticmethod
    def check_offer(offer: str) -> None:
        """Refuse a malformed offer before any session exists (MediaError "bad_sdp")."""
        parse_offer(offer)

    def _observe(self, room: str, event: RoomEvent) -> None:
        if self.event_observer is not None:
            try:
                self.event_observer(room, event)
            except Exception:
                log.exception("room event observer failed")

    def set_track_limits(self, pps: dict[str, float], bps: dict[str, float]) -> None:
        """Caps for every track published from now on, by kind: packets/s and bits/s."""
        self.media.worker.track_pps.update(pps)
        self.media.worker.track_bps.update(bps)

    def negotiate(
        self,
        session_id: str,
        offer: str,
        intents: dict[str, MidIntent],
        refused: Mapping[str, str] | None = None,
    ) -> NegotiationResult:
        """Apply an offer (see Session.negotiate for ``refused``)."""
        session = self.sessions.get(session_id)
        if session is None:
            raise MediaError("not_found", "no such session")
        return session.negotiate(offer, intents, time.monotonic(), refused)

    def participants(self, room: str, exclude_session: str | None = None) -> list[ParticipantInfo]:
        room_obj = self.rooms.get(room)
        if room_obj is None:
            return []
        exclude = self.sessions.get(exclude_session) if exclude_session else None
        return room_obj.participants(exclude)

    def close_session(self, session_id: str, reason: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        session.close(reason, time.monotonic())
        log.info("session closed session=%s reason=%s", session_id, reason)
        if session.room.empty:
            self.rooms.pop(session.room.name, None)
        if self.session_observer is not None:
            try:
                self.session_observer(session_id)
            except Exception:
                log.exception("session observer failed")

    # -- moderation: each call takes effect before it returns ------------------

    def end_session(self, session_id: str, reason: str) -> None:
        """End a session as the server: it is told (SessionClosed), then closed."""
        session = self.sessions.get(session_id)
        if session is None:
            return
        session.notify(SessionClosed(reason))
        self.close_session(session_id, reason)

    def set_muted(
        self, session_id: str, media_class: str, muted: bool, by: str = "signaling"
    ) -> list[TrackInfo]:
        """Stop (or resume) forwarding a session's tracks of one class ("audio",
        "video" = camera, "screen"): the next packet is dropped. Tracks it publishes
        later start in that state. Each caller ``by`` (moderation, policy) mutes on
        its own; a track flows when none does. Returns the tracks whose state changed."""
        if media_class not in MEDIA_CLASSES:
            raise ValueError(f"unknown media class {media_class!r}")
        session = self.sessions.get(session_id)
        if session is None:
            return []
        return [p.info for p in session.set_muted(media_class, muted, time.monotonic(), by)]

    def set_receiving(self, session_id: str, allowed: bool, by: str = "signaling") -> None:
        """Pause (or resume, from a keyframe) everything a session receives; paused
        while any caller ``by`` blocks it."""
        session = self.sessions.get(session_id)
        if session is not None:
            session.set_receiving(allowed, time.monotonic(), by)

    def set_data_access(self, session_id: str, authorize: Authorizer, report: Reporter) -> None:
        """Who decides what a session may do on its control and file channels:
        ``authorize(action, counterparties)`` is asked for each control message and
        each file transfer (again while it runs), ``report`` hears how transfers end."""
        session = self.sessions.get(session_id)
        if session is not None:
            session.data_authorize = authorize
            session.data_report = report

    def notice(self, room: str, text: str) -> None:
        """A server notice on every member's control channel (moderation, for one)."""
        room_obj = self.rooms.get(room)
        if room_obj is not None:
            now = time.monotonic()
            room_obj.data.notice(text)
            self.media.worker.flush_data(now)
            if self.data_link is not None:
                self.data_link.notice(room, text)

    def set_file_limits(self, room: str, limits: FileLimits) -> None:
        """The largest file and the media types a room's file channel accepts."""
        room_obj = self.rooms.get(room)
        if room_obj is not None:
            room_obj.data.limits = limits
            if self.data_link is not None:
                self.data_link.set_limits(room, limits)

    def session_tracks(self, session_id: str) -> list[TrackState]:
        """The tracks a session publishes, with their mute state."""
        session = self.sessions.get(session_id)
        if session is None:
            return []
        return [
            TrackState(p.track_id, p.kind, media_class(p), p.info.label, p.muted)
            for p in session.producers.values()
        ]

    def connection_stats(self, session_id: str) -> ConnectionStats:
        """What the server knows of one session's connection: its transports (ICE
        pair, DTLS, SRTP profile) and per-track counters. Read-only and cheap; the
        caller bounds how often it asks. MediaError "not_found" for an unknown session."""
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            raise MediaError("not_found", "no such session")
        return describe_connection(session, time.monotonic())

    def _on_transport_closed(self, transport: Transport, reason: str) -> None:
        self._on_media_ended(transport.owner_id, reason)

    def _on_media_ended(self, session_id: str, reason: str) -> None:
        session = self.sessions.get(session_id)
        if session is None or session.closed or reason == "m-section closed":
            return
        # A dead transport (timeout, DTLS failure, fingerprint mismatch) ends the session.
        level = logging.INFO if reason == PEER_CLOSED else logging.WARNING
        log.log(level, "media transport ended session=%s reason=%s", session.session_id, reason)
        session.notify(SessionClosed(reason))
        self.close_session(session.session_id, reason)

    def metrics(self) -> MetricsSnapshot:
        """A consistent read of every media-plane counter (cheap; call per scrape)."""
        worker = self.media.worker
        counters = worker.counters.copy()
        counters.update(worker.datapath.counters)  # what the native receive path counted
        if self.data_link is not None:
            counters.update(self.data_link.counters)  # adds: DTLS, data channels
        # The datapath counts what it drops while sending (native: in C).
        errors = getattr(worker.datapath, "errors", {})
        counters["srtp_protect_failed"] += errors.get("protect", 0)
        counters["send_failed"] += errors.get("send", 0) + errors.get("oversized", 0)
        return MetricsSnapshot(
            rooms=len(self.rooms),
            participants=sum(len(room.members()) for room in self.rooms.values()),
            sessions=len(self.sessions),
            transports=len(worker.by_ufrag),
            forwarded_packets=dict(worker.forwarded_packets),
            forwarded_bytes=dict(worker.forwarded_bytes),
            # Every reason from zero, so that rate() sees the first increase.
            dropped_packets={label: counters[name] for name, label in DROP_REASONS.items()},
            srtp_errors={label: counters[name] for name, label in SRTP_ERRORS.items()},
            dtls_handshakes={"ok": counters["dtls_ok"], "failed": counters["dtls_failed"]},
            ice_consent_failures=counters["consent_failures"],
            datagrams_in=counters["datagrams_in"],
            datagrams_out=counters["datagrams_out"] + self._native_datagrams_out(),
            forward_latency=snapshot_histogram(worker.forward_latency),
            receive_queue=snapshot_histogram(worker.receive_queue),
            data_messages=_prefixed(counters, "data_messages:"),
            data_sent_bytes=_prefixed(counters, "data_sent_bytes:"),
            data_refused=_prefixed(counters, "data_refused:"),
            file_transfers=_prefixed(counters, "file_transfers:"),
        )

    def _native_datagrams_out(self) -> int:
        sent: int = getattr(self.media.worker.datapath, "datagrams_sent", 0)
        return sent

    @property
    def datapath(self) -> str:
        return self.media.worker.datapath.name

    def stats(self) -> dict[str, int]:
        counters = self.media.worker.counters.copy()
        counters.update(self.media.worker.datapath.counters)
        if self.data_link is not None:
            counters.update(self.data_link.counters)
        counters["datagrams_out"] = counters.get("datagrams_out", 0) + self._native_datagrams_out()
        counters["rooms"] = len(self.rooms)
        counters["sessions"] = len(self.sessions)
        counters["transports"] = len(self.media.worker.by_ufrag)
        return counters
