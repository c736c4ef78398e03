"""A Producer is one incoming track: it fans packets out to its Consumers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sfu.proto.rtp_stats import RtpReceiverStats
from sfu.routing.types import TrackInfo
from sfu.wire.codecs import is_keyframe
from sfu.wire.rtcp import RtcpFir, RtcpPacket, RtcpPli, RtcpSenderReport
from sfu.wire.rtp import RtpHeader
from sfu.wire.sdp import Codec

if TYPE_CHECKING:
    from sfu.routing.consumer import Consumer
    from sfu.routing.transport import Transport

# At most one keyframe request per producer in this interval: a burst of subscribers
# (or a lossy one asking every frame) must not make the publisher send only keyframes.
KEYFRAME_REQUEST_INTERVAL_S = 0.3
# Per track, above which it is flooding and whole packets are dropped (the defaults;
# limits.toml's [media] table sets them, see signaling/ratelimit.py).
RATE_LIMIT_PPS = {"audio": 250, "video": 4000}
RATE_LIMIT_BPS = {"audio": 256_000, "video": 8_000_000}
CACHE_SIZE = 1024  # packets kept for NACK answers (a few seconds of video)


class PacketCache:
    """Recent plaintext packets by sequence number, in a fixed ring."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._seqs: list[int] = [-1] * size
        self._packets: list[bytes] = [b""] * size

    def put(self, seq: int, packet: bytes) -> None:
        slot = seq % self._size
        self._seqs[slot] = seq
        self._packets[slot] = packet

    def get(self, seq: int) -> bytes | None:
        slot = seq % self._size
        return self._packets[slot] if self._seqs[slot] == seq else None

    def clear(self) -> None:
        self._seqs = [-1] * self._size
        self._packets = [b""] * self._size


class RateLimiter:
    """Token buckets over packets and bytes; refill continuously, burst up to one second.

    `check` answers "" when the packet may go (and takes it), else the drop counter
    to charge."""

    def __init__(self, rate_pps: float, rate_bps: float = float("inf")) -> None:
        self.rate = rate_pps
        self.tokens = rate_pps
        self.byte_rate = rate_bps / 8
        self.bytes = self.byte_rate
        self.updated = 0.0

    def allow(self, now: float, size: int = 0) -> bool:
        return not self.check(now, size)

    def check(self, now: float, size: int) -> str:
        elapsed = now - self.updated
        self.updated = now
        self.tokens = min(self.rate, self.tokens + elapsed * self.rate)
        self.bytes = min(self.byte_rate, self.bytes + elapsed * self.byte_rate)
        if self.tokens < 1.0:
            return "rate_limited"
        if self.bytes < size:
            return "bitrate_limited"
        self.tokens -= 1.0
        self.bytes -= size
        return ""


class Producer:
    """One published track, received on a transport."""

    def __init__(
        self,
        track_id: str,
        identity: str,
        kind: str,
        label: str,
        codec: Codec,
        transport: Transport,
        mid: str,
        ssrc: int | None,
    ) -> None:
        self.info = TrackInfo(track_id, identity, kind, label)
        self.kind = kind
        self.codec = codec
        self.transport = transport
        self.mid = mid
        self.ssrc = ssrc
        self.consumers: set[Consumer] = set()
        self.fanout = transport.worker.datapath.new_fanout(kind)
        self.cache = PacketCache() if kind == "video" else None
        self.stats = RtpReceiverStats(ssrc or 0, codec.clock_rate)
        worker = transport.worker
        self.limiter = RateLimiter(worker.track_pps[kind], worker.track_bps[kind])
        self._last_keyframe_request = -1e9
        self._fir_seq = 0
        self.packets = 0
        self.dropped_rate = 0
        self.closed = False
        self.source = "audio" if kind == "audio" else "camera"  # or "screen"
        # A moderator's mute or a lost publish grant: packets are dropped on arrival.
        self.muted = False

    @property
    def track_id(self) -> str:
        return self.info.track_id

    def bind_ssrc(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.stats = RtpReceiverStats(ssrc, self.codec.clock_rate)

    def on_rtp(self, packet: bytes, header: RtpHeader, now: float) -> None:
        """Forward one decrypted packet to every consumer."""
        if self.muted:
            return
        refused = self.limiter.check(now, len(packet))
        if refused:
            self.dropped_rate += 1
            self.transport.worker.count(refused)
            return
        self.packets += 1
        self.stats.on_packet(header.sequence_number, header.timestamp, now)
        if self.cache is not None:
            self.cache.put(header.sequence_number, packet)
        if not self.consumers:
            return
        keyframe = self.kind == "video" and is_keyframe(
            self.codec.name, packet[header.header_size : len(packet) - header.padding_size]
        )
        if self.fanout.forward(packet, header, keyframe, now):
            self.request_keyframe(now)  # a subscriber waits to start at a keyframe
        # `now` is when the datagram was read: this is the time it spent inside the SFU.
        self.transport.worker.forward_latency.observe(time.monotonic() - now)

    def restart_stream(self, now: float) -> None:
        """The publisher's stream came back after a gap too long for 16-bit sequence
        numbers to span (over 2^15 lost packets): pre-gap sequence numbers mean nothing
        now, and passing the jump on would break every subscriber's SRTP the same way.
        Each subscriber continues its own numbering from the next keyframe, as after a
        publisher switch."""
        if self.cache is not None:
            self.cache.clear()
        for consumer in self.consumers:
            consumer.leg.synced = False
        self.request_keyframe(now)

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.add(consumer)
        self.fanout.add(consumer.leg)

    def remove_consumer(self, consumer: Consumer) -> None:
        self.consumers.discard(consumer)
        self.fanout.remove(consumer.leg)

    def on_sender_report(self, report: RtcpSenderReport, now: float) -> None:
        self.stats.on_sender_report(report.ntp_timestamp, now)
        for consumer in self.consumers:
            consumer.on_source_sender_report(report)

    def request_keyframe(self, now: float) -> None:
        """Ask the publisher for a keyframe (PLI, or FIR if it only does FIR), rate-limited."""
        if self.kind != "video" or self.ssrc is None or self.closed:
            return
        if now - self._last_keyframe_request < KEYFRAME_REQUEST_INTERVAL_S:
            return
        self._last_keyframe_request = now
        sender = self.transport.rtcp_ssrc
        request: RtcpPacket
        if "nack pli" not in self.codec.rtcp_fbs and "ccm fir" in self.codec.rtcp_fbs:
            self._fir_seq = (self._fir_seq + 1) & 0xFF
            request = RtcpFir(sender, [(self.ssrc, self._fir_seq)])
        else:
            request = RtcpPli(sender, self.ssrc)
        self.transport.send_rtcp([request])

    def close(self) -> None:
        self.closed = True
        for consumer in list(self.consumers):
            consumer.detach()
        self.consumers.clear()
