"""Counters and a latency histogram the media plane keeps for metrics.

Plain integers in fixed structures: reading them costs nothing per packet, and the
metrics exporter takes a snapshot when it is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# Receive-to-send time inside the SFU, in seconds.
LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

# Worker counter names that mean "a packet was dropped", by reason label.
DROP_REASONS = {
    "oversized": "oversized",
    "malformed_stun": "malformed_stun",
    "stun_rejected": "stun_unauthenticated",
    "stun_ignored": "stun_ignored",
    "unknown_sender": "unknown_sender",
    "unknown_class": "unknown_class",
    "rtp_before_keys": "before_keys",
    "srtp_unprotect_failed": "srtp_auth",
    "srtcp_unprotect_failed": "srtcp_auth",
    "srtp_replay": "srtp_replay",
    "srtcp_replay": "srtcp_replay",
    "malformed_rtp": "malformed_rtp",
    "malformed_rtcp": "malformed_rtcp",
    "rtp_unknown_ssrc": "unknown_ssrc",
    "rate_limited": "rate_limited",
    "bitrate_limited": "bitrate_limited",
    "overload_shed": "overload",
    "socket_receive_overflow": "socket_overflow",
    "handler_errors": "handler_error",
    "send_failed": "send_failed",
}
SRTP_ERRORS = {
    "srtp_unprotect_failed": "rtp_unprotect",
    "srtcp_unprotect_failed": "rtcp_unprotect",
    "srtp_replay": "rtp_replay",
    "srtcp_replay": "rtcp_replay",
    "srtp_protect_failed": "protect",
    "srtp_roc_resync": "roc_resync",
}


class LatencyHistogram:
    """Cumulative-bucket histogram (Prometheus semantics) without per-observation objects."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]  # one per bound, then +Inf
    sum: float
    count: int


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything the media plane reports, read at one instant."""

    rooms: int
    participants: int
    sessions: int
    transports: int
    forwarded_packets: dict[str, int] = field(default_factory=dict)  # by kind
    forwarded_bytes: dict[str, int] = field(default_factory=dict)  # by kind
    dropped_packets: dict[str, int] = field(default_factory=dict)  # by reason
    srtp_errors: dict[str, int] = field(default_factory=dict)  # by reason
    dtls_handshakes: dict[str, int] = field(default_factory=dict)  # by result
    ice_consent_failures: int = 0
    datagrams_in: int = 0
    datagrams_out: int = 0
    forward_latency: HistogramSnapshot | None = None
    # How long the oldest waiting datagram sat in the socket before a read (per batch).
    receive_queue: HistogramSnapshot | None = None
    # Data channels (docs/DATA_CHANNELS.md): by channel, refusal code, transfer result.
    data_messages: dict[str, int] = field(default_factory=dict)
    data_sent_bytes: dict[str, int] = field(default_factory=dict)
    data_refused: dict[str, int] = field(default_factory=dict)
    file_transfers: dict[str, int] = field(default_factory=dict)


def snapshot_histogram(histogram: LatencyHistogram) -> HistogramSnapshot:
    running, cumulative = 0, []
    for count in histogram.counts:
        running += count
        cumulative.append(running)
    return HistogramSnapshot(histogram.bounds, tuple(cumulative), histogram.sum, histogram.count)
