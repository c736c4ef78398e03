"""First-byte demultiplexing of one UDP port (RFC 7983, section 7)."""

from __future__ import annotations

from enum import IntEnum


class PacketClass(IntEnum):
    """What a datagram on the media port carries."""

    UNKNOWN = 0
    STUN = 1
    DTLS = 2
    RTP = 3
    RTCP = 4


def classify(data: bytes) -> PacketClass:
    """Classify by the first byte; RTP and RTCP are told apart by the second (RFC 5761)."""
    if not data:
        return PacketClass.UNKNOWN
    first = data[0]
    if first <= 3:
        return PacketClass.STUN
    if 20 <= first <= 63:
        return PacketClass.DTLS
    if 128 <= first <= 191:
        if len(data) < 2:
            return PacketClass.UNKNOWN
        return PacketClass.RTCP if 192 <= data[1] <= 223 else PacketClass.RTP
    return PacketClass.UNKNOWN
