"""The datapath in pure Python: the reference the native one must match byte for byte.

A Leg is one subscriber's copy of one track: its SSRC, payload type, the offsets that
map the source's numbering onto its own continuous numbering, and where and how to
send (SRTP context + address). A Track is one incoming track: its receive state (rate
limit, RFC 3550 statistics, NACK cache) and the legs it fans each packet out to.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from sfu.proto.rtp_stats import RtpReceiverStats
from sfu.proto.srtp import SrtpError, SrtpPair
from sfu.routing.stats import LatencyHistogram
from sfu.routing.track import (
    INGEST_BITRATE_LIMITED,
    INGEST_FORWARDED,
    INGEST_MUTED,
    INGEST_NO_LEGS,
    INGEST_RATE_LIMITED,
    INGEST_WANTS_KEYFRAME,
    PacketCache,
    RateLimiter,
)
from sfu.wire.codecs import is_keyframe
from sfu.wire.rtcp import ReportBlock
from sfu.wire.rtp import RtpHeader

Address = tuple[str, int]
_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF
_HEADER = struct.Struct("!BBHII")


class Leg(Protocol):
    """One subscriber's copy of one track: what Consumer reads and sets."""

    payload_type: int
    synced: bool
    paused: bool
    seq_offset: int
    ts_offset: int
    first_seq: int
    packets_sent: int
    octets_sent: int

    def set_route(self, srtp: SrtpPair | None, addr: Address | None) -> None: ...
    @property
    def ready(self) -> bool:
        """Keys and an address: it can send."""
        ...


class ReceiverStats(Protocol):
    """RFC 3550 receiver statistics (sfu.proto.rtp_stats, or its C twin)."""

    @property
    def packets_lost(self) -> int: ...
    @property
    def jitter(self) -> float: ...
    def on_sender_report(self, ntp_timestamp: int, arrival_s: float) -> None: ...
    def report_block(self, now_s: float) -> ReportBlock: ...


class Cache(Protocol):
    def get(self, seq: int) -> bytes | None: ...
    def clear(self) -> None: ...


class Track(Protocol):
    """One incoming track: what the Producer reads and drives."""

    kind: str
    muted: bool
    owner: Any  # the Producer (the native datapath's events name it)

    @property
    def stats(self) -> ReceiverStats: ...
    @property
    def cache(self) -> Cache | None: ...
    @property
    def packets(self) -> int: ...
    @property
    def dropped_rate(self) -> int: ...
    def add(self, leg: Any) -> None: ...
    def remove(self, leg: Any) -> None: ...
    def reset_stats(self, ssrc: int) -> None: ...
    def ingest(self, packet: bytes, header: RtpHeader, now: float) -> int: ...


class Ingress(Protocol):
    """A transport's receive side on the native fast path."""

    slow: bool

    @property
    def last_heard(self) -> float: ...
    def set_route(self, srtp: SrtpPair | None, addr: Address | None) -> None: ...
    def set_tracks(self, by_ssrc: dict[int, Any]) -> None: ...


class Datapath(Protocol):
    """What the Worker needs of a datapath (Python here, or native/)."""

    name: str

    @property
    def forwarded_packets(self) -> Counter[str]: ...
    @property
    def forwarded_bytes(self) -> Counter[str]: ...
    def new_leg(
        self, ssrc: int, payload_type: int, video: bool, clock_rate: int, initial: tuple[int, int]
    ) -> Leg: ...
    @property
    def counters(self) -> Counter[str]: ...
    def new_track(
        self, kind: str, codec: str, clock_rate: int, rate_pps: float, rate_bps: float
    ) -> Track: ...
    def new_ingress(self) -> Ingress | None: ...
    def set_socket(self, fileno: int) -> None: ...
    def set_shedding(self, shedding: bool) -> None: ...
    def attach(
        self,
        on_keyframe_wanted: Callable[[Any, float], None],
        on_shed: Callable[[Any], None],
        latency: LatencyHistogram,
    ) -> None: ...


def seq_newer(a: int, b: int) -> bool:
    """True if sequence number a comes after b (RFC 1982 arithmetic on 16 bits)."""
    return a != b and ((a - b) & _SEQ_MASK) < 0x8000


def rewrite(packet: bytes, header: RtpHeader, pt: int, seq: int, ts: int, ssrc: int) -> bytes:
    """New SSRC/PT/seq/ts, CSRCs kept, header extension dropped, payload+padding kept."""
    cc = packet[0] & 0x0F
    out = bytearray(_HEADER.pack(packet[0] & 0xEF, (packet[1] & 0x80) | pt, seq, ts, ssrc))
    out += packet[12 : 12 + 4 * cc]
    out += packet[header.header_size :]
    return bytes(out)


class PyLeg:
    """One subscriber's numbering and route for one track."""

    def __init__(
        self, ssrc: int, payload_type: int, video: bool, clock_rate: int, initial: tuple[int, int]
    ) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.video = video
        self.clock_rate = clock_rate
        self.initial_seq, self.initial_ts = initial
        self.synced = False
        self.paused = False
        self.seq_offset = 0
        self.ts_offset = 0
        self.last_seq = -1
        self.last_ts = 0
        self.last_sent_at = 0.0
        self.first_seq = 0
        self.packets_sent = 0
        self.octets_sent = 0
        self.srtp: SrtpPair | None = None
        self.addr: Address | None = None

    def set_route(self, srtp: SrtpPair | None, addr: Address | None) -> None:
        """Where to send: both set means ready; either None stops sending."""
        self.srtp = srtp
        self.addr = addr

    @property
    def ready(self) -> bool:
        return self.srtp is not None and self.addr is not None

    def _resync(self, pub_seq: int, pub_ts: int, now: float) -> None:
        if self.last_seq < 0:
            out_seq, out_ts = self.initial_seq, self.initial_ts
        else:
            out_seq = (self.last_seq + 1) & _SEQ_MASK
            elapsed = max(1, int((now - self.last_sent_at) * self.clock_rate))
            out_ts = (self.last_ts + elapsed) & _TS_MASK
        self.seq_offset = (out_seq - pub_seq) & _SEQ_MASK
        self.ts_offset = (out_ts - pub_ts) & _TS_MASK
        self.last_seq = (out_seq - 1) & _SEQ_MASK
        self.first_seq = out_seq
        self.synced = True

    def prepare(self, packet: bytes, header: RtpHeader, keyframe: bool, now: float) -> bytes | None:
        """The plaintext packet this leg sends for `packet`, or None (not ready, or
        waiting for a keyframe: `synced` stays False and the caller asks for one)."""
        if self.paused or self.srtp is None or self.addr is None:
            return None
        if not self.synced:
            if self.video and not keyframe:
                return None
            self._resync(header.sequence_number, header.timestamp, now)
        seq = (header.sequence_number + self.seq_offset) & _SEQ_MASK
        ts = (header.timestamp + self.ts_offset) & _TS_MASK
        if seq_newer(seq, self.last_seq):
            self.last_seq = seq
            self.last_ts = ts
            self.last_sent_at = now
        out = rewrite(packet, header, self.payload_type, seq, ts, self.ssrc)
        self.packets_sent += 1
        self.octets_sent += len(out) - 12 - 4 * (packet[0] & 0x0F)
        return out


class PythonDatapath:
    """Makes legs and fan-outs that run in Python, and counts what they send."""

    name = "python"

    def __init__(self, sender: Callable[[bytes, Address], None]) -> None:
        self.sender = sender
        self.forwarded_packets: Counter[str] = Counter()  # by kind
        self.forwarded_bytes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # "protect", "send"

    def new_leg(
        self, ssrc: int, payload_type: int, video: bool, clock_rate: int, initial: tuple[int, int]
    ) -> PyLeg:
        return PyLeg(ssrc, payload_type, video, clock_rate, initial)

    def new_track(
        self,
        kind: str,
        codec: str = "",
        clock_rate: int = 90000,
        rate_pps: float = float("inf"),
        rate_bps: float = float("inf"),
    ) -> PyTrack:
        return PyTrack(kind, self, codec, clock_rate, rate_pps, rate_bps)

    def new_ingress(self) -> None:
        """No fast path here: every datagram goes through the Worker."""
        return None

    @property
    def counters(self) -> Counter[str]:
        return Counter()  # the Worker counts everything itself

    def set_socket(self, fileno: int) -> None:
        """The Python path sends through the event loop's transport instead."""

    def set_shedding(self, shedding: bool) -> None:
        """The Transport sheds in Python."""

    def attach(
        self,
        on_keyframe_wanted: Callable[[Any, float], None],
        on_shed: Callable[[Any], None],
        latency: LatencyHistogram,
    ) -> None:
        """Everything happens in Python here: the Producer and Transport call the Worker."""


class PyTrack:
    """One incoming track: receive state, and one packet sent to every leg (rewrite,
    SRTP protect, send), each in Python."""

    def __init__(
        self,
        kind: str,
        datapath: PythonDatapath,
        codec: str = "",
        clock_rate: int = 90000,
        rate_pps: float = float("inf"),
        rate_bps: float = float("inf"),
    ) -> None:
        self.kind = kind
        self.datapath = datapath
        self.codec = codec
        self.legs: list[PyLeg] = []
        self.stats = RtpReceiverStats(0, clock_rate)
        self.cache = PacketCache() if kind == "video" else None
        self.limiter = RateLimiter(rate_pps, rate_bps)
        self.muted = False
        self.packets = 0
        self.dropped_rate = 0
        self.owner: Any = None

    def reset_stats(self, ssrc: int) -> None:
        self.stats = RtpReceiverStats(ssrc, self.stats.clock_rate)

    def ingest(self, packet: bytes, header: RtpHeader, now: float) -> int:
        """One decrypted packet: rate limit, statistics, NACK cache, fan-out."""
        if self.muted:
            return INGEST_MUTED
        refused = self.limiter.check(now, len(packet))
        if refused:
            self.dropped_rate += 1
            return INGEST_RATE_LIMITED if refused == "rate_limited" else INGEST_BITRATE_LIMITED
        self.packets += 1
        self.stats.on_packet(header.sequence_number, header.timestamp, now)
        if self.cache is not None:
            self.cache.put(header.sequence_number, packet)
        if not self.legs:
            return INGEST_NO_LEGS
        keyframe = self.kind == "video" and is_keyframe(
            self.codec, packet[header.header_size : len(packet) - header.padding_size]
        )
        if self.forward(packet, header, keyframe, now):
            return INGEST_WANTS_KEYFRAME
        return INGEST_FORWARDED

    def add(self, leg: Any) -> None:
        assert isinstance(leg, PyLeg)
        if leg not in self.legs:
            self.legs.append(leg)

    def remove(self, leg: Any) -> None:
        if leg in self.legs:
            self.legs.remove(leg)

    def forward(self, packet: bytes, header: RtpHeader, keyframe: bool, now: float) -> bool:
        """Send to every leg; True if some leg waits for a keyframe."""
        wants_keyframe = False
        datapath = self.datapath
        for leg in self.legs:
            out = leg.prepare(packet, header, keyframe, now)
            if out is None:
                wants_keyframe |= leg.ready and not leg.synced and not leg.paused
                continue
            assert leg.srtp is not None and leg.addr is not None
            try:
                protected = leg.srtp.protect(out)
            except SrtpError:
                datapath.errors["protect"] += 1
                continue
            datapath.sender(protected, leg.addr)
            datapath.forwarded_packets[self.kind] += 1
            datapath.forwarded_bytes[self.kind] += len(out)
        return wants_keyframe
