"""A Session is one client's media in a room: its transports, producers and consumers.

Negotiation is always offer (client) -> answer (SFU). Each m-section gets its own
transport unless the client bundles and the room allows it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sfu.routing.consumer import Consumer
from sfu.routing.datachannel import (
    MAX_MESSAGE_SIZE,
    Authorizer,
    DataEndpoint,
    Reporter,
    deny_all,
    report_nothing,
)
from sfu.routing.datahost import DataHostLink, RemoteData
from sfu.routing.producer import Producer
from sfu.routing.room import Room
from sfu.routing.transport import Transport
from sfu.routing.types import (
    MediaError,
    MidIntent,
    NegotiationResult,
    ParticipantInfo,
    RoomEvent,
    TrackInfo,
)
from sfu.routing.worker import Worker
from sfu.wire.sdp import (
    AnswerMedia,
    Codec,
    MediaSection,
    SdpError,
    SessionDescription,
    build_answer,
    parse_sdp,
)

log = logging.getLogger(__name__)

MID_EXTENSION = "urn:ietf:params:rtp-hdrext:sdes:mid"
VIDEO_CODEC_PREFERENCE = ("VP8", "H264", "VP9")
_FEEDBACK = {"audio": ("nack",), "video": ("nack", "nack pli", "ccm fir")}


@dataclass(frozen=True, slots=True)
class MediaAddress:
    """Where clients reach the media port: the candidate in every answer."""

    ip: str
    port: int

    def candidate(self) -> str:
        return f"1 1 udp 2130706431 {self.ip} {self.port} typ host"


@dataclass(slots=True)
class SessionPolicy:
    can_publish: bool
    can_subscribe: bool
    allow_bundle: bool = True
    # Browsers on our own page get one transport per m-section unless they insist on BUNDLE.
    prefer_bundle: bool = False
    announce: bool = True
    follow_identity: str | None = None  # WHEP: whose tracks to follow (None: anyone)
    follow: bool = False
    # Control and file channels (WebSocket participants; not WHIP/WHEP).
    data_channels: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def choose_publish_codec(section: MediaSection) -> Codec | None:
    codecs = section.codecs()
    if section.kind == "audio":
        for codec in codecs:
            if codec.name == "OPUS" and codec.clock_rate == 48000:
                return codec
        return None
    for name in VIDEO_CODEC_PREFERENCE:
        matches = [c for c in codecs if c.name == name and c.clock_rate == 90000]
        if name == "H264":
            matches = [c for c in matches if c.fmtp_params().get("packetization-mode") == "1"]
        if matches:
            return matches[0]
    return None


def match_codec(source: Codec, offered: list[Codec]) -> Codec | None:
    """The subscriber's payload format that carries the source's codec unchanged."""
    candidates = [c for c in offered if c.name == source.name and c.clock_rate == source.clock_rate]
    if source.name == "H264":
        src = source.fmtp_params()
        mode = src.get("packetization-mode", "0")
        profile = src.get("profile-level-id", "42e01f")[:2].lower()
        candidates = [
            c
            for c in candidates
            if c.fmtp_params().get("packetization-mode", "0") == mode
            and c.fmtp_params().get("profile-level-id", "42e01f")[:2].lower() == profile
        ]
    return candidates[0] if candidates else None


def parse_offer(text: str) -> SessionDescription:
    """Parse and validate an offer; MediaError("bad_sdp") says what is wrong."""
    try:
        offer = parse_sdp(text)
    except SdpError as exc:
        raise MediaError("bad_sdp", str(exc)) from exc
    if not offer.media:
        raise MediaError("bad_sdp", "offer has no m= sections")
    validate_offer(offer)
    return offer


def validate_offer(offer: SessionDescription) -> None:
    """Find everything that makes an offer unusable before any state changes, so a
    refused offer leaves the session (or the room) as it was."""
    mids: set[str] = set()
    for index, section in enumerate(offer.media):
        where = f"m-section {index} ({section.kind})"
        mid = section.mid or str(index)
        if mid in mids:
            raise MediaError("bad_sdp", f"{where}: a=mid:{mid} appears twice")
        mids.add(mid)
        if section.port == 0 and not section.bundle_only:
            continue
        if section.kind != "application":
            try:
                section.codecs()
                section.ssrcs()
                section.extmaps()
            except SdpError as exc:
                raise MediaError("bad_sdp", f"{where}: {exc}") from exc
        if section.mid is None:
            raise MediaError("bad_sdp", f"{where} has no a=mid")
        setup = offer.media_attr(section, "setup")
        if setup not in ("actpass", "active"):
            raise MediaError(
                "bad_sdp", f"{where}: a=setup:{setup} unsupported (the SFU is DTLS server)"
            )
        if not offer.media_attr(section, "ice-ufrag") or not offer.media_attr(section, "ice-pwd"):
            raise MediaError("bad_sdp", f"{where} has no ICE credentials")
        if not offer.fingerprints(section):
            raise MediaError("bad_sdp", f"{where} has no a=fingerprint")


def _with_feedback(codec: Codec, kind: str) -> Codec:
    return replace(codec, rtcp_fbs=[fb for fb in codec.rtcp_fbs if fb in _FEEDBACK[kind]])


def media_class(producer: Producer) -> str:
    """What a grant or a mute names: "audio", "video" (camera) or "screen"."""
    if producer.kind == "audio":
        return "audio"
    return "screen" if producer.source == "screen" else "video"


def _new_id() -> str:
    return secrets.token_hex(8)


class Session:
    """One client (WebSocket participant, WHIP publisher or WHEP viewer) in a room."""

    def __init__(
        self,
        worker: Worker,
        room: Room,
        identity: str,
        name: str,
        policy: SessionPolicy,
        address: MediaAddress,
        listener: Callable[[RoomEvent], None],
    ) -> None:
        self.session_id = _new_id()
        self.worker = worker
        self.room = room
        self.identity = identity
        self.name = name
        self.policy = policy
        self.address = address
        self.listener = listener
        self.cname = _new_id()
        self.transports: dict[str, Transport] = {}  # by transport key
        self.transport_of_mid: dict[str, Transport] = {}
        self.producers: dict[str, Producer] = {}  # by mid
        self.consumers: dict[str, Consumer] = {}  # by mid
        self.version = 0
        self.closed = False
        # Who silenced what: media class ("audio", "video", "screen") -> the callers
        # (moderation, policy, ...) that muted it. Muted while any of them does.
        self.muted_by: dict[str, set[str]] = {}
        # Callers that stopped what this session receives; never more than its policy.
        self.receiving_blocked_by: set[str] = set()
        self._may_subscribe = policy.can_subscribe
        self.data: DataEndpoint | None = None
        # The data channels' transport when they run in the data process instead.
        self.remote_data: RemoteData | None = None
        # Signaling's policy for data channels (with counterparties) and its audit.
        self.data_authorize: Authorizer = deny_all
        self.data_report: Reporter = report_nothing

    @property
    def announce(self) -> bool:
        return self.policy.announce

    def participant_info(self) -> ParticipantInfo:
        return ParticipantInfo(
            self.identity, self.name, tuple(p.info for p in self.producers.values())
        )

    def notify(self, event: RoomEvent) -> None:
        try:
            self.listener(event)
        except Exception:  # one broken listener must not stop the room's broadcast
            log.exception("session listener failed session=%s", self.session_id)

    # -- negotiation ------------------------------------------------------

    def negotiate(
        self,
        offer_text: str,
        intents: dict[str, MidIntent],
        now: float,
        refused: Mapping[str, str] | None = None,
    ) -> NegotiationResult:
        """Apply a client offer; returns the answer. Raises MediaError for a bad offer.

        ``refused`` maps the mids signaling does not authorize to the reason: those
        m-sections are answered inactive (ending what they carried), with the reason
        as a "forbidden" warning."""
        if self.closed:
            raise MediaError("closed", "session is closed")
        offer = parse_offer(offer_text)
        bundled = self._bundled_mids(offer)
        warnings: list[tuple[str, str]] = []
        answers: list[AnswerMedia] = []
        new_producers: list[Producer] = []
        gone_producers: list[Producer] = []
        seen_mids: set[str] = set()
        for index, section in enumerate(offer.media):
            mid = section.mid or str(index)
            seen_mids.add(mid)
            answers.append(
                self._answer_section(
                    offer,
                    section,
                    mid,
                    bundled,
                    intents.get(mid),
                    (refused or {}).get(mid),
                    now,
                    warnings,
                    new_producers,
                    gone_producers,
                )
            )
        for mid in list(self.producers):
            if mid not in seen_mids:
                gone_producers.append(self._drop_producer(mid))
        for mid in list(self.consumers):
            if mid not in seen_mids:
                self._drop_consumer(mid)
        self._close_unused_transports()
        link = self.remote_data
        if link is not None and not any(a.mid == link.mid and a.port for a in answers):
            self._close_remote_data("m-section closed")
        self.version += 1
        bundle_group = [a.mid for a in answers if a.mid in bundled and a.port] or None
        sdp = build_answer(int(self.session_id[:12], 16), self.version, answers, bundle_group)
        for producer in gone_producers:
            self.room.unpublish(producer, self, now)
        for producer in new_producers:
            self.room.publish(producer, self, now)
        return NegotiationResult(
            sdp,
            published=[p.info for p in self.producers.values()],
            warnings=warnings,
            receiving=len(self.consumers),
            subscriptions=[c.source.track_id for c in self.consumers.values() if c.source],
        )

    def _bundled_mids(self, offer: SessionDescription) -> set[str]:
        bundled: set[str] = set()
        for group in offer.bundle_groups():
            members = [s for s in offer.media if s.mid in group]
            insists = any(s.bundle_only for s in members)
            if not insists and not self.policy.prefer_bundle:
                continue  # answer without BUNDLE: one transport per m-section
            if not self.policy.allow_bundle:
                if insists:
                    raise MediaError(
                        "forbidden", "this room refuses bundled media (a=bundle-only offered)"
                    )
                continue
            bundled.update(group)
        return bundled

    def _transport_for(
        self,
        offer: SessionDescription,
        section: MediaSection,
        mid: str,
        bundled: set[str],
        now: float,
    ) -> Transport:
        existing = self.transport_of_mid.get(mid)
        key = f"m:{mid}"
        if mid in bundled:
            group = next(g for g in offer.bundle_groups() if mid in g)
            shared = [self.transport_of_mid[m] for m in group if m in self.transport_of_mid]
            existing = existing or (shared[0] if shared else None)
            key = f"b:{group[0]}"
        remote_ufrag = offer.media_attr(section, "ice-ufrag") or ""
        fingerprints = offer.fingerprints(section)
        if existing is None or existing.closed:
            existing = self.transports.get(key)
        if existing is None or existing.closed:
            existing = self.worker.create_transport(
                self.session_id, remote_ufrag, fingerprints, now
            )
            self.transports[key] = existing
        elif existing.remote_ufrag != remote_ufrag:
            existing.remote_ufrag = remote_ufrag  # ICE restart by the client
        self.transport_of_mid[mid] = existing
        return existing

    def _answer_section(
        self,
        offer: SessionDescription,
        section: MediaSection,
        mid: str,
        bundled: set[str],
        intent: MidIntent | None,
        refusal: str | None,
        now: float,
        warnings: list[tuple[str, str]],
        new_producers: list[Producer],
        gone_producers: list[Producer],
    ) -> AnswerMedia:
        rejected = AnswerMedia(
            section.kind, mid, section.proto, 0, rejected_formats=section.formats
        )
        if section.kind == "application" and section.port and refusal is None:
            return self._answer_data(offer, section, mid, bundled, now, warnings, rejected)
        unusable = section.kind == "application" or "SAVP" not in section.proto
        if (section.port == 0 and not section.bundle_only) or unusable:
            if mid in self.producers:
                gone_producers.append(self._drop_producer(mid))
            self._drop_consumer(mid)
            self.transport_of_mid.pop(mid, None)
            if section.kind == "application" and refusal is not None:
                warnings.append(("forbidden", refusal))
            return rejected
        transport = self._transport_for(offer, section, mid, bundled, now)
        answer = self._transport_answer(section, mid, transport, cname=self.cname)
        direction = "inactive" if refusal is not None else section.direction
        if refusal is not None:
            warnings.append(("forbidden", refusal))
        if direction in ("sendonly", "sendrecv"):
            self._drop_consumer(mid)
            codec = self._publish(
                section, mid, transport, intent, warnings, new_producers, gone_producers
            )
            if codec is None:
                return self._inactive(answer, section, rejected)
            answer.direction = "recvonly"
            answer.codecs = [_with_feedback(codec, section.kind)]
            ext = {i: uri for i, uri in section.extmaps().items() if uri == MID_EXTENSION}
            answer.extmaps = ext
            if ext:
                transport.mid_extension_id = next(iter(ext))
            return answer
        if mid in self.producers:
            gone_producers.append(self._drop_producer(mid))
        if direction == "recvonly":
            consumer = self._subscribe(section, mid, transport, intent, warnings, now)
            if consumer is not None:
                answer.direction = "sendonly"
                answer.codecs = [consumer.codec]
                answer.ssrc = consumer.ssrc
                # One stream per publisher session, so its audio and video stay in sync.
                stream = consumer.source.transport.owner_id if consumer.source else "sfu"
                answer.msid = (stream, consumer.consumer_id)
                return answer
        else:
            self._drop_consumer(mid)
        return self._inactive(answer, section, rejected)

    def _answer_data(
        self,
        offer: SessionDescription,
        section: MediaSection,
        mid: str,
        bundled: set[str],
        now: float,
        warnings: list[tuple[str, str]],
        rejected: AnswerMedia,
    ) -> AnswerMedia:
        """The data-channel m-section: one SCTP association on its own transport."""
        if not self.policy.data_channels:
            warnings.append(("unsupported", f"mid {mid}: no data channels on this endpoint"))
            return rejected
        if section.proto != "UDP/DTLS/SCTP" or section.formats != ["webrtc-datachannel"]:
            warnings.append(("unsupported", f"mid {mid}: data channels need UDP/DTLS/SCTP"))
            return rejected
        if self.worker.data_host is not None:
            return self._answer_remote_data(
                self.worker.data_host, offer, section, mid, bundled, warnings, rejected
            )
        if self.data is not None and self.data.closed:
            self.data = None
        if self.data is not None and self.transport_of_mid.get(mid) is not self.data.transport:
            warnings.append(("unsupported", f"mid {mid}: one data-channel m-section per session"))
            return rejected
        transport = self._transport_for(offer, section, mid, bundled, now)
        if self.data is None or self.data.transport is not transport:
            if transport.producers_by_mid or transport.consumers_by_ssrc:
                why = f"mid {mid}: data channels need their own transport"
                warnings.append(("unsupported", why))
                return rejected
            remote_port = section.int_attr("sctp-port", 5000)
            # RFC 8841 section 6: no a=max-message-size means 64 KiB; 0 means no limit.
            remote_max = section.int_attr("max-message-size", 65536) or 2**30
            self.data = DataEndpoint(self, transport, remote_port, remote_max)
            transport.attach_data(self.data)
            self.room.data.attach(self.data)
        return self._transport_answer(
            section, mid, transport, sctp_port=5000, max_message_size=MAX_MESSAGE_SIZE
        )

    def _answer_remote_data(
        self,
        host: DataHostLink,
        offer: SessionDescription,
        section: MediaSection,
        mid: str,
        bundled: set[str],
        warnings: list[tuple[str, str]],
        rejected: AnswerMedia,
    ) -> AnswerMedia:
        """The data-channel m-section, served by the data process on its own port."""
        if mid in bundled:
            warnings.append(("unsupported", f"mid {mid}: data channels need their own transport"))
            return rejected
        link = self.remote_data
        if link is not None and link.closed:
            link = self.remote_data = None
        if link is not None and link.mid != mid:
            warnings.append(("unsupported", f"mid {mid}: one data-channel m-section per session"))
            return rejected
        remote_ufrag = offer.media_attr(section, "ice-ufrag") or ""
        if link is None:
            link = self.remote_data = host.open(
                self,
                mid,
                remote_ufrag,
                offer.fingerprints(section),
                section.int_attr("sctp-port", 5000),
                # RFC 8841 section 6: no a=max-message-size means 64 KiB; 0 means no limit.
                section.int_attr("max-message-size", 65536) or 2**30,
            )
        elif link.remote_ufrag != remote_ufrag:
            host.restart(link, remote_ufrag)  # ICE restart by the client
        address = MediaAddress(self.address.ip, host.port)
        return AnswerMedia(
            section.kind,
            mid,
            section.proto,
            address.port,
            ice_ufrag=link.ice.ufrag,
            ice_pwd=link.ice.pwd,
            fingerprint=f"sha-256 {host.fingerprint}",
            address=address.ip,
            candidates=[address.candidate()],
            sctp_port=5000,
            max_message_size=MAX_MESSAGE_SIZE,
        )

    def _close_remote_data(self, reason: str) -> None:
        link, self.remote_data = self.remote_data, None
        host = self.worker.data_host
        if link is not None and not link.closed and host is not None:
            host.close(link, reason)

    def _transport_answer(
        self, section: MediaSection, mid: str, transport: Transport, **extra: Any
    ) -> AnswerMedia:
        """An answer m-section that points at ``transport`` (ICE, DTLS, candidate)."""
        return AnswerMedia(
            section.kind,
            mid,
            section.proto,
            self.address.port,
            ice_ufrag=transport.ice.ufrag,
            ice_pwd=transport.ice.pwd,
            fingerprint=f"sha-256 {self.worker.certificate.fingerprint_sha256}",
            address=self.address.ip,
            candidates=[self.address.candidate()],
            **extra,
        )

    @staticmethod
    def _inactive(answer: AnswerMedia, section: MediaSection, rejected: AnswerMedia) -> AnswerMedia:
        codecs = section.codecs()[:1]
        if not codecs:
            return rejected
        answer.direction = "inactive"
        answer.codecs = [_with_feedback(codecs[0], section.kind)]
        return answer

    def _publish(
        self,
        section: MediaSection,
        mid: str,
        transport: Transport,
        intent: MidIntent | None,
        warnings: list[tuple[str, str]],
        new_producers: list[Producer],
        gone_producers: list[Producer],
    ) -> Codec | None:
        if not self.policy.can_publish:
            warnings.append(("forbidden", f"mid {mid}: this token may not publish"))
            if mid in self.producers:
                gone_producers.append(self._drop_producer(mid))
            return None
        codec = choose_publish_codec(section)
        if codec is None:
            supported = "opus" if section.kind == "audio" else ", ".join(VIDEO_CODEC_PREFERENCE)
            warnings.append(
                ("bad_sdp", f"mid {mid}: no supported {section.kind} codec ({supported})")
            )
            if mid in self.producers:
                gone_producers.append(self._drop_producer(mid))
            return None
        ssrcs = section.ssrcs()
        ssrc = ssrcs[0] if ssrcs else None
        producer = self.producers.get(mid)
        if producer is not None and (
            producer.codec.payload_type != codec.payload_type
            or producer.transport is not transport
            or (ssrc is not None and producer.ssrc not in (None, ssrc))
        ):
            gone_producers.append(self._drop_producer(mid))
            producer = None
        if producer is None:
            label = (intent.publish if intent and intent.publish else section.kind)[:64]
            producer = Producer(
                _new_id(), self.identity, section.kind, label, codec, transport, mid, ssrc
            )
            if section.kind == "video" and intent is not None and intent.source == "screen":
                producer.source = "screen"
            producer.muted = bool(self.muted_by.get(media_class(producer)))
            self.producers[mid] = producer
            transport.producers_by_mid[mid] = producer
            new_producers.append(producer)
        if ssrc is not None and producer.ssrc is None:
            producer.bind_ssrc(ssrc)
        if producer.ssrc is not None:
            transport.bind_producer(producer.ssrc, producer)
        return codec

    def _subscribe(
        self,
        section: MediaSection,
        mid: str,
        transport: Transport,
        intent: MidIntent | None,
        warnings: list[tuple[str, str]],
        now: float,
    ) -> Consumer | None:
        if not self.policy.can_subscribe:
            warnings.append(("forbidden", f"mid {mid}: this token may not subscribe"))
            self._drop_consumer(mid)
            return None
        offered = section.codecs()
        source: Producer | None = None
        codec: Codec | None = None
        if self.policy.follow:
            existing = self.consumers.get(mid)
            if existing is not None and existing.transport is transport:
                return existing
            for name in ("OPUS",) if section.kind == "audio" else VIDEO_CODEC_PREFERENCE:
                codec = next((c for c in offered if c.name == name), None)
                if codec is not None:
                    break
            if codec is None:
                warnings.append(("bad_sdp", f"mid {mid}: no supported {section.kind} codec"))
                return None
            source = self.room.pick_source(section.kind, self.policy.follow_identity, codec.name)
        else:
            track_id = intent.subscribe if intent else None
            if not track_id:
                self._drop_consumer(mid)
                return None
            source = self.room.producers.get(track_id)
            if source is None or source.kind != section.kind:
                warnings.append(
                    ("unknown_track", f"mid {mid}: no {section.kind} track {track_id!r}")
                )
                self._drop_consumer(mid)
                return None
            codec = match_codec(source.codec, offered)
            if codec is None:
                warnings.append(
                    ("codec_mismatch", f"mid {mid}: offer lacks {source.codec.name} for {track_id}")
                )
                self._drop_consumer(mid)
                return None
        codec = _with_feedback(codec, section.kind)
        consumer = self.consumers.get(mid)
        if consumer is None or consumer.transport is not transport:
            self._drop_consumer(mid)
            consumer = Consumer(
                _new_id(),
                transport,
                section.kind,
                codec,
                mid,
                secrets.randbits(32) or 1,
                self.cname,
            )
            self.consumers[mid] = consumer
            transport.consumers_by_ssrc[consumer.ssrc] = consumer
        consumer.codec = codec
        if source is not None:
            consumer.attach(source, now)
        return consumer

    def _drop_producer(self, mid: str) -> Producer:
        producer = self.producers.pop(mid)
        transport = producer.transport
        transport.producers_by_mid.pop(mid, None)
        if producer.ssrc is not None and transport.producers_by_ssrc.get(producer.ssrc) is producer:
            transport.unbind_producer(producer.ssrc)
        return producer

    def _drop_consumer(self, mid: str) -> None:
        consumer = self.consumers.pop(mid, None)
        if consumer is None:
            return
        consumer.close()
        consumer.transport.consumers_by_ssrc.pop(consumer.ssrc, None)

    def _close_unused_transports(self) -> None:
        used = {id(t) for t in self.transport_of_mid.values()}
        for key, transport in list(self.transports.items()):
            if id(transport) not in used:
                del self.transports[key]
                self.worker.close_transport(transport, "m-section closed")

    # -- room events --------------------------------------------------------

    def on_source_available(self, producer: Producer, now: float) -> None:
        """A new track appeared; followers (WHEP) without a source take it."""
        if not self.policy.follow:
            return
        identity = self.policy.follow_identity
        for consumer in self.consumers.values():
            if (
                consumer.source is None
                and consumer.kind == producer.kind
                and consumer.codec.name == producer.codec.name
                and (identity is None or producer.info.identity == identity)
            ):
                consumer.attach(producer, now)

    def on_source_gone(self, now: float) -> None:
        """A followed track ended; pick the next one, keeping numbering continuous."""
        if not self.policy.follow:
            return
        for consumer in self.consumers.values():
            if consumer.source is None:
                source = self.room.pick_source(
                    consumer.kind, self.policy.follow_identity, consumer.codec.name
                )
                if source is not None:
                    consumer.attach(source, now)

    # -- moderation -----------------------------------------------------------

    def set_muted(
        self, what: str, muted: bool, now: float, by: str = "signaling"
    ) -> list[Producer]:
        """Stop (or resume) forwarding this session's tracks of one media class
        ("audio", "video" = camera, "screen"); returns the tracks whose state changed.

        Each caller (``by``) mutes on its own: a track flows only when none of them
        mutes it, so a moderator's mute and a policy's are not undone by the other.
        Takes effect on the next packet. Subscribers stop being synced, so no NACK
        is answered from before the mute, and resume at the next keyframe with their
        own numbering continued.
        """
        owners = self.muted_by.setdefault(what, set())
        if muted:
            owners.add(by)
        else:
            owners.discard(by)
        muted = bool(owners)
        changed: list[Producer] = []
        for producer in self.producers.values():
            if media_class(producer) != what or producer.muted == muted:
                continue
            producer.muted = muted
            if muted:
                for consumer in producer.consumers:
                    consumer.leg.synced = False
            else:
                producer.restart_stream(now)
            changed.append(producer)
        return changed

    def set_receiving(self, allowed: bool, now: float, by: str = "signaling") -> None:
        """Pause (or resume) everything this session receives; a paused session
        subscribes to nothing new either. Paused while any caller (``by``) blocks it;
        never allows more than the session's policy did at the start."""
        if allowed:
            self.receiving_blocked_by.discard(by)
        else:
            self.receiving_blocked_by.add(by)
        allowed = not self.receiving_blocked_by
        self.policy.can_subscribe = self._may_subscribe and allowed
        for consumer in self.consumers.values():
            if consumer.paused != (not allowed):
                consumer.paused = not allowed
                if allowed:
                    consumer.on_transport_ready(now)

    def published_tracks(self) -> list[TrackInfo]:
        return [p.info for p in self.producers.values()]

    def close(self, reason: str, now: float) -> None:
        """Unpublish, stop consuming, close transports (keys wiped), leave the room."""
        if self.closed:
            return
        self.closed = True
        for mid in list(self.producers):
            self.room.unpublish(self._drop_producer(mid), self, now)
        for mid in list(self.consumers):
            self._drop_consumer(mid)
        for transport in list(self.transports.values()):
            self.worker.close_transport(transport, reason)
        self._close_remote_data(reason)
        self.transports.clear()
        self.transport_of_mid.clear()
        self.room.leave(self, reason)
