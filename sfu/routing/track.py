"""An incoming track's receive state, shared by both datapaths' definitions.

What ingesting one packet did is one of the INGEST_* codes; the native datapath
(native/datapath.h) returns the same ones.
"""

from __future__ import annotations

CACHE_SIZE = 1024  # packets kept for NACK answers (a few seconds of video)

INGEST_FORWARDED = 0
INGEST_WANTS_KEYFRAME = 1  # forwarded, and a subscriber waits for a keyframe
INGEST_NO_LEGS = 2  # accepted, nobody to send it to
INGEST_MUTED = 3
INGEST_RATE_LIMITED = 4
INGEST_BITRATE_LIMITED = 5
DROP_COUNTERS = {INGEST_RATE_LIMITED: "rate_limited", INGEST_BITRATE_LIMITED: "bitrate_limited"}


class PacketCache:
    """Recent plaintext packets by sequence number, in a fixed ring."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._seqs: list[int] = [-1] * size
        self._packets: list[bytes] = [b""] * size

    def put(self, seq: int, packet: bytes) -> None:
        if not 0 <= seq <= 0xFFFF:
            raise ValueError(f"an RTP sequence number is 16 bits, got {seq}")
        slot = seq % self._size
        self._seqs[slot] = seq
        self._packets[slot] = packet

    def get(self, seq: int) -> bytes | None:
        if not 0 <= seq <= 0xFFFF:
            return None  # never stored (and -1 marks an empty slot)
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
