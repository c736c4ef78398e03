"""Data Channel Establishment Protocol (RFC 8832) and the payload protocol
identifiers of WebRTC data channels (RFC 8831 section 8).

`DataChannelOpen` and `DataChannelAck` are the two DCEP messages; `ChannelParameters`
is what a channel promises about ordering and reliability. The SCTP association
(`sfu.proto.sctp`) sends and answers them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Payload protocol identifiers (RFC 8831 section 8).
PPID_DCEP = 50
PPID_STRING = 51
PPID_BINARY = 53
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57

# DCEP message types (RFC 8832 section 8.2.1).
DATA_CHANNEL_ACK = 0x02
DATA_CHANNEL_OPEN = 0x03

# Channel types (RFC 8832 section 5.1); the 0x80 bit means unordered.
CHANNEL_RELIABLE = 0x00
CHANNEL_PARTIAL_RELIABLE_REXMIT = 0x01
CHANNEL_PARTIAL_RELIABLE_TIMED = 0x02
CHANNEL_UNORDERED = 0x80

# Priorities of the OPEN message (RFC 8832 section 5.1, W3C priority mapping).
DCEP_PRIORITY_BELOW_NORMAL = 128
DCEP_PRIORITY_NORMAL = 256
DCEP_PRIORITY_HIGH = 512
DCEP_PRIORITY_EXTRA_HIGH = 1024

_OPEN_HEADER = struct.Struct("!BBHIHH")


class DcepError(ValueError):
    """Malformed DCEP message."""

    code = "bad_dcep"


@dataclass(frozen=True, slots=True)
class ChannelParameters:
    """Ordering and reliability of a channel. At most one of `max_retransmits` and
    `lifetime_ms` is set; neither means fully reliable."""

    label: str = ""
    protocol: str = ""
    ordered: bool = True
    max_retransmits: int | None = None
    lifetime_ms: int | None = None
    priority: int = DCEP_PRIORITY_NORMAL

    def __post_init__(self) -> None:
        if self.max_retransmits is not None and self.lifetime_ms is not None:
            raise ValueError("max_retransmits and lifetime_ms are mutually exclusive")
        for name, value in (
            ("max_retransmits", self.max_retransmits),
            ("lifetime_ms", self.lifetime_ms),
        ):
            if value is not None and not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name} out of range: {value}")

    @property
    def channel_type(self) -> int:
        if self.max_retransmits is not None:
            kind = CHANNEL_PARTIAL_RELIABLE_REXMIT
        elif self.lifetime_ms is not None:
            kind = CHANNEL_PARTIAL_RELIABLE_TIMED
        else:
            kind = CHANNEL_RELIABLE
        return kind if self.ordered else kind | CHANNEL_UNORDERED

    @property
    def reliability_parameter(self) -> int:
        if self.max_retransmits is not None:
            return self.max_retransmits
        if self.lifetime_ms is not None:
            return self.lifetime_ms
        return 0


@dataclass(frozen=True, slots=True)
class DataChannelOpen:
    """DATA_CHANNEL_OPEN (RFC 8832 section 5.1)."""

    channel_type: int
    priority: int
    reliability_parameter: int
    label: str
    protocol: str

    @classmethod
    def from_parameters(cls, params: ChannelParameters) -> DataChannelOpen:
        return cls(
            params.channel_type,
            params.priority,
            params.reliability_parameter,
            params.label,
            params.protocol,
        )

    def parameters(self) -> ChannelParameters:
        """What the opener asked for. Unknown reliability kinds are taken as reliable."""
        kind = self.channel_type & 0x7F
        return ChannelParameters(
            label=self.label,
            protocol=self.protocol,
            ordered=not self.channel_type & CHANNEL_UNORDERED,
            max_retransmits=(
                self.reliability_parameter if kind == CHANNEL_PARTIAL_RELIABLE_REXMIT else None
            ),
            lifetime_ms=(
                self.reliability_parameter if kind == CHANNEL_PARTIAL_RELIABLE_TIMED else None
            ),
            priority=self.priority,
        )

    @classmethod
    def parse(cls, data: bytes) -> DataChannelOpen:
        if len(data) < _OPEN_HEADER.size:
            raise DcepError(f"DATA_CHANNEL_OPEN of {len(data)} bytes is too short")
        mtype, ctype, priority, rel, label_len, proto_len = _OPEN_HEADER.unpack_from(data)
        if mtype != DATA_CHANNEL_OPEN:
            raise DcepError(f"message type {mtype} is not DATA_CHANNEL_OPEN")
        end = _OPEN_HEADER.size + label_len + proto_len
        if len(data) != end:
            raise DcepError(f"DATA_CHANNEL_OPEN length {len(data)}, expected {end}")
        try:
            label = data[_OPEN_HEADER.size : _OPEN_HEADER.size + label_len].decode("utf-8")
            protocol = data[_OPEN_HEADER.size + label_len : end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DcepError(f"DATA_CHANNEL_OPEN label or protocol: {exc}") from exc
        return cls(ctype, priority, rel, label, protocol)

    def __bytes__(self) -> bytes:
        label = self.label.encode("utf-8")
        protocol = self.protocol.encode("utf-8")
        header = _OPEN_HEADER.pack(
            DATA_CHANNEL_OPEN,
            self.channel_type,
            self.priority,
            self.reliability_parameter,
            len(label),
            len(protocol),
        )
        return header + label + protocol


@dataclass(frozen=True, slots=True)
class DataChannelAck:
    """DATA_CHANNEL_ACK (RFC 8832 section 5.2)."""

    @classmethod
    def parse(cls, data: bytes) -> DataChannelAck:
        if not data or data[0] != DATA_CHANNEL_ACK:
            raise DcepError("not a DATA_CHANNEL_ACK")
        return cls()

    def __bytes__(self) -> bytes:
        return bytes([DATA_CHANNEL_ACK])


def parse_dcep(data: bytes) -> DataChannelOpen | DataChannelAck:
    """Either DCEP message, by its first byte; raises DcepError."""
    if not data:
        raise DcepError("empty DCEP message")
    if data[0] == DATA_CHANNEL_OPEN:
        return DataChannelOpen.parse(data)
    if data[0] == DATA_CHANNEL_ACK:
        return DataChannelAck.parse(data)
    raise DcepError(f"unknown DCEP message type {data[0]}")
