"""Receive-side statistics: latency percentiles and per-stream loss from RTP numbering.

Pure and process-local: each client process fills these, ships them to the parent as
plain data (dicts and byte arrays), and the parent merges them.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SEQ_MOD = 0x10000
_SEQ_HALF = 0x8000
# Remember this many recent sequence numbers to tell duplicates from late packets.
_HISTORY = 4096


def percentile(sorted_values: Sequence[int], pct: float) -> int:
    """Nearest-rank percentile (the smallest value with pct % of values at or below it)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {pct}")
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(samples_ns: Iterable[int]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in microseconds (one decimal) and the sample count."""
    ordered = sorted(samples_ns)
    if not ordered:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    return {
        "p50": round(percentile(ordered, 50) / 1000, 1),
        "p95": round(percentile(ordered, 95) / 1000, 1),
        "p99": round(percentile(ordered, 99) / 1000, 1),
        "max": round(ordered[-1] / 1000, 1),
        "count": len(ordered),
    }


class LatencySamples:
    """One-way latencies in nanoseconds, kept in a compact array with a hard cap."""

    def __init__(self, cap: int = 5_000_000) -> None:
        self.values = array("q")
        self.cap = cap
        self.overflow = 0

    def add(self, value_ns: int) -> None:
        if len(self.values) < self.cap:
            self.values.append(value_ns)
        else:
            self.overflow += 1

    def to_bytes(self) -> bytes:
        return self.values.tobytes()

    @staticmethod
    def from_bytes(data: bytes) -> array[int]:
        values = array("q")
        values.frombytes(data)
        return values


@dataclass(slots=True)
class StreamCounts:
    """What one received stream looked like over the measured window."""

    received: int = 0  # unique packets
    expected: int = 0  # from the lowest to the highest extended sequence number seen
    out_of_order: int = 0  # arrived after a higher sequence number
    duplicates: int = 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


class StreamStats:
    """Loss, reordering and duplicates of one RTP stream from its sequence numbers.

    Sequence numbers are extended past 16 bits (RFC 3550 A.1 style): a packet within
    half the space ahead of the highest seen moves forward, anything else is late.
    """

    def __init__(self) -> None:
        self._base = -1  # lowest extended sequence number seen
        self._highest = -1
        self._seen = array("q", [-1]) * _HISTORY
        self.counts = StreamCounts()

    def extend(self, seq: int) -> int:
        """The extended sequence number of a 16-bit one, relative to the highest seen."""
        if self._highest < 0:
            return seq + _SEQ_MOD  # room below for late packets from before the first
        delta = (seq - self._highest) % _SEQ_MOD
        if delta < _SEQ_HALF:
            return self._highest + delta
        return self._highest - (_SEQ_MOD - delta)

    def on_packet(self, seq: int) -> None:
        ext = self.extend(seq)
        slot = ext % _HISTORY
        if self._seen[slot] == ext:
            self.counts.duplicates += 1
            return
        self._seen[slot] = ext
        self.counts.received += 1
        if self._highest < 0:
            self._base = self._highest = ext
        elif ext > self._highest:
            self._highest = ext
        else:
            self.counts.out_of_order += 1
            self._base = min(self._base, ext)
        self.counts.expected = self._highest - self._base + 1
