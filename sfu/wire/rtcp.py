"""RTCP compound packet parsing and serialization.

Covers SR/RR/SDES/BYE (RFC 3550), generic NACK and PLI (RFC 4585), FIR (RFC 5104) and REMB
(draft-alvestrand-rmcat-remb). Anything else is kept verbatim as :class:`RtcpUnknown` so it
can be relayed or dropped.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = [
    "ReportBlock",
    "RtcpBye",
    "RtcpError",
    "RtcpFir",
    "RtcpNack",
    "RtcpPacket",
    "RtcpPli",
    "RtcpReceiverReport",
    "RtcpRemb",
    "RtcpSdes",
    "RtcpSenderReport",
    "RtcpUnknown",
    "ntp_middle32",
    "ntp_timestamp",
    "parse_rtcp",
    "serialize_rtcp",
    "sort_sequence_numbers",
]

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
PT_RTPFB = 205
PT_PSFB = 206
PT_XR = 207

FMT_NACK = 1
FMT_PLI = 1
FMT_FIR = 4
FMT_REMB = 15  # application layer feedback; REMB is identified by its "REMB" tag

SDES_END = 0
SDES_CNAME = 1

# Seconds between the NTP epoch (1900) and the Unix epoch (1970).
NTP_UNIX_OFFSET = 2_208_988_800

_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_SR_INFO = struct.Struct("!IQIII")
_U32 = struct.Struct("!I")
_U32X2 = struct.Struct("!II")

_MAX_LOST = 0x7FFFFF
_MIN_LOST = -0x800000


class RtcpError(ValueError):
    """Malformed RTCP. code = "bad_rtcp"."""

    code = "bad_rtcp"


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    """Build a common header for a body that is already a multiple of 4 bytes long."""
    if not 0 <= count <= 31:
        raise RtcpError(f"RTCP count/FMT {count} out of range 0..31")
    words = body_len // 4
    if words > 0xFFFF:
        raise RtcpError("RTCP packet too long")
    return _HEADER.pack(0x80 | count, packet_type, words)


def _pack(fmt: struct.Struct, *values: int) -> bytes:
    """Pack, reporting out-of-range fields as RtcpError rather than struct.error."""
    try:
        return fmt.pack(*values)
    except struct.error as exc:
        raise RtcpError(f"RTCP field out of range: {exc}") from exc


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


@dataclass(slots=True)
class ReportBlock:
    """Reception report block carried by SR and RR packets."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        """Decode the 24-byte block at ``offset`` (the caller checks the length)."""
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, offset)
        lost = lost_word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        """Encode as 24 bytes; the cumulative loss is clamped to signed 24 bits."""
        if not 0 <= self.fraction_lost <= 255:
            raise RtcpError(f"fraction_lost {self.fraction_lost} out of range 0..255")
        lost = min(max(self.packets_lost, _MIN_LOST), _MAX_LOST) & 0xFFFFFF
        return _pack(
            _REPORT_BLOCK,
            self.ssrc,
            (self.fraction_lost << 24) | lost,
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )


def _parse_report_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    if offset + 24 * count > len(body):
        raise RtcpError(f"{count} report blocks do not fit in the packet")
    return [ReportBlock.parse(body, offset + 24 * i) for i in range(count)]


@dataclass(slots=True)
class RtcpSenderReport:
    """Sender report (PT 200)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        """Encode as one RTCP packet."""
        body = _pack(
            _SR_INFO,
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        ) + b"".join(r.serialize() for r in self.reports)
        return _header(len(self.reports), PT_SR, len(body)) + body


@dataclass(slots=True)
class RtcpReceiverReport:
    """Receiver report (PT 201)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def serialize(self) -> bytes:
        """Encode as one RTCP packet."""
        body = _pack(_U32, self.ssrc) + b"".join(r.serialize() for r in self.reports)
        return _header(len(self.reports), PT_RR, len(body)) + body


@dataclass(slots=True)
class RtcpSdes:
    """Source description (PT 202); only CNAME items are kept."""

    chunks: list[tuple[int, str]]

    def serialize(self) -> bytes:
        """Encode one chunk per (ssrc, cname), each with a single CNAME item."""
        parts: list[bytes] = []
        for ssrc, cname in self.chunks:
            text = cname.encode("utf-8")
            if len(text) > 255:
                raise RtcpError(f"CNAME too long ({len(text)} bytes)")
            chunk = _pack(_U32, ssrc) + bytes((SDES_CNAME, len(text))) + text
            # The item list ends with at least one null octet, then pads to 32 bits.
            parts.append(_pad4(chunk + b"\x00"))
        body = b"".join(parts)
        return _header(len(self.chunks), PT_SDES, len(body)) + body


@dataclass(slots=True)
class RtcpBye:
    """Goodbye (PT 203)."""

    ssrcs: list[int]
    reason: str = ""

    def serialize(self) -> bytes:
        """Encode as one RTCP packet."""
        body = b"".join(_pack(_U32, s) for s in self.ssrcs)
        if self.reason:
            text = self.reason.encode("utf-8")
            if len(text) > 255:
                raise RtcpError(f"BYE reason too long ({len(text)} bytes)")
            body = _pad4(body + bytes((len(text),)) + text)
        return _header(len(self.ssrcs), PT_BYE, len(body)) + body


@dataclass(slots=True)
class RtcpPli:
    """Picture loss indication (PT 206, FMT 1)."""

    sender_ssrc: int
    media_ssrc: int

    def serialize(self) -> bytes:
        """Encode as one 12-byte RTCP packet."""
        return _header(FMT_PLI, PT_PSFB, 8) + _pack(_U32X2, self.sender_ssrc, self.media_ssrc)


@dataclass(slots=True)
class RtcpFir:
    """Full intra request (PT 206, FMT 4); entries are (ssrc, command sequence number)."""

    sender_ssrc: int
    entries: list[tuple[int, int]]

    def serialize(self) -> bytes:
        """Encode as one RTCP packet; the media SSRC field is zero as RFC 5104 requires."""
        parts = [_pack(_U32X2, self.sender_ssrc, 0)]
        for ssrc, seq_nr in self.entries:
            if not 0 <= seq_nr <= 255:
                raise RtcpError(f"FIR sequence number {seq_nr} out of range 0..255")
            parts.append(_pack(_U32X2, ssrc, seq_nr << 24))
        body = b"".join(parts)
        return _header(FMT_FIR, PT_PSFB, len(body)) + body


def sort_sequence_numbers(seqs: Iterable[int]) -> list[int]:
    """Sort distinct 16-bit sequence numbers in wrap-around order.

    The sequence starts just after the largest circular gap, so ``[0, 65535]`` sorts as
    ``[65535, 0]``.
    """
    values = sorted({s & 0xFFFF for s in seqs})
    if len(values) < 2:
        return values
    best_start = 0
    best_gap = values[0] + 0x10000 - values[-1]
    for i in range(1, len(values)):
        gap = values[i] - values[i - 1]
        if gap > best_gap:
            best_gap = gap
            best_start = i
    return values[best_start:] + values[:best_start]


@dataclass(slots=True)
class RtcpNack:
    """Generic NACK (PT 205, FMT 1); ``lost`` holds sequence numbers in wrap-around order."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int]

    def serialize(self) -> bytes:
        """Encode, packing the lost list into as few PID+BLP pairs as possible."""
        parts = [_pack(_U32X2, self.sender_ssrc, self.media_ssrc)]
        pid = -1
        blp = 0
        for seq in sort_sequence_numbers(self.lost):
            delta = (seq - pid) & 0xFFFF
            if pid >= 0 and 1 <= delta <= 16:
                blp |= 1 << (delta - 1)
                continue
            if pid >= 0:
                parts.append(_U32.pack((pid << 16) | blp))
            pid = seq
            blp = 0
        if pid >= 0:
            parts.append(_U32.pack((pid << 16) | blp))
        body = b"".join(parts)
        return _header(FMT_NACK, PT_RTPFB, len(body)) + body


@dataclass(slots=True)
class RtcpRemb:
    """Receiver estimated maximum bitrate (PT 206, FMT 15, "REMB" tag).

    The wire form is an 18-bit mantissa with a 6-bit exponent, so large bitrates are rounded
    down when serialized.
    """

    sender_ssrc: int
    bitrate_bps: int
    ssrcs: list[int]

    def serialize(self) -> bytes:
        """Encode as one RTCP packet."""
        if self.bitrate_bps < 0:
            raise RtcpError(f"negative REMB bitrate {self.bitrate_bps}")
        if len(self.ssrcs) > 255:
            raise RtcpError(f"too many REMB SSRCs: {len(self.ssrcs)}")
        exponent = max(self.bitrate_bps.bit_length() - 18, 0)
        if exponent > 63:
            raise RtcpError(f"REMB bitrate {self.bitrate_bps} not representable")
        mantissa = self.bitrate_bps >> exponent
        body = (
            _pack(_U32X2, self.sender_ssrc, 0)
            + b"REMB"
            + _U32.pack((len(self.ssrcs) << 24) | (exponent << 18) | mantissa)
            + b"".join(_pack(_U32, s) for s in self.ssrcs)
        )
        return _header(FMT_REMB, PT_PSFB, len(body)) + body


@dataclass(slots=True)
class RtcpUnknown:
    """Any other RTCP packet, kept whole (common header and padding included)."""

    packet_type: int
    fmt: int
    data: bytes

    def serialize(self) -> bytes:
        """Return the original bytes."""
        return self.data


RtcpPacket: TypeAlias = (
    RtcpSenderReport
    | RtcpReceiverReport
    | RtcpSdes
    | RtcpBye
    | RtcpPli
    | RtcpFir
    | RtcpNack
    | RtcpRemb
    | RtcpUnknown
)


def _parse_sr(count: int, body: bytes) -> RtcpSenderReport:
    if len(body) < _SR_INFO.size:
        raise RtcpError(f"sender report too short: {len(body)} bytes")
    ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body, 0)
    reports = _parse_report_blocks(body, _SR_INFO.size, count)
    return RtcpSenderReport(ssrc, ntp, rtp_ts, packets, octets, reports)


def _parse_rr(count: int, body: bytes) -> RtcpReceiverReport:
    if len(body) < 4:
        raise RtcpError(f"receiver report too short: {len(body)} bytes")
    (ssrc,) = _U32.unpack_from(body, 0)
    return RtcpReceiverReport(ssrc, _parse_report_blocks(body, 4, count))


def _parse_sdes(count: int, body: bytes) -> RtcpSdes:
    chunks: list[tuple[int, str]] = []
    pos = 0
    size = len(body)
    for _ in range(count):
        if pos + 4 > size:
            raise RtcpError("truncated SDES chunk")
        (ssrc,) = _U32.unpack_from(body, pos)
        pos += 4
        cname = ""
        while True:
            if pos >= size:
                raise RtcpError("SDES item list is not terminated")
            item_type = body[pos]
            if item_type == SDES_END:
                break
            if pos + 2 > size:
                raise RtcpError("truncated SDES item header")
            item_end = pos + 2 + body[pos + 1]
            if item_end > size:
                raise RtcpError("SDES item overruns the packet")
            if item_type == SDES_CNAME:
                cname = body[pos + 2 : item_end].decode("utf-8", errors="replace")
            pos = item_end
        # Skip the null terminator(s) up to the next 32-bit boundary.
        pos = (pos + 4) & ~3
        chunks.append((ssrc, cname))
    if pos > size:
        raise RtcpError("SDES chunk padding overruns the packet")
    return RtcpSdes(chunks)


def _parse_bye(count: int, body: bytes) -> RtcpBye:
    end = 4 * count
    if end > len(body):
        raise RtcpError(f"BYE with {count} SSRCs does not fit in the packet")
    ssrcs = list(struct.unpack_from(f"!{count}I", body, 0))
    reason = ""
    if end < len(body):
        reason_end = end + 1 + body[end]
        if reason_end > len(body):
            raise RtcpError("BYE reason overruns the packet")
        reason = body[end + 1 : reason_end].decode("utf-8", errors="replace")
    return RtcpBye(ssrcs, reason)


def _parse_rtpfb(fmt: int, body: bytes, whole: bytes) -> RtcpPacket:
    if len(body) < 8:
        raise RtcpError(f"transport feedback too short: {len(body)} bytes")
    if fmt != FMT_NACK:
        return RtcpUnknown(PT_RTPFB, fmt, whole)
    sender, media = _U32X2.unpack_from(body, 0)
    if len(body) % 4:
        raise RtcpError("NACK FCI is not a whole number of 32-bit words")
    lost: list[int] = []
    for pos in range(8, len(body), 4):
        (word,) = _U32.unpack_from(body, pos)
        pid = word >> 16
        blp = word & 0xFFFF
        lost.append(pid)
        bit = 0
        while blp:
            if blp & 1:
                lost.append((pid + bit + 1) & 0xFFFF)
            blp >>= 1
            bit += 1
    return RtcpNack(sender, media, sort_sequence_numbers(lost))


def _parse_psfb(fmt: int, body: bytes, whole: bytes) -> RtcpPacket:
    if len(body) < 8:
        raise RtcpError(f"payload-specific feedback too short: {len(body)} bytes")
    sender, media = _U32X2.unpack_from(body, 0)
    if fmt == FMT_PLI:
        return RtcpPli(sender, media)
    if fmt == FMT_FIR:
        if (len(body) - 8) % 8:
            raise RtcpError("FIR FCI is not a whole number of 8-byte entries")
        entries = []
        for pos in range(8, len(body), 8):
            ssrc, word = _U32X2.unpack_from(body, pos)
            entries.append((ssrc, word >> 24))
        return RtcpFir(sender, entries)
    if fmt == FMT_REMB and body[8:12] == b"REMB":
        if len(body) < 16:
            raise RtcpError("truncated REMB")
        (word,) = _U32.unpack_from(body, 12)
        num = word >> 24
        if 16 + 4 * num > len(body):
            raise RtcpError(f"REMB with {num} SSRCs does not fit in the packet")
        bitrate = (word & 0x3FFFF) << ((word >> 18) & 0x3F)
        ssrcs = list(struct.unpack_from(f"!{num}I", body, 16))
        return RtcpRemb(sender, bitrate, ssrcs)
    return RtcpUnknown(PT_PSFB, fmt, whole)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet; raise :class:`RtcpError` if any part is malformed."""
    if not data:
        raise RtcpError("empty RTCP packet")
    packets: list[RtcpPacket] = []
    pos = 0
    size = len(data)
    while pos < size:
        if pos + 4 > size:
            raise RtcpError(f"truncated RTCP header at offset {pos}")
        b0, packet_type, words = _HEADER.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtcpError(f"unsupported RTCP version {b0 >> 6} at offset {pos}")
        end = pos + 4 * (words + 1)
        if end > size:
            raise RtcpError(
                f"RTCP packet at offset {pos} claims {end - pos} bytes, {size - pos} available"
            )
        count = b0 & 0x1F
        body_end = end
        if b0 & 0x20:
            padding = data[end - 1]
            if padding == 0 or padding > end - pos - 4:
                raise RtcpError(f"invalid RTCP padding count {padding}")
            body_end -= padding
        body = data[pos + 4 : body_end]
        packet: RtcpPacket
        if packet_type == PT_SR:
            packet = _parse_sr(count, body)
        elif packet_type == PT_RR:
            packet = _parse_rr(count, body)
        elif packet_type == PT_SDES:
            packet = _parse_sdes(count, body)
        elif packet_type == PT_BYE:
            packet = _parse_bye(count, body)
        elif packet_type == PT_RTPFB:
            packet = _parse_rtpfb(count, body, data[pos:end])
        elif packet_type == PT_PSFB:
            packet = _parse_psfb(count, body, data[pos:end])
        else:
            packet = RtcpUnknown(packet_type, count, data[pos:end])
        packets.append(packet)
        pos = end
    return packets


def serialize_rtcp(packets: Sequence[RtcpPacket]) -> bytes:
    """Concatenate the packets into one compound packet."""
    return b"".join(p.serialize() for p in packets)


def ntp_timestamp(unix_time_s: float) -> int:
    """Convert Unix time in seconds to a 64-bit NTP timestamp (32.32 fixed point)."""
    seconds = math.floor(unix_time_s)
    fraction = min(int((unix_time_s - seconds) * 0x1_0000_0000), 0xFFFF_FFFF)
    return (((seconds + NTP_UNIX_OFFSET) << 32) | fraction) & 0xFFFF_FFFF_FFFF_FFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as used in the LSR field."""
    return (ntp >> 16) & 0xFFFF_FFFF
