"""SCTP packets (RFC 9260) with the extensions WebRTC data channels use: PR-SCTP's
FORWARD TSN (RFC 3758) and stream reconfiguration (RFC 6525).

Pure codec: `parse_packet` turns bytes into an `SctpPacket` of chunk objects and
`bytes(packet)` turns it back. Every chunk class has `parse(flags, body)` and
`__bytes__` (the chunk without trailing padding; the packet pads between chunks).
Malformed input raises `SctpParseError` and nothing else; a wrong checksum raises
its subclass `SctpChecksumError` so callers can count the two apart.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

import google_crc32c

COMMON_HEADER_SIZE = 12
CHUNK_HEADER_SIZE = 4
DATA_CHUNK_HEADER_SIZE = 16

# Chunk types (RFC 9260 section 3.2, RFC 3758, RFC 6525).
CHUNK_DATA = 0
CHUNK_INIT = 1
CHUNK_INIT_ACK = 2
CHUNK_SACK = 3
CHUNK_HEARTBEAT = 4
CHUNK_HEARTBEAT_ACK = 5
CHUNK_ABORT = 6
CHUNK_SHUTDOWN = 7
CHUNK_SHUTDOWN_ACK = 8
CHUNK_ERROR = 9
CHUNK_COOKIE_ECHO = 10
CHUNK_COOKIE_ACK = 11
CHUNK_SHUTDOWN_COMPLETE = 14
CHUNK_RECONFIG = 130
CHUNK_FORWARD_TSN = 192

# DATA chunk flags (RFC 9260 section 3.3.1).
DATA_FLAG_END = 0x01
DATA_FLAG_BEGIN = 0x02
DATA_FLAG_UNORDERED = 0x04
DATA_FLAG_IMMEDIATE = 0x08

# The T bit of ABORT and SHUTDOWN COMPLETE: the verification tag is the peer's own.
FLAG_T = 0x01

# Parameter types (RFC 9260 section 3.3.2 and 3.3.3, RFC 3758, RFC 5061, RFC 6525).
PARAM_HEARTBEAT_INFO = 0x0001
PARAM_IPV4_ADDRESS = 0x0005
PARAM_IPV6_ADDRESS = 0x0006
PARAM_STATE_COOKIE = 0x0007
PARAM_UNRECOGNIZED = 0x0008
PARAM_COOKIE_PRESERVATIVE = 0x0009
PARAM_HOST_NAME_ADDRESS = 0x000B
PARAM_SUPPORTED_ADDRESS_TYPES = 0x000C
PARAM_ECN_CAPABLE = 0x8000
PARAM_OUTGOING_SSN_RESET = 0x000D
PARAM_INCOMING_SSN_RESET = 0x000E
PARAM_RECONFIG_RESPONSE = 0x0010
PARAM_ADD_OUTGOING_STREAMS = 0x0011
PARAM_SUPPORTED_EXTENSIONS = 0x8008
PARAM_FORWARD_TSN_SUPPORTED = 0xC000

# Error causes (RFC 9260 section 3.3.10).
CAUSE_INVALID_STREAM = 0x0001
CAUSE_STALE_COOKIE = 0x0003
CAUSE_UNRECOGNIZED_CHUNK = 0x0006
CAUSE_NO_USER_DATA = 0x0009
CAUSE_PROTOCOL_VIOLATION = 0x000D
CAUSE_USER_INITIATED_ABORT = 0x000C

# RE-CONFIG response results (RFC 6525 section 4.4).
RECONFIG_SUCCESS_NOTHING_TO_DO = 0
RECONFIG_SUCCESS_PERFORMED = 1
RECONFIG_DENIED = 2
RECONFIG_ERROR_WRONG_SSN = 3
RECONFIG_ERROR_REQUEST_IN_PROGRESS = 4
RECONFIG_ERROR_BAD_SEQUENCE_NUMBER = 5
RECONFIG_IN_PROGRESS = 6

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_HEADER = struct.Struct("!HHI")
_CHUNK_HEADER = struct.Struct("!BBH")
_DATA_HEADER = struct.Struct("!BBHIHHI")
_INIT_BODY = struct.Struct("!IIHHI")
_SACK_BODY = struct.Struct("!IIHH")
_GAP = struct.Struct("!HH")
_TSN_PAIR = struct.Struct("!HH")
_CRC = struct.Struct("<I")
_DATA_FIELDS = struct.Struct("!IHHI")
_ZERO_CRC = b"\x00\x00\x00\x00"
_PADDING = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")


class SctpParseError(ValueError):
    """Malformed SCTP packet, chunk or parameter."""

    code = "bad_sctp"


class SctpChecksumError(SctpParseError):
    """The CRC32c of a packet does not match its contents."""

    code = "bad_sctp_checksum"


def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli) as SCTP computes it (RFC 9260 appendix A)."""
    return int(google_crc32c.value(data))


def _pad_len(length: int) -> int:
    return (4 - length % 4) % 4


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise SctpParseError(f"{what}: {len(body)} bytes, need {size}")


def parse_tlvs(data: bytes, what: str = "parameter") -> list[tuple[int, bytes]]:
    """Type-length-value parameters or error causes, each padded to 4 bytes."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise SctpParseError(f"{what}: truncated header at offset {pos}")
        kind, length = _GAP.unpack_from(data, pos)
        if length < 4 or pos + length > end:
            raise SctpParseError(f"{what} 0x{kind:04x}: bad length {length}")
        out.append((kind, bytes(data[pos + 4 : pos + length])))
        pos += length + _pad_len(length)
    return out


def serialize_tlvs(items: list[tuple[int, bytes]]) -> bytes:
    """Inverse of `parse_tlvs`; every item is padded, the last one too."""
    parts: list[bytes] = []
    for kind, value in items:
        length = 4 + len(value)
        parts.append(_GAP.pack(kind, length) + value + b"\x00" * _pad_len(length))
    return b"".join(parts)


def _chunk(chunk_type: int, flags: int, body: bytes) -> bytes:
    return _CHUNK_HEADER.pack(chunk_type, flags, CHUNK_HEADER_SIZE + len(body)) + body


@dataclass(slots=True)
class DataChunk:
    """DATA (RFC 9260 section 3.3.1): one fragment of a user message."""

    TYPE: ClassVar[int] = CHUNK_DATA
    tsn: int
    stream_id: int
    ssn: int
    ppid: int
    user_data: bytes
    flags: int = DATA_FLAG_BEGIN | DATA_FLAG_END

    @classmethod
    def parse(cls, flags: int, body: bytes) -> DataChunk:
        _need(body, 12, "DATA")
        if len(body) == 12:
            raise SctpParseError("DATA: no user data")
        tsn, stream_id, ssn, ppid = struct.unpack_from("!IHHI", body)
        return cls(tsn, stream_id, ssn, ppid, bytes(body[12:]), flags)

    def __bytes__(self) -> bytes:
        return serialize_data_chunk(
            self.tsn, self.stream_id, self.ssn, self.ppid, self.user_data, self.flags
        )


def serialize_data_chunk(
    tsn: int, stream_id: int, ssn: int, ppid: int, user_data: bytes, flags: int
) -> bytes:
    """`bytes(DataChunk(...))` without building the object (the send path's hot spot)."""
    header = _DATA_HEADER.pack(
        CHUNK_DATA, flags, DATA_CHUNK_HEADER_SIZE + len(user_data), tsn, stream_id, ssn, ppid
    )
    return header + user_data


@dataclass(slots=True)
class InitChunk:
    """INIT (RFC 9260 section 3.3.2)."""

    TYPE: ClassVar[int] = CHUNK_INIT
    initiate_tag: int
    a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    initial_tsn: int
    params: list[tuple[int, bytes]] = field(default_factory=list)
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> InitChunk:
        _need(body, 16, "INIT")
        tag, rwnd, ostreams, istreams, tsn = _INIT_BODY.unpack_from(body)
        if tag == 0:
            raise SctpParseError("INIT: initiate tag is zero")
        if ostreams == 0 or istreams == 0:
            raise SctpParseError("INIT: zero streams")
        return cls(tag, rwnd, ostreams, istreams, tsn, parse_tlvs(body[16:]), flags)

    def __bytes__(self) -> bytes:
        body = _INIT_BODY.pack(
            self.initiate_tag,
            self.a_rwnd,
            self.outbound_streams,
            self.inbound_streams,
            self.initial_tsn,
        )
        return _chunk(self.TYPE, self.flags, body + serialize_tlvs(self.params))

    def param(self, kind: int) -> bytes | None:
        """The first parameter of a type, or None."""
        for k, v in self.params:
            if k == kind:
                return v
        return None


@dataclass(slots=True)
class InitAckChunk(InitChunk):
    """INIT ACK (RFC 9260 section 3.3.3); carries the STATE COOKIE parameter."""

    TYPE: ClassVar[int] = CHUNK_INIT_ACK

    @classmethod
    def parse(cls, flags: int, body: bytes) -> InitAckChunk:
        init = InitChunk.parse(flags, body)
        return cls(
            init.initiate_tag,
            init.a_rwnd,
            init.outbound_streams,
            init.inbound_streams,
            init.initial_tsn,
            init.params,
            flags,
        )


@dataclass(slots=True)
class SackChunk:
    """SACK (RFC 9260 section 3.3.4). Gap blocks are (start, end) offsets from the
    cumulative TSN ack, as on the wire."""

    TYPE: ClassVar[int] = CHUNK_SACK
    cumulative_tsn_ack: int
    a_rwnd: int
    gaps: list[tuple[int, int]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> SackChunk:
        _need(body, 12, "SACK")
        cum, rwnd, ngaps, ndups = _SACK_BODY.unpack_from(body)
        if len(body) != 12 + 4 * ngaps + 4 * ndups:
            raise SctpParseError(f"SACK: length {len(body)} for {ngaps} gaps, {ndups} dups")
        gaps = [_GAP.unpack_from(body, 12 + 4 * i) for i in range(ngaps)]
        base = 12 + 4 * ngaps
        dups = [_U32.unpack_from(body, base + 4 * i)[0] for i in range(ndups)]
        return cls(cum, rwnd, gaps, dups, flags)

    def __bytes__(self) -> bytes:
        body = [
            _SACK_BODY.pack(
                self.cumulative_tsn_ack, self.a_rwnd, len(self.gaps), len(self.duplicates)
            )
        ]
        body.extend(_GAP.pack(s, e) for s, e in self.gaps)
        body.extend(_U32.pack(d) for d in self.duplicates)
        return _chunk(self.TYPE, self.flags, b"".join(body))


@dataclass(slots=True)
class HeartbeatChunk:
    """HEARTBEAT (RFC 9260 section 3.3.5): sender-specific info the peer echoes."""

    TYPE: ClassVar[int] = CHUNK_HEARTBEAT
    params: list[tuple[int, bytes]] = field(default_factory=list)
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> HeartbeatChunk:
        return cls(parse_tlvs(body), flags)

    def __bytes__(self) -> bytes:
        return _chunk(self.TYPE, self.flags, serialize_tlvs(self.params))


@dataclass(slots=True)
class HeartbeatAckChunk(HeartbeatChunk):
    """HEARTBEAT ACK (RFC 9260 section 3.3.6)."""

    TYPE: ClassVar[int] = CHUNK_HEARTBEAT_ACK

    @classmethod
    def parse(cls, flags: int, body: bytes) -> HeartbeatAckChunk:
        return cls(parse_tlvs(body), flags)


@dataclass(slots=True)
class AbortChunk:
    """ABORT (RFC 9260 section 3.3.7) with its error causes."""

    TYPE: ClassVar[int] = CHUNK_ABORT
    causes: list[tuple[int, bytes]] = field(default_factory=list)
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> AbortChunk:
        return cls(parse_tlvs(body, "error cause"), flags)

    def __bytes__(self) -> bytes:
        return _chunk(self.TYPE, self.flags, serialize_tlvs(self.causes))


@dataclass(slots=True)
class ErrorChunk(AbortChunk):
    """ERROR (RFC 9260 section 3.3.10)."""

    TYPE: ClassVar[int] = CHUNK_ERROR

    @classmethod
    def parse(cls, flags: int, body: bytes) -> ErrorChunk:
        return cls(parse_tlvs(body, "error cause"), flags)


@dataclass(slots=True)
class ShutdownChunk:
    """SHUTDOWN (RFC 9260 section 3.3.8)."""

    TYPE: ClassVar[int] = CHUNK_SHUTDOWN
    cumulative_tsn_ack: int
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> ShutdownChunk:
        if len(body) != 4:
            raise SctpParseError(f"SHUTDOWN: length {len(body)}")
        return cls(_U32.unpack(body)[0], flags)

    def __bytes__(self) -> bytes:
        return _chunk(self.TYPE, self.flags, _U32.pack(self.cumulative_tsn_ack))


@dataclass(slots=True)
class _EmptyChunk:
    flags: int = 0
    TYPE: ClassVar[int] = -1

    def __bytes__(self) -> bytes:
        return _chunk(self.TYPE, self.flags, b"")


@dataclass(slots=True)
class ShutdownAckChunk(_EmptyChunk):
    """SHUTDOWN ACK (RFC 9260 section 3.3.9)."""

    TYPE: ClassVar[int] = CHUNK_SHUTDOWN_ACK

    @classmethod
    def parse(cls, flags: int, body: bytes) -> ShutdownAckChunk:
        return cls(flags)


@dataclass(slots=True)
class CookieAckChunk(_EmptyChunk):
    """COOKIE ACK (RFC 9260 section 3.3.12)."""

    TYPE: ClassVar[int] = CHUNK_COOKIE_ACK

    @classmethod
    def parse(cls, flags: int, body: bytes) -> CookieAckChunk:
        return cls(flags)


@dataclass(slots=True)
class ShutdownCompleteChunk(_EmptyChunk):
    """SHUTDOWN COMPLETE (RFC 9260 section 3.3.13)."""

    TYPE: ClassVar[int] = CHUNK_SHUTDOWN_COMPLETE

    @classmethod
    def parse(cls, flags: int, body: bytes) -> ShutdownCompleteChunk:
        return cls(flags)


@dataclass(slots=True)
class CookieEchoChunk:
    """COOKIE ECHO (RFC 9260 section 3.3.11): the state cookie, opaque here."""

    TYPE: ClassVar[int] = CHUNK_COOKIE_ECHO
    cookie: bytes
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> CookieEchoChunk:
        return cls(bytes(body), flags)

    def __bytes__(self) -> bytes:
        return _chunk(self.TYPE, self.flags, self.cookie)


@dataclass(slots=True)
class ForwardTsnChunk:
    """FORWARD TSN (RFC 3758 section 3.2): (stream id, ssn) pairs of ordered streams."""

    TYPE: ClassVar[int] = CHUNK_FORWARD_TSN
    new_cumulative_tsn: int
    streams: list[tuple[int, int]] = field(default_factory=list)
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> ForwardTsnChunk:
        _need(body, 4, "FORWARD TSN")
        if len(body) % 4:
            raise SctpParseError(f"FORWARD TSN: length {len(body)}")
        streams = [_TSN_PAIR.unpack_from(body, i) for i in range(4, len(body), 4)]
        return cls(_U32.unpack_from(body)[0], streams, flags)

    def __bytes__(self) -> bytes:
        body = [_U32.pack(self.new_cumulative_tsn)]
        body.extend(_TSN_PAIR.pack(s, n) for s, n in self.streams)
        return _chunk(self.TYPE, self.flags, b"".join(body))


@dataclass(slots=True)
class OutgoingSsnResetRequest:
    """Outgoing SSN Reset Request parameter (RFC 6525 section 4.1). No streams means all."""

    request_seq: int
    response_seq: int
    last_tsn: int
    streams: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, value: bytes) -> OutgoingSsnResetRequest:
        if len(value) < 12 or len(value) % 2:
            raise SctpParseError(f"outgoing SSN reset request: length {len(value)}")
        req, resp, last = struct.unpack_from("!III", value)
        streams = [_U16.unpack_from(value, i)[0] for i in range(12, len(value), 2)]
        return cls(req, resp, last, streams)

    def to_tlv(self) -> tuple[int, bytes]:
        value = struct.pack("!III", self.request_seq, self.response_seq, self.last_tsn)
        return PARAM_OUTGOING_SSN_RESET, value + b"".join(_U16.pack(s) for s in self.streams)


@dataclass(slots=True)
class IncomingSsnResetRequest:
    """Incoming SSN Reset Request parameter (RFC 6525 section 4.2)."""

    request_seq: int
    streams: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, value: bytes) -> IncomingSsnResetRequest:
        if len(value) < 4 or len(value) % 2:
            raise SctpParseError(f"incoming SSN reset request: length {len(value)}")
        streams = [_U16.unpack_from(value, i)[0] for i in range(4, len(value), 2)]
        return cls(_U32.unpack_from(value)[0], streams)

    def to_tlv(self) -> tuple[int, bytes]:
        value = _U32.pack(self.request_seq) + b"".join(_U16.pack(s) for s in self.streams)
        return PARAM_INCOMING_SSN_RESET, value


@dataclass(slots=True)
class ReconfigResponse:
    """Re-configuration Response parameter (RFC 6525 section 4.4)."""

    response_seq: int
    result: int
    sender_next_tsn: int | None = None
    receiver_next_tsn: int | None = None

    @classmethod
    def parse(cls, value: bytes) -> ReconfigResponse:
        if len(value) == 8:
            return cls(*struct.unpack("!II", value))
        if len(value) == 16:
            seq, result, snd, rcv = struct.unpack("!IIII", value)
            return cls(seq, result, snd, rcv)
        raise SctpParseError(f"re-config response: length {len(value)}")

    def to_tlv(self) -> tuple[int, bytes]:
        value = struct.pack("!II", self.response_seq, self.result)
        if self.sender_next_tsn is not None and self.receiver_next_tsn is not None:
            value += struct.pack("!II", self.sender_next_tsn, self.receiver_next_tsn)
        return PARAM_RECONFIG_RESPONSE, value


ReconfigParam = (
    OutgoingSsnResetRequest | IncomingSsnResetRequest | ReconfigResponse | tuple[int, bytes]
)


@dataclass(slots=True)
class ReconfigChunk:
    """RE-CONFIG (RFC 6525 section 3.1). Parameters it does not model stay raw tuples."""

    TYPE: ClassVar[int] = CHUNK_RECONFIG
    params: list[ReconfigParam] = field(default_factory=list)
    flags: int = 0

    @classmethod
    def parse(cls, flags: int, body: bytes) -> ReconfigChunk:
        params: list[ReconfigParam] = []
        for kind, value in parse_tlvs(body):
            if kind == PARAM_OUTGOING_SSN_RESET:
                params.append(OutgoingSsnResetRequest.parse(value))
            elif kind == PARAM_INCOMING_SSN_RESET:
                params.append(IncomingSsnResetRequest.parse(value))
            elif kind == PARAM_RECONFIG_RESPONSE:
                params.append(ReconfigResponse.parse(value))
            else:
                params.append((kind, value))
        if not params or len(params) > 2:
            raise SctpParseError(f"RE-CONFIG: {len(params)} parameters")
        return cls(params, flags)

    def __bytes__(self) -> bytes:
        tlvs = [p if isinstance(p, tuple) else p.to_tlv() for p in self.params]
        return _chunk(self.TYPE, self.flags, serialize_tlvs(tlvs))


@dataclass(slots=True)
class UnknownChunk:
    """A chunk type this codec does not model, kept raw so the receiver can act on
    its upper two bits (RFC 9260 section 3.2)."""

    chunk_type: int
    body: bytes
    flags: int = 0

    def __bytes__(self) -> bytes:
        return _chunk(self.chunk_type, self.flags, self.body)

    @property
    def stop_processing(self) -> bool:
        """Upper bit clear: stop processing the packet and discard it."""
        return not self.chunk_type & 0x80

    @property
    def report(self) -> bool:
        """Second bit set: report it in an ERROR with "Unrecognized Chunk Type"."""
        return bool(self.chunk_type & 0x40)


Chunk = (
    DataChunk
    | InitChunk
    | InitAckChunk
    | SackChunk
    | HeartbeatChunk
    | HeartbeatAckChunk
    | AbortChunk
    | ErrorChunk
    | ShutdownChunk
    | ShutdownAckChunk
    | CookieEchoChunk
    | CookieAckChunk
    | ShutdownCompleteChunk
    | ForwardTsnChunk
    | ReconfigChunk
    | UnknownChunk
)

_CHUNK_CLASSES: dict[int, type[Chunk]] = {
    cls.TYPE: cls
    for cls in (
        DataChunk,
        InitChunk,
        InitAckChunk,
        SackChunk,
        HeartbeatChunk,
        HeartbeatAckChunk,
        AbortChunk,
        ErrorChunk,
        ShutdownChunk,
        ShutdownAckChunk,
        CookieEchoChunk,
        CookieAckChunk,
        ShutdownCompleteChunk,
        ForwardTsnChunk,
        ReconfigChunk,
    )
}


def parse_chunk(chunk_type: int, flags: int, body: bytes) -> Chunk:
    """One chunk from its type, flags and body (the bytes after the 4-byte header)."""
    cls = _CHUNK_CLASSES.get(chunk_type)
    if cls is None:
        return UnknownChunk(chunk_type, bytes(body), flags)
    try:
        return cls.parse(flags, body)  # type: ignore[union-attr]
    except struct.error as exc:  # defensive: every length is checked first
        raise SctpParseError(f"chunk {chunk_type}: {exc}") from exc


@dataclass(slots=True)
class SctpPacket:
    """An SCTP packet: common header and chunks. `bytes()` computes the checksum."""

    source_port: int
    destination_port: int
    verification_tag: int
    chunks: list[Chunk] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        return serialize_packet(
            self.source_port,
            self.destination_port,
            self.verification_tag,
            [bytes(c) for c in self.chunks],
        )


def serialize_packet(
    source_port: int, destination_port: int, verification_tag: int, chunks: list[bytes]
) -> bytes:
    """A packet from already serialized chunks, padded and with its CRC32c."""
    header = _HEADER.pack(source_port, destination_port, verification_tag)
    if len(chunks) == 1 and not len(chunks[0]) & 3:
        body = chunks[0]  # the common case: one DATA or SACK chunk, no padding
    else:
        parts = []
        for raw in chunks:
            parts.append(raw)
            pad = -len(raw) & 3
            if pad:
                parts.append(_PADDING[pad])
        body = b"".join(parts)
    # The checksum is computed over the packet with a zero checksum field, and stored
    # least significant byte first (RFC 9260 appendix A).
    crc = google_crc32c.extend(google_crc32c.value(header + _ZERO_CRC), body)
    return header + _CRC.pack(crc) + body


def verify_checksum(data: bytes) -> bool:
    """Whether the CRC32c in a packet's common header matches its contents."""
    if len(data) < COMMON_HEADER_SIZE:
        return False
    expected: int = struct.unpack_from("<I", data, 8)[0]
    return crc32c(data[:8] + b"\x00\x00\x00\x00" + data[12:]) == expected


def parse_packet(data: bytes, *, check_crc: bool = True) -> SctpPacket:
    """Parse one SCTP packet; raises SctpParseError (SctpChecksumError on a bad CRC)."""
    if len(data) < COMMON_HEADER_SIZE + CHUNK_HEADER_SIZE:
        raise SctpParseError(f"packet of {len(data)} bytes is too short")
    if check_crc and not verify_checksum(data):
        raise SctpChecksumError("CRC32c mismatch")
    src, dst, vtag = _HEADER.unpack_from(data)
    chunks: list[Chunk] = []
    pos = COMMON_HEADER_SIZE
    end = len(data)
    while pos < end:
        if end - pos < CHUNK_HEADER_SIZE:
            # Trailing padding of the last chunk is tolerated, anything else is not.
            if any(data[pos:end]):
                raise SctpParseError(f"truncated chunk header at offset {pos}")
            break
        chunk_type, flags, length = _CHUNK_HEADER.unpack_from(data, pos)
        if length < CHUNK_HEADER_SIZE or pos + length > end:
            raise SctpParseError(f"chunk {chunk_type} at offset {pos}: bad length {length}")
        if chunk_type == CHUNK_DATA and length > DATA_CHUNK_HEADER_SIZE:
            # The common chunk, parsed in place (what DataChunk.parse does, one copy less).
            tsn, stream_id, ssn, ppid = _DATA_FIELDS.unpack_from(data, pos + CHUNK_HEADER_SIZE)
            user_data = bytes(data[pos + DATA_CHUNK_HEADER_SIZE : pos + length])
            chunks.append(DataChunk(tsn, stream_id, ssn, ppid, user_data, flags))
        else:
            body = data[pos + CHUNK_HEADER_SIZE : pos + length]
            chunks.append(parse_chunk(chunk_type, flags, body))
        pos += length + _pad_len(length)
    if not chunks:
        raise SctpParseError("packet without chunks")
    return SctpPacket(src, dst, vtag, chunks)
