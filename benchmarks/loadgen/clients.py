"""WHIP publishers and WHEP subscribers built on MediaTransport.

A client POSTs its offer, reads the answer, opens one MediaTransport per ICE ufrag in
the answer (one when the SFU accepts BUNDLE, one per m-section when the room refuses
it), and then sends paced RTP (publisher) or measures what arrives (subscriber).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from benchmarks.loadgen.dtls_client import ClientCertificate
from benchmarks.loadgen.media import AudioSource, VideoSource, read_probe
from benchmarks.loadgen.offer import (
    AUDIO_PT,
    AnswerError,
    AnswerSection,
    OfferTrack,
    build_offer,
    parse_answer,
)
from benchmarks.loadgen.stats import LatencySamples, StreamStats
from benchmarks.loadgen.transport import MediaTransport, TransportError
from benchmarks.loadgen.whip import SignalingError, WhipClient
from sfu.proto.ice import random_ice_string
from sfu.wire.rtcp import RtcpError, RtcpFir, RtcpPli, parse_rtcp
from sfu.wire.rtp import RtpHeader

if TYPE_CHECKING:
    from benchmarks.janus.api import JanusHttp

# How a generator process talks to the server: WHIP/WHEP, or the Janus API.
Signaling: TypeAlias = "WhipClient | JanusHttp"

# A sender that fell further behind than this (a starved process) skips the missed
# periods instead of bursting them all out at once; the skips are counted.
MAX_CATCH_UP_NS = 200_000_000


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One WHIP or WHEP session the load generator opens."""

    name: str
    role: str  # "publisher" | "subscriber"
    room: str
    token: str
    path: str  # /whip/{room}, /whep/{room} or /whep/{room}/{identity}
    kinds: tuple[str, ...]  # ("audio", "video") or ("audio",)
    source: str = ""  # subscribers: the publisher identity whose media they get
    video_kbps: float = 1500.0


@dataclass(slots=True)
class Window:
    """The measured interval, in time.monotonic_ns(); packets sent inside it count."""

    start_ns: int = 0
    end_ns: int = 0
    active: bool = False

    def contains(self, send_ns: int) -> bool:
        return self.active and self.start_ns <= send_ns < self.end_ns


@dataclass(slots=True)
class ConnectFailure:
    name: str
    role: str
    stage: str  # "signaling" | "answer" | "socket" | "ice" | "dtls" | "internal"
    reason: str


class Client:
    """What publishers and subscribers share: offer, answer, transports, teardown."""

    direction = "sendonly"

    def __init__(self, spec: ClientSpec, window: Window) -> None:
        self.spec = spec
        self.window = window
        self.certificate = ClientCertificate()
        self.ice_ufrag = random_ice_string(8)
        self.ice_pwd = random_ice_string(24)
        self.transports: list[MediaTransport] = []
        self.transport_of_mid: dict[str, MediaTransport] = {}
        self.sections: list[AnswerSection] = []
        self.resource_url = ""
        self.connected = False
        self.connect_s = 0.0

    def offer_tracks(self) -> list[OfferTrack]:
        return [OfferTrack(kind, str(i)) for i, kind in enumerate(self.spec.kinds)]

    async def connect(self, http: Signaling) -> ConnectFailure | None:
        """Signal, then ICE and DTLS on every transport; a failure is returned, not raised."""
        if not isinstance(http, WhipClient):
            raise TypeError("WHIP/WHEP clients signal with a WhipClient")
        started = time.monotonic()
        offer = build_offer(
            self.offer_tracks(),
            direction=self.direction,
            ice_ufrag=self.ice_ufrag,
            ice_pwd=self.ice_pwd,
            fingerprint_sha256=self.certificate.fingerprint_sha256,
        )
        try:
            answer, self.resource_url = await http.post_offer(
                self.spec.path, self.spec.token, offer
            )
        except (SignalingError, OSError, TimeoutError) as exc:
            return self.make_failure("signaling", str(exc) or type(exc).__name__)
        try:
            self.sections = parse_answer(answer)
        except AnswerError as exc:
            return self.make_failure("answer", str(exc))
        failure = self.open_transports(controlling=True)
        if failure is None:
            failure = await self.connect_transports()
        if failure is None:
            self.connect_s = time.monotonic() - started
        return failure

    def open_transports(self, controlling: bool) -> ConnectFailure | None:
        """One MediaTransport per remote ICE ufrag of self.sections (bound, not started)."""
        by_ufrag: dict[str, MediaTransport] = {}
        try:
            for section in self.sections:
                transport = by_ufrag.get(section.ice_ufrag)
                if transport is None:
                    transport = MediaTransport(
                        section,
                        self.ice_ufrag,
                        self.certificate,
                        self.on_rtp,
                        self.on_rtcp,
                        local_pwd=self.ice_pwd,
                        controlling=controlling,
                    )
                    by_ufrag[section.ice_ufrag] = transport
                    self.transports.append(transport)
                self.transport_of_mid[section.mid] = transport
        except ValueError as exc:  # a candidate that is not loopback
            return self.make_failure("answer", str(exc))
        except OSError as exc:  # e.g. out of file descriptors
            return self.make_failure("socket", str(exc))
        return None

    async def connect_transports(self) -> ConnectFailure | None:
        """ICE then DTLS on every transport; sets ``connected`` when all have keys."""
        try:
            await asyncio.gather(*(t.connect() for t in self.transports))
        except TransportError as exc:
            return self.make_failure(exc.stage, str(exc))
        self.connected = True
        return None

    def make_failure(self, stage: str, reason: str) -> ConnectFailure:
        return ConnectFailure(self.spec.name, self.spec.role, stage, reason)

    def on_rtp(self, packet: bytes, header: RtpHeader, kernel_ns: int, app_ns: int) -> None:
        """Media from the SFU (subscribers)."""

    def on_rtcp(self, packet: bytes) -> None:
        """RTCP from the SFU."""

    async def run(self, deadline: float) -> None:
        """Keep consent fresh on every transport until the deadline (monotonic s)."""
        await asyncio.gather(*(t.keep_consent(deadline) for t in self.transports))

    async def close(self, http: Signaling) -> None:
        for transport in self.transports:
            transport.close()
        if self.resource_url and isinstance(http, WhipClient):
            try:
                await http.delete(self.resource_url)
            except (OSError, TimeoutError):
                pass  # the server times the session out by itself

    def transport_report(self) -> dict[str, int]:
        return {
            "socket_drops": sum(t.socket_drops for t in self.transports),
            "send_errors": sum(t.send_errors for t in self.transports),
            "srtp_errors": sum(t.srtp_errors for t in self.transports),
            "consent_sent": sum(t.consent_sent for t in self.transports),
            "consent_ok": sum(t.consent_ok for t in self.transports),
            "checks_answered": sum(t.checks_answered for t in self.transports),
        }

    def datagram_counts(self) -> tuple[int, int]:
        """(sent to the server, received from it) so far, over every transport."""
        return (
            sum(t.datagrams_sent for t in self.transports),
            sum(t.datagrams_received for t in self.transports),
        )


class Publisher(Client):
    """A WHIP publisher: Opus and/or VP8 at realistic rates, answering PLI with a keyframe."""

    direction = "sendonly"

    def __init__(self, spec: ClientSpec, window: Window) -> None:
        super().__init__(spec, window)
        self.sources: dict[str, AudioSource | VideoSource] = {}
        for kind in spec.kinds:
            ssrc = secrets.randbits(32) or 1
            if kind == "audio":
                self.sources[kind] = AudioSource(ssrc)
            else:
                self.sources[kind] = VideoSource(ssrc, spec.video_kbps)
        self.sent_in_window: dict[str, int] = {kind: 0 for kind in spec.kinds}
        self.sent_total: dict[str, int] = {kind: 0 for kind in spec.kinds}
        self.keyframe_requests = 0
        self.pacing_skips = 0
        self.stop_ns: int | None = None  # set once the measured window is known

    def offer_tracks(self) -> list[OfferTrack]:
        return [
            OfferTrack(kind, str(i), self.sources[kind].ssrc)
            for i, kind in enumerate(self.spec.kinds)
        ]

    def on_rtcp(self, packet: bytes) -> None:
        video = self.sources.get("video")
        if not isinstance(video, VideoSource):
            return  # receiver reports only: nothing to answer
        try:
            packets = parse_rtcp(packet)
        except RtcpError:
            return
        for rtcp in packets:
            if isinstance(rtcp, RtcpPli):
                wanted = rtcp.media_ssrc == video.ssrc
            elif isinstance(rtcp, RtcpFir):
                wanted = any(ssrc == video.ssrc for ssrc, _seq in rtcp.entries)
            else:
                continue
            if wanted:
                video.request_keyframe()
                self.keyframe_requests += 1

    async def run(self, deadline: float) -> None:
        """Send until stop_ns (set when the window is known) or the deadline."""
        pacers = [self._pace(kind, deadline) for kind in self.sources]
        await asyncio.gather(super().run(deadline), *pacers)

    async def _pace(self, kind: str, deadline: float) -> None:
        source = self.sources[kind]
        transport = self.transport_of_mid[str(self.spec.kinds.index(kind))]
        interval_ns = int(source.interval_s * 1e9)
        clock = time.monotonic_ns
        next_ns = clock()
        deadline_ns = int(deadline * 1e9)
        periods = int(max(0, deadline_ns - next_ns) / interval_ns) + 1
        for _ in range(periods):
            now = clock()
            if now >= (self.stop_ns or deadline_ns) or transport.closed:
                return
            if next_ns > now:
                await asyncio.sleep((next_ns - now) / 1e9)
            behind = clock() - next_ns
            if behind > MAX_CATCH_UP_NS:
                skipped = behind // interval_ns
                self.pacing_skips += skipped
                next_ns += skipped * interval_ns
            # Sending for a period that is due (or late): catch-up keeps the average
            # rate exact instead of letting every late wakeup push the schedule back.
            for packet, send_ns in source.packets(clock):
                transport.send_rtp(packet)
                self.sent_total[kind] += 1
                if self.window.contains(send_ns):
                    self.sent_in_window[kind] += 1
            next_ns += interval_ns

    def report(self) -> dict[str, object]:
        video = self.sources.get("video")
        return {
            "name": self.spec.name,
            "identity": self.spec.name,
            "sent_in_window": dict(self.sent_in_window),
            "sent_total": dict(self.sent_total),
            "keyframe_requests": self.keyframe_requests,
            "keyframes": video.keyframes if isinstance(video, VideoSource) else 0,
            "pacing_skips": self.pacing_skips,
            **self.transport_report(),
        }


@dataclass(slots=True)
class ReceivedStream:
    """One stream a subscriber gets, as the SFU numbers it."""

    kind: str
    stats: StreamStats = field(default_factory=StreamStats)
    received_total: int = 0
    bad_payloads: int = 0


class Subscriber(Client):
    """A WHEP viewer: decrypts everything, measures latency and loss inside the window."""

    direction = "recvonly"

    def __init__(
        self,
        spec: ClientSpec,
        window: Window,
        latency: dict[str, LatencySamples],
        app_latency: dict[str, LatencySamples],
    ) -> None:
        super().__init__(spec, window)
        self.latency = latency  # shared by every subscriber of the process, by kind
        self.app_latency = app_latency
        self.streams: dict[int, ReceivedStream] = {}
        self.kind_by_ssrc: dict[int, str] = {}
        self.kind_by_pt: dict[int, str] = {}

    async def connect(self, http: Signaling) -> ConnectFailure | None:
        failure = await super().connect(http)
        self.learn_streams()
        return failure

    def learn_streams(self) -> None:
        """Which kind each SSRC and payload type the server announced carries."""
        for section in self.sections:
            for ssrc in section.ssrcs:
                self.kind_by_ssrc[ssrc] = section.kind
            for pt in section.payload_types:
                self.kind_by_pt[pt] = section.kind

    def on_rtp(self, packet: bytes, header: RtpHeader, kernel_ns: int, app_ns: int) -> None:
        stream = self.streams.get(header.ssrc)
        if stream is None:
            kind = self.kind_by_ssrc.get(header.ssrc) or self.kind_by_pt.get(
                header.payload_type, "audio" if header.payload_type == AUDIO_PT else "video"
            )
            stream = self.streams[header.ssrc] = ReceivedStream(kind)
        stream.received_total += 1
        payload = packet[header.header_size : len(packet) - header.padding_size]
        probe = read_probe(payload, stream.kind)
        if probe is None:
            stream.bad_payloads += 1
            return
        send_ns = probe[0]
        if not self.window.contains(send_ns):
            return
        stream.stats.on_packet(header.sequence_number)
        self.latency[stream.kind].add(kernel_ns - send_ns)
        self.app_latency[stream.kind].add(app_ns - send_ns)

    def report(self) -> dict[str, object]:
        kinds_seen = {s.kind for s in self.streams.values()}
        streams = [
            {
                "subscriber": self.spec.name,
                "source": self.spec.source,
                "kind": stream.kind,
                "received": stream.stats.counts.received,
                "expected": stream.stats.counts.expected,
                "lost": stream.stats.counts.lost,
                "out_of_order": stream.stats.counts.out_of_order,
                "duplicates": stream.stats.counts.duplicates,
                "received_total": stream.received_total,
                "bad_payloads": stream.bad_payloads,
            }
            for stream in self.streams.values()
        ]
        # A track that delivered nothing at all still counts, as an empty stream.
        for kind in self.spec.kinds:
            if kind not in kinds_seen:
                streams.append(
                    {
                        "subscriber": self.spec.name,
                        "source": self.spec.source,
                        "kind": kind,
                        "received": 0,
                        "expected": 0,
                        "lost": 0,
                        "out_of_order": 0,
                        "duplicates": 0,
                        "received_total": 0,
                        "bad_payloads": 0,
                    }
                )
        return {"name": self.spec.name, "streams": streams, **self.transport_report()}
