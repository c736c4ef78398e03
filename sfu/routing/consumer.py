"""A Consumer is one track sent to one subscriber, with its own SSRC and numbering."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from sfu.wire.rtcp import ReportBlock, RtcpSenderReport
from sfu.wire.rtp import RtpError, RtpHeader, parse_rtp_header, rewrite_rtp
from sfu.wire.sdp import Codec

if TYPE_CHECKING:
    from sfu.routing.producer import Producer
    from sfu.routing.transport import Transport

MAX_NACK_ANSWERS = 64  # per NACK packet: a huge NACK must not become an amplifier
_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF


def seq_newer(a: int, b: int) -> bool:
    """True if sequence number a comes after b (RFC 1982 arithmetic on 16 bits)."""
    return a != b and ((a - b) & _SEQ_MASK) < 0x8000


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
        self.codec = codec
        self.mid = mid
        self.ssrc = ssrc
        self.cname = cname
        self.source: Producer | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_seq = -1
        self._last_ts = 0
        self._last_sent_at = 0.0
        self._synced = False
        self._first_seq = 0  # first out seq of the current source: older NACKs are stale
        self.packets_sent = 0
        self.octets_sent = 0
        self.nacks_answered = 0
        self.last_report: ReportBlock | None = None
        self.paused = False

    def attach(self, producer: Producer, now: float) -> None:
        """Switch to a new source; forwarding resumes at its next keyframe (video)."""
        if producer is self.source:
            return
        self.detach()
        self.source = producer
        self._synced = False
        producer.consumers.add(self)
        producer.request_keyframe(now)

    def detach(self) -> None:
        if self.source is not None:
            self.source.consumers.discard(self)
            self.source = None
        self._synced = False

    def on_transport_ready(self, now: float) -> None:
        """Keys are in place: start from a keyframe so the decoder can start at once."""
        self._synced = False
        if self.source is not None:
            self.source.request_keyframe(now)

    def _resync(self, header: RtpHeader, now: float) -> None:
        if self._last_seq < 0:
            out_seq = secrets.randbelow(0x8000)
            out_ts = secrets.randbits(32)
        else:
            out_seq = (self._last_seq + 1) & _SEQ_MASK
            elapsed = max(1, int((now - self._last_sent_at) * self.codec.clock_rate))
            out_ts = (self._last_ts + elapsed) & _TS_MASK
        self._seq_offset = (out_seq - header.sequence_number) & _SEQ_MASK
        self._ts_offset = (out_ts - header.timestamp) & _TS_MASK
        self._last_seq = (out_seq - 1) & _SEQ_MASK
        self._first_seq = out_seq
        self._synced = True

    def forward(self, packet: bytes, header: RtpHeader, keyframe: bool, now: float) -> None:
        if self.paused or not self.transport.ready:
            return
        if not self._synced:
            if self.kind == "video" and not keyframe:
                if self.source is not None:
                    self.source.request_keyframe(now)
                return
            self._resync(header, now)
        seq = (header.sequence_number + self._seq_offset) & _SEQ_MASK
        ts = (header.timestamp + self._ts_offset) & _TS_MASK
        if seq_newer(seq, self._last_seq):
            self._last_seq = seq
            self._last_ts = ts
            self._last_sent_at = now
        out = rewrite_rtp(
            packet,
            header,
            payload_type=self.codec.payload_type,
            sequence_number=seq,
            timestamp=ts,
            ssrc=self.ssrc,
        )
        self.packets_sent += 1
        self.octets_sent += len(out) - header.header_size
        self.transport.send_rtp(out)
        worker = self.transport.worker
        worker.forwarded_packets[self.kind] += 1
        worker.forwarded_bytes[self.kind] += len(out)

    def on_nack(self, lost: list[int]) -> None:
        """Resend what the subscriber lost, from the source's cache."""
        source = self.source
        if source is None or source.cache is None or not self._synced:
            return
        for seq in lost[:MAX_NACK_ANSWERS]:
            if seq != self._first_seq and not seq_newer(seq, self._first_seq):
                continue  # sent before the last source switch: another stream's numbers
            original = source.cache.get((seq - self._seq_offset) & _SEQ_MASK)
            if original is None:
                continue
            try:
                header = parse_rtp_header(original)
            except RtpError:
                continue
            out = rewrite_rtp(
                original,
                header,
                payload_type=self.codec.payload_type,
                sequence_number=seq,
                timestamp=(header.timestamp + self._ts_offset) & _TS_MASK,
                ssrc=self.ssrc,
            )
            self.nacks_answered += 1
            self.transport.send_rtp(out)

    def on_keyframe_request(self, now: float) -> None:
        if self.source is not None:
            self.source.request_keyframe(now)

    def on_source_sender_report(self, report: RtcpSenderReport) -> None:
        """Translate the publisher's SR into this leg's timeline (keeps A/V sync)."""
        if not self._synced or not self.transport.ready:
            return
        self.transport.send_rtcp(
            [
                RtcpSenderReport(
                    ssrc=self.ssrc,
                    ntp_timestamp=report.ntp_timestamp,
                    rtp_timestamp=(report.rtp_timestamp + self._ts_offset) & _TS_MASK,
                    packet_count=self.packets_sent & _TS_MASK,
                    octet_count=self.octets_sent & _TS_MASK,
                )
            ]
        )

    def close(self) -> None:
        self.detach()
