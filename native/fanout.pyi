from collections import Counter
from collections.abc import Callable
from typing import Any

from sfu.proto.srtp import SrtpPair
from sfu.routing.stats import LatencyHistogram
from sfu.wire.rtcp import ReportBlock
from sfu.wire.rtp import RtpHeader

class NativeLeg:
    ssrc: int
    payload_type: int
    video: bool
    clock_rate: int
    synced: bool
    paused: bool
    seq_offset: int
    ts_offset: int
    last_seq: int
    last_ts: int
    last_sent_at: float
    first_seq: int
    initial_seq: int
    initial_ts: int
    packets_sent: int
    octets_sent: int
    ready: bool
    srtp: SrtpPair | None
    addr: tuple[str, int] | None
    def __init__(
        self, ssrc: int, payload_type: int, video: bool, clock_rate: int, initial: tuple[int, int]
    ) -> None: ...
    def set_route(self, srtp: SrtpPair | None, addr: tuple[str, int] | None) -> None: ...

class NativeRxStats:
    ssrc: int
    clock_rate: int
    packets_received: int
    extended_highest_sequence: int
    packets_expected: int
    packets_lost: int
    jitter: float
    def __init__(self, ssrc: int = 0, clock_rate: int = 90000) -> None: ...
    def on_packet(self, sequence_number: int, rtp_timestamp: int, arrival_s: float) -> None: ...
    def on_sender_report(self, ntp_timestamp: int, arrival_s: float) -> None: ...
    def report_block(self, now_s: float) -> ReportBlock: ...

class NativeCache:
    def put(self, seq: int, packet: bytes) -> None: ...
    def get(self, seq: int) -> bytes | None: ...
    def clear(self) -> None: ...

def is_keyframe(codec: str, payload: bytes) -> bool: ...

class NativeTrack:
    kind: str
    stats: NativeRxStats
    cache: NativeCache | None
    owner: Any
    muted: bool
    packets: int
    dropped_rate: int
    legs: list[NativeLeg]
    def add(self, leg: NativeLeg) -> None: ...
    def remove(self, leg: NativeLeg) -> None: ...
    def reset_stats(self, ssrc: int) -> None: ...
    def check_rate(self, now: float, size: int) -> str: ...
    def forward(self, packet: bytes, header: RtpHeader, keyframe: bool, now: float) -> bool: ...
    def ingest(self, packet: bytes, header: RtpHeader, now: float) -> int: ...

class NativeIngress:
    slow: bool
    last_heard: float
    routed: bool
    addr: tuple[str, int] | None
    def set_route(self, srtp: SrtpPair | None, addr: tuple[str, int] | None) -> None: ...
    def set_tracks(self, by_ssrc: dict[int, Any]) -> None: ...

class NativeDatapath:
    name: str
    forwarded_packets: Counter[str]
    forwarded_bytes: Counter[str]
    errors: Counter[str]
    counters: Counter[str]
    datagrams_sent: int
    on_keyframe_wanted: Callable[[Any, float], None] | None
    on_shed: Callable[[Any], None] | None
    latency_sink: LatencyHistogram | None
    def set_socket(self, fileno: int) -> None: ...
    def set_shedding(self, shedding: bool) -> None: ...
    def attach(
        self,
        on_keyframe_wanted: Callable[[Any, float], None],
        on_shed: Callable[[Any], None],
        latency: LatencyHistogram,
    ) -> None: ...
    def new_leg(
        self, ssrc: int, payload_type: int, video: bool, clock_rate: int, initial: tuple[int, int]
    ) -> NativeLeg: ...
    def new_track(
        self,
        kind: str,
        codec: str = "",
        clock_rate: int = 90000,
        rate_pps: float = ...,
        rate_bps: float = ...,
    ) -> NativeTrack: ...
    def new_ingress(self) -> NativeIngress: ...
    def receive(
        self, fd: int
    ) -> tuple[int, list[tuple[bytes, tuple[str, int]]], int, int] | None: ...
    def process(self, data: bytes, addr: tuple[str, int], now: float) -> bool: ...
