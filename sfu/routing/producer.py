"""A Producer is one incoming track: it fans packets out to its Consumers."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sfu.routing.track import DROP_COUNTERS, INGEST_WANTS_KEYFRAME
from sfu.routing.types import TrackInfo
from sfu.wire.rtcp import RtcpFir, RtcpPacket, RtcpPli, RtcpSenderReport
from sfu.wire.rtp import RtpHeader
from sfu.wire.sdp import Codec

if TYPE_CHECKING:
    from sfu.routing.consumer import Consumer
    from sfu.routing.fanout import Cache, ReceiverStats
    from sfu.routing.transport import Transport

# At most one keyframe request per producer in this interval: a burst of subscribers
# (or a lossy one asking every frame) must not make the publisher send only keyframes.
KEYFRAME_REQUEST_INTERVAL_S = 0.3
# Per track, above which it is flooding and whole packets are dropped (the defaults;
# limits.toml's [media] table sets them, see signaling/ratelimit.py).
RATE_LIMIT_PPS = {"audio": 250, "video": 4000}
RATE_LIMIT_BPS = {"audio": 256_000, "video": 8_000_000}


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
        worker = transport.worker
        # Receive state and fan-out, in the datapath (C structs when native).
        self.track = worker.datapath.new_track(
            kind, codec.name, codec.clock_rate, worker.track_pps[kind], worker.track_bps[kind]
        )
        self.track.owner = self
        self.track.reset_stats(ssrc or 0)
        self._last_keyframe_request = -1e9
        self._fir_seq = 0
        self.closed = False
        self.source = "audio" if kind == "audio" else "camera"  # or "screen"

    @property
    def track_id(self) -> str:
        return self.info.track_id

    @property
    def muted(self) -> bool:
        """A moderator's mute or a lost publish grant: packets are dropped on arrival."""
        return self.track.muted

    @muted.setter
    def muted(self, value: bool) -> None:
        self.track.muted = value

    @property
    def stats(self) -> ReceiverStats:
        return self.track.stats

    @property
    def cache(self) -> Cache | None:
        return self.track.cache

    @property
    def packets(self) -> int:
        return self.track.packets

    @property
    def dropped_rate(self) -> int:
        return self.track.dropped_rate

    def bind_ssrc(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.track.reset_stats(ssrc)

    def on_rtp(self, packet: bytes, header: RtpHeader, now: float) -> None:
        """Forward one decrypted packet to every consumer. The native datapath does the
        same in C for packets it receives itself; this is for the ones Python handles."""
        outcome = self.track.ingest(packet, header, now)
        if outcome > INGEST_WANTS_KEYFRAME:
            drop = DROP_COUNTERS.get(outcome)
            if drop is not None:
                self.transport.worker.count(drop)
            return
        if outcome == INGEST_WANTS_KEYFRAME:
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
        self.track.add(consumer.leg)

    def remove_consumer(self, consumer: Consumer) -> None:
        self.consumers.discard(consumer)
        self.track.remove(consumer.leg)

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
