from collections import Counter

from sfu.proto.srtp import SrtpPair
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

class NativeFanOut:
    kind: str
    legs: list[NativeLeg]
    def add(self, leg: NativeLeg) -> None: ...
    def remove(self, leg: NativeLeg) -> None: ...
    def forward(self, packet: bytes, header: RtpHeader, keyframe: bool, now: float) -> bool: ...

class NativeDatapath:
    name: str
    forwarded_packets: Counter[str]
    forwarded_bytes: Counter[str]
    errors: Counter[str]
    datagrams_sent: int
    def set_socket(self, fileno: int) -> None: ...
    def new_leg(
        self, ssrc: int, payload_type: int, video: bool, clock_rate: int, initial: tuple[int, int]
    ) -> NativeLeg: ...
    def new_fanout(self, kind: str) -> NativeFanOut: ...
