"""RTP packet parsing and rewriting (RFC 3550) with header extensions (RFC 8285).

The hot path of the forwarder uses :func:`parse_rtp_header`, :func:`get_header_extension`
and :func:`rewrite_rtp`, which work on offsets into the original buffer and avoid building
intermediate objects. :class:`RtpPacket` is a convenient, fully decoded form for tests,
tools and code that is not performance sensitive.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

__all__ = [
    "ONE_BYTE_PROFILE",
    "TWO_BYTE_PROFILE",
    "RtpError",
    "RtpHeader",
    "RtpPacket",
    "build_extension_block",
    "get_header_extension",
    "is_rtcp_packet_type",
    "iter_header_extensions",
    "parse_rtp_header",
    "rewrite_rtp",
]

RTP_VERSION = 2
FIXED_HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000
# The low 4 bits of the two-byte profile ("appbits") are application defined.
_TWO_BYTE_PROFILE_MASK = 0xFFF0

_FIXED = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """Malformed RTP. code = "bad_rtp"."""

    code = "bad_rtp"


@dataclass(slots=True)
class RtpHeader:
    """Fixed-header fields and layout offsets of one RTP packet."""

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    header_size: int
    padding_size: int
    extension_profile: int
    extension_offset: int
    extension_length: int


def is_rtcp_packet_type(byte1: int) -> bool:
    """Tell RTCP from RTP on a muxed port by the second byte (RFC 5761 section 4)."""
    return 192 <= byte1 <= 223


def parse_rtp_header(data: bytes) -> RtpHeader:
    """Validate the RTP framing of ``data`` and return its header view."""
    size = len(data)
    if size < FIXED_HEADER_SIZE:
        raise RtpError(f"RTP packet too short: {size} bytes")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"unsupported RTP version {b0 >> 6}")
    offset = FIXED_HEADER_SIZE + 4 * (b0 & 0x0F)
    if offset > size:
        raise RtpError(f"CSRC list ({b0 & 0x0F} entries) exceeds packet size {size}")
    profile = 0
    ext_offset = 0
    ext_length = 0
    if b0 & 0x10:
        if offset + 4 > size:
            raise RtpError("truncated RTP header extension header")
        profile, words = _EXT_HEADER.unpack_from(data, offset)
        ext_offset = offset + 4
        ext_length = 4 * words
        offset = ext_offset + ext_length
        if offset > size:
            raise RtpError(f"RTP header extension ({ext_length} bytes) exceeds packet size")
    padding = 0
    if b0 & 0x20:
        if size == offset:
            raise RtpError("padding bit set but no padding count byte")
        padding = data[-1]
        if padding == 0:
            raise RtpError("padding bit set with a zero padding count")
        if padding > size - offset:
            raise RtpError(f"padding count {padding} exceeds payload size {size - offset}")
    return RtpHeader(
        payload_type=b1 & 0x7F,
        marker=bool(b1 & 0x80),
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        header_size=offset,
        padding_size=padding,
        extension_profile=profile,
        extension_offset=ext_offset,
        extension_length=ext_length,
    )


def iter_header_extensions(data: bytes, header: RtpHeader) -> Iterator[tuple[int, bytes]]:
    """Yield ``(id, value)`` for every element of the extension block, in wire order.

    Blocks with a profile other than the RFC 8285 one-byte or two-byte forms yield nothing.
    """
    start = header.extension_offset
    if start == 0:
        return
    end = start + header.extension_length
    profile = header.extension_profile
    pos = start
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            ext_id = b >> 4
            if ext_id == 0:
                # Padding. Some senders leave a length nibble on it; tolerate that rather than fail.
                pos += 1
                continue
            if ext_id == 15:
                # Reserved id: RFC 8285 says stop processing the block here.
                return
            value_end = pos + 2 + (b & 0x0F)
            if value_end > end:
                raise RtpError(f"one-byte header extension {ext_id} overruns the block")
            yield ext_id, data[pos + 1 : value_end]
            pos = value_end
    elif profile & _TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos < end:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise RtpError(f"two-byte header extension {ext_id} has no length byte")
            value_end = pos + 2 + data[pos + 1]
            if value_end > end:
                raise RtpError(f"two-byte header extension {ext_id} overruns the block")
            yield ext_id, data[pos + 2 : value_end]
            pos = value_end


def get_header_extension(data: bytes, header: RtpHeader, ext_id: int) -> bytes | None:
    """Return the value of the first extension element with ``ext_id``, or None."""
    for found_id, value in iter_header_extensions(data, header):
        if found_id == ext_id:
            return value
    return None


def build_extension_block(extensions: Mapping[int, bytes] | None) -> bytes:
    """Encode a complete extension block (4-byte header included), or b"" if empty.

    The one-byte form is used when every id is 1..14 and every value 1..16 bytes long,
    otherwise the two-byte form (ids 1..255, values 0..255 bytes).
    """
    if not extensions:
        return b""
    one_byte = all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in extensions.items())
    parts: list[bytes] = []
    if one_byte:
        profile = ONE_BYTE_PROFILE
        for ext_id, value in extensions.items():
            parts.append(bytes(((ext_id << 4) | (len(value) - 1),)))
            parts.append(value)
    else:
        profile = TWO_BYTE_PROFILE
        for ext_id, value in extensions.items():
            if not 1 <= ext_id <= 255:
                raise RtpError(f"header extension id {ext_id} out of range 1..255")
            if len(value) > 255:
                raise RtpError(f"header extension {ext_id} value too long ({len(value)} bytes)")
            parts.append(bytes((ext_id, len(value))))
            parts.append(value)
    body = b"".join(parts)
    pad = -len(body) % 4
    return _EXT_HEADER.pack(profile, (len(body) + pad) // 4) + body + b"\x00" * pad


def rewrite_rtp(
    data: bytes,
    header: RtpHeader,
    *,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    extensions: Mapping[int, bytes] | None = None,
) -> bytes:
    """Return a new packet with new PT/seq/ts/SSRC and the extension block replaced.

    Version, padding bit, marker, CSRCs, payload and padding are kept. The numeric fields are
    taken modulo their field width so callers can add offsets without wrapping by hand.
    """
    ext_block = build_extension_block(extensions)
    csrc_end = FIXED_HEADER_SIZE + 4 * (data[0] & 0x0F)
    b0 = (data[0] & 0xEF) | (0x10 if ext_block else 0)
    b1 = (data[1] & 0x80) | (payload_type & 0x7F)
    fixed = _FIXED.pack(b0, b1, sequence_number & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    view = memoryview(data)
    return b"".join(
        (fixed, view[FIXED_HEADER_SIZE:csrc_end], ext_block, view[header.header_size :])
    )


@dataclass(slots=True)
class RtpPacket:
    """A fully decoded RTP packet; extension blocks of non-RFC 8285 profiles are dropped."""

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: list[int] = field(default_factory=list)
    extensions: dict[int, bytes] = field(default_factory=dict)
    payload: bytes = b""
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Decode ``data``; raise :class:`RtpError` if it is malformed."""
        header = parse_rtp_header(data)
        count = data[0] & 0x0F
        csrcs = list(struct.unpack_from(f"!{count}I", data, FIXED_HEADER_SIZE))
        extensions: dict[int, bytes] = {}
        for ext_id, value in iter_header_extensions(data, header):
            # The first occurrence wins, matching get_header_extension.
            extensions.setdefault(ext_id, value)
        return cls(
            payload_type=header.payload_type,
            marker=header.marker,
            sequence_number=header.sequence_number,
            timestamp=header.timestamp,
            ssrc=header.ssrc,
            csrcs=csrcs,
            extensions=extensions,
            payload=data[header.header_size : len(data) - header.padding_size],
            padding_size=header.padding_size,
        )

    def serialize(self) -> bytes:
        """Encode the packet; padding bytes are zeros followed by the count byte."""
        if len(self.csrcs) > 15:
            raise RtpError(f"too many CSRCs: {len(self.csrcs)}")
        if not 0 <= self.padding_size <= 255:
            raise RtpError(f"padding size {self.padding_size} out of range 0..255")
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range 0..127")
        ext_block = build_extension_block(self.extensions)
        b0 = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding_size else 0)
            | (0x10 if ext_block else 0)
            | len(self.csrcs)
        )
        b1 = (0x80 if self.marker else 0) | self.payload_type
        try:
            fixed = _FIXED.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)
            csrcs = struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        except struct.error as exc:
            raise RtpError(f"RTP field out of range: {exc}") from exc
        padding = b""
        if self.padding_size:
            padding = b"\x00" * (self.padding_size - 1) + bytes((self.padding_size,))
        return b"".join((fixed, csrcs, ext_block, self.payload, padding))

    __bytes__ = serialize
