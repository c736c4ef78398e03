"""A Consumer is one track sent to one subscriber, with its own SSRC and numbering.

The per-packet work (rewrite, protect, send) is done by its leg, in the Python or the
native datapath; the Consumer decides: which source, when to resync, NACK answers,
sender reports.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sfu.routing.fanout import seq_newer
from sfu.wire.rtcp import ReportBlock, RtcpSenderReport
from sfu.wire.rtp import RtpError, parse_rtp_header, rewrite_rtp
from sfu.wire.sdp import Codec

if TYPE_CHECKING:
    from sfu.routing.producer import Producer
    from sfu.routing.transport import Transport

__all__ = ["Consumer", "seq_newer"]

MAX_NACK_ANSWERS = 64  # per NACK packet: a huge NACK must not become an amplifier
_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF


class Consumer:
    """Sends its source Producer's packets to one subscriber transport.

    Sequence numbers and timestamps are rewritten with per-source offsets chosen so
    that the subscriber sees one continuous stream across source switches.
    """

    def __init__(
        self,
        consumer_id: str,
        transport: Transport,
        kind: str,
        codec: Codec,
        mid: str,
        ssrc: int,
        cname: str,
    ) -> None:
        self.consumer_id = consumer_id
        self.transport = transport
        self.kind = kind
        self.mid = mid
        self.ssrc = ssrc
        self.cname = cname
        self.source: Producer | None = None
        self.nacks_answered = 0
        self.last_report: ReportBlock | None = None
        # RFC 3550 5.1: the first sequence number and timestamp are random.
        initial = (secrets.randbelow(0x8000), secrets.randbits(32))
        self.leg = transport.worker.datapath.new_leg(
            ssrc, codec.payload_type, kind == "video", codec.clock_rate, initial
        )
        self._codec = codec
        transport.attach_leg(self.leg)

    @property
    def codec(self) -> Codec:
        return self._codec

    @codec.setter
    def codec(self, codec: Codec) -> None:
        self._codec = codec
        self.leg.payload_type = codec.payload_type

    @property
    def paused(self) -> bool:
        return self.leg.paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self.leg.paused = value

    @property
    def packets_sent(self) -> int:
        return self.leg.packets_sent

    @property
    def octets_sent(self) -> int:
        return self.leg.octets_sent

    def attach(self, producer: Producer, now: float) -> None:
        """Switch to a new source; forwarding resumes at its next keyframe (video)."""
        if producer is self.source:
            return
        self.detach()
        self.source = producer
        producer.add_consumer(self)
        # Without keys yet, a keyframe now would be lost on this leg, and its request
        # would hold back (rate limit) the one on_transport_ready makes when it can use it.
        if self.leg.ready:
            producer.request_keyframe(now)

    def detach(self) -> None:
        if self.source is not None:
            self.source.remove_consumer(self)
            self.source = None
        self.leg.synced = False

    def on_transport_ready(self, now: float) -> None:
        """Keys are in place: start from a keyframe so the decoder can start at once."""
        self.leg.synced = False
        if self.source is not None:
            self.source.request_keyframe(now)

    def on_nack(self, lost: list[int]) -> None:
        """Resend what the subscriber lost, from the source's cache."""
        source, leg = self.source, self.leg
        if source is None or source.cache is None or not leg.synced:
            return
        for seq in lost[:MAX_NACK_ANSWERS]:
            if seq != leg.first_seq and not seq_newer(seq, leg.first_seq):
                continue  # sent before the last source switch: another stream's numbers
            original = source.cache.get((seq - leg.seq_offset) & _SEQ_MASK)
            if original is None:
                continue
            try:
                header = parse_rtp_header(original)
            except RtpError:
                continue
            out = rewrite_rtp(
                original,
                header,
                payload_type=self._codec.payload_type,
                sequence_number=seq,
                timestamp=(header.timestamp + leg.ts_offset) & _TS_MASK,
                ssrc=self.ssrc,
            )
            self.nacks_answered += 1
            self.transport.send_rtp(out)

    def on_keyframe_request(self, now: float) -> None:
        if self.source is not None:
            self.source.request_keyframe(now)

    def on_source_sender_report(self, report: RtcpSenderReport) -> None:
        """Translate the publisher's SR into this leg's timeline (keeps A/V sync)."""
        leg = self.leg
        if not leg.synced or not self.transport.ready:
            return
        self.transport.send_rtcp(
            [
                RtcpSenderReport(
                    ssrc=self.ssrc,
                    ntp_timestamp=report.ntp_timestamp,
                    rtp_timestamp=(report.rtp_timestamp + leg.ts_offset) & _TS_MASK,
                    packet_count=leg.packets_sent & _TS_MASK,
                    octet_count=leg.octets_sent & _TS_MASK,
                )
            ]
        )

    def close(self) -> None:
        self.detach()
        self.transport.detach_leg(self.leg)
